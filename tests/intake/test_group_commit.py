"""Group commit: requests that arrive while a group is being stored share the next one."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.events import JORDAN, refund_authorized
from tidings.db.schema import delivery_jobs, events, rejects
from tidings.intake.cloudevents_http import STRUCTURED
from tidings.intake.group_commit import GroupCommit
from tidings.runtime import Runtime


class Store:
    """Stores requests (ints); the first call blocks until released, so others queue up."""

    def __init__(self, *, fail_on: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def __call__(self, requests: Sequence[int]) -> list[str]:
        self.entered.set()
        self.release.wait(5)
        self.groups.append(list(requests))
        if self.fail_on in requests:
            raise ValueError(f"request {self.fail_on} is bad")
        return [f"stored {n}" for n in requests]


def run_together(
    group: GroupCommit[int, str], store: Store, requests: list[int]
) -> dict[int, str | BaseException]:
    """The first request starts a group; the rest arrive while it is stored."""
    results: dict[int, str | BaseException] = {}

    def submit(n: int) -> None:
        try:
            results[n] = group.submit(n)
        except ValueError as error:
            results[n] = error

    first = threading.Thread(target=submit, args=(requests[0],))
    first.start()
    assert store.entered.wait(5)
    others = [threading.Thread(target=submit, args=(n,)) for n in requests[1:]]
    for queued, thread in enumerate(others, start=1):
        thread.start()
        while len(group._queue) < queued:  # each queues before the next one comes
            threading.Event().wait(0.001)
    store.release.set()
    for thread in [first, *others]:
        thread.join(5)
    return results


def test_requests_arriving_during_a_commit_are_stored_together_and_answered_alone() -> None:
    store = Store()
    group: GroupCommit[int, str] = GroupCommit(store, max_items=100)
    results = run_together(group, store, list(range(6)))
    assert results == {n: f"stored {n}" for n in range(6)}
    assert store.groups[0] == [0]
    assert sorted(store.groups[1]) == [1, 2, 3, 4, 5]  # one transaction for the five
    assert len(store.groups) == 2


def test_a_group_never_holds_more_items_than_its_limit() -> None:
    store = Store()
    group: GroupCommit[int, str] = GroupCommit(store, max_items=2)
    results = run_together(group, store, list(range(7)))
    assert results == {n: f"stored {n}" for n in range(7)}
    assert [len(g) for g in store.groups] == [1, 2, 2, 2]


def test_an_urgent_request_goes_ahead_of_those_waiting() -> None:
    store = Store()
    group: GroupCommit[int, str] = GroupCommit(store, max_items=1, urgent=lambda n: n >= 90)
    results = run_together(group, store, [0, 1, 2, 3, 90, 4, 91])
    assert results == {n: f"stored {n}" for n in (0, 1, 2, 3, 4, 90, 91)}
    order = [n for g in store.groups for n in g]
    # 1 was next in line (its thread stores the next group); the urgent ones come right
    # after it, in the order they came, then the rest.
    assert order[:2] == [0, 1]
    assert order[2:4] == [90, 91]
    assert order[4:] == [2, 3, 4]


def test_a_failing_group_is_tried_request_by_request() -> None:
    store = Store(fail_on=3)
    group: GroupCommit[int, str] = GroupCommit(store, max_items=100)
    results = run_together(group, store, list(range(5)))
    failed = results.pop(3)
    assert isinstance(failed, ValueError)
    assert "request 3" in str(failed)
    assert results == {n: f"stored {n}" for n in (0, 1, 2, 4)}
    assert [3] in store.groups  # tried alone before its error was given to it


def test_a_lone_request_is_stored_at_once_and_errors_reach_its_caller() -> None:
    store = Store(fail_on=9)
    store.release.set()
    group: GroupCommit[int, str] = GroupCommit(store, max_items=100)
    assert group.submit(1) == "stored 1"
    with pytest.raises(ValueError, match="request 9"):
        group.submit(9)
    assert group.submit(2) == "stored 2"  # the failure left nothing stuck
    assert store.groups == [[1], [9], [2]]


def test_concurrent_requests_through_intake_each_get_their_own_answer(runtime: Runtime) -> None:
    """Real intake, real database: good, duplicate and invalid events sent at the same time
    come back as if each had been sent alone, and every good one is stored with its jobs."""
    bodies = [refund_authorized(f"G{n}", customer=JORDAN) for n in range(24)]
    bodies.append(refund_authorized("G0", customer=JORDAN))  # a copy of the first
    broken = refund_authorized("G-bad", customer=JORDAN)
    broken["data"]["amount"] = -5
    bodies.append(broken)
    answers: dict[str, Any] = {}
    start = threading.Barrier(len(bodies))

    def send(number: int, body: dict[str, Any]) -> None:
        start.wait(5)
        outcome = runtime.intake.submit(STRUCTURED, {}, json.dumps(body).encode(), actor="t")
        answers[f"{number}"] = outcome.items[0]

    threads = [threading.Thread(target=send, args=pair) for pair in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(answers) == len(bodies)
    accepted = [answers[str(n)].accepted for n in range(24)]
    copy, bad = answers["24"], answers["25"]
    assert bad.accepted is None
    assert bad.reject_id is not None
    assert copy.accepted is not None
    first = accepted[0]
    assert first is not None
    # One of the two copies of G0 is the stored one, the other its duplicate.
    assert {first.duplicate, copy.accepted.duplicate} == {False, True}
    assert first.event_id == copy.accepted.event_id
    assert all(a is not None and a.event_id for a in accepted)
    with runtime.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
        jobs = conn.execute(select(func.count()).select_from(delivery_jobs)).scalar_one()
        rejected = conn.execute(select(func.count()).select_from(rejects)).scalar_one()
    assert (stored, rejected) == (24, 1)
    assert jobs == 24 * 2  # an email and an in-app message per refund
