"""Priority lanes: a refund confirmation is never stuck behind a wave of bulk alerts."""

from __future__ import annotations

import json
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.support.events import JORDAN, refund_authorized
from tidings.db.schema import delivery_jobs
from tidings.db.types import utcnow
from tidings.delivery import queue
from tidings.engine.rules import Lane
from tidings.runtime import Runtime


def post_refunds(client: TestClient, count: int) -> None:
    """Refund confirmations for ``count`` orders: each queues an email and an in-app job."""
    for n in range(count):
        event = refund_authorized(str(n), id=f"refund-{n}", customer=JORDAN)
        event["data"]["refund_id"] = f"re_{n}"
        answer = client.post(
            "/api/events",
            content=json.dumps(event),
            headers={"Content-Type": "application/cloudevents+json"},
        )
        assert answer.status_code == 202


def test_critical_jobs_are_claimed_before_older_bulk_ones(
    client: TestClient, runtime: Runtime
) -> None:
    post_refunds(client, 12)
    now = utcnow()
    with runtime.engine.begin() as conn:
        ids = list(conn.scalars(select(delivery_jobs.c.id).order_by(delivery_jobs.c.id)))
        bulk, urgent = ids[:-4], ids[-4:]
        # The bulk wave was queued long before; the urgent jobs are the newest.
        conn.execute(
            update(delivery_jobs)
            .where(delivery_jobs.c.id.in_(bulk))
            .values(lane=int(Lane.bulk), run_at=now - timedelta(hours=1))
        )
        conn.execute(
            update(delivery_jobs)
            .where(delivery_jobs.c.id.in_(urgent))
            .values(lane=int(Lane.critical), run_at=now)
        )
    with runtime.engine.begin() as conn:
        claimed = queue.claim(
            conn, worker_id="w", limit=len(urgent), now=now, lease=timedelta(seconds=30)
        )
    assert sorted(job.job_id for job in claimed) == sorted(urgent)


def test_a_claim_takes_at_most_its_limit_and_the_next_takes_the_rest(
    client: TestClient, runtime: Runtime
) -> None:
    post_refunds(client, 5)
    now = utcnow()
    with runtime.engine.connect() as conn:
        queued = set(conn.scalars(select(delivery_jobs.c.id)))
    taken: list[str] = []
    for _ in range(len(queued)):
        with runtime.engine.begin() as conn:
            claimed = queue.claim(conn, worker_id="w", limit=1, now=now, lease=timedelta(minutes=5))
        assert len(claimed) == 1
        taken.extend(job.job_id for job in claimed)
    assert sorted(taken) == sorted(queued)
    with runtime.engine.begin() as conn:
        assert queue.claim(conn, worker_id="w", limit=1, now=now, lease=timedelta(minutes=5)) == []


def test_a_claimed_batch_comes_in_the_order_its_jobs_fell_due(
    client: TestClient, runtime: Runtime
) -> None:
    post_refunds(client, 6)
    now = utcnow()
    with runtime.engine.begin() as conn:
        ids = list(conn.scalars(select(delivery_jobs.c.id).order_by(delivery_jobs.c.id)))
        # Due in the reverse of their creation: the last one has waited longest.
        for n, job_id in enumerate(ids):
            conn.execute(
                update(delivery_jobs)
                .where(delivery_jobs.c.id == job_id)
                .values(run_at=now - timedelta(minutes=n + 1))
            )
    with runtime.engine.begin() as conn:
        claimed = queue.claim(
            conn, worker_id="w", limit=len(ids), now=now, lease=timedelta(minutes=5)
        )
    assert [job.job_id for job in claimed] == list(reversed(ids))


def set_lanes(runtime: Runtime, lanes: list[Lane]) -> dict[Lane, set[str]]:
    """Give the queued jobs these lanes, in job order; every bulk job is older than the rest."""
    now = utcnow()
    by_lane: dict[Lane, set[str]] = {lane: set() for lane in Lane}
    with runtime.engine.begin() as conn:
        ids = list(conn.scalars(select(delivery_jobs.c.id).order_by(delivery_jobs.c.id)))
        assert len(ids) == len(lanes)
        for job_id, lane in zip(ids, lanes, strict=True):
            age = timedelta(hours=2 if lane is Lane.bulk else 1)
            conn.execute(
                update(delivery_jobs)
                .where(delivery_jobs.c.id == job_id)
                .values(lane=int(lane), run_at=now - age)
            )
            by_lane[lane].add(job_id)
    return by_lane


def claim_lanes(runtime: Runtime, limit: int, by_lane: dict[Lane, set[str]]) -> dict[Lane, int]:
    with runtime.engine.begin() as conn:
        claimed = queue.claim(
            conn, worker_id="w", limit=limit, now=utcnow(), lease=timedelta(minutes=5)
        )
    assert len(claimed) == min(limit, sum(len(ids) for ids in by_lane.values()))
    return {lane: sum(1 for job in claimed if job.job_id in ids) for lane, ids in by_lane.items()}


def test_bulk_keeps_a_fifth_of_the_room_beside_transactional_work(
    client: TestClient, runtime: Runtime
) -> None:
    post_refunds(client, 15)  # 30 jobs
    by_lane = set_lanes(runtime, [Lane.transactional] * 15 + [Lane.bulk] * 15)
    # The bulk jobs have waited longer, yet transactional ones take four fifths.
    assert claim_lanes(runtime, 10, by_lane) == {
        Lane.critical: 0,
        Lane.transactional: 8,
        Lane.bulk: 2,
    }


def test_a_lane_takes_the_room_the_other_leaves(client: TestClient, runtime: Runtime) -> None:
    post_refunds(client, 6)  # 12 jobs
    by_lane = set_lanes(runtime, [Lane.transactional] * 2 + [Lane.bulk] * 10)
    assert claim_lanes(runtime, 10, by_lane) == {
        Lane.critical: 0,
        Lane.transactional: 2,
        Lane.bulk: 8,
    }
    by_lane = set_lanes(runtime, [Lane.transactional] * 11 + [Lane.bulk] * 1)
    with runtime.engine.begin() as conn:  # the first claim's leases are given back
        conn.execute(update(delivery_jobs).values(status="queued"))
    assert claim_lanes(runtime, 10, by_lane) == {
        Lane.critical: 0,
        Lane.transactional: 9,
        Lane.bulk: 1,
    }


def test_critical_jobs_take_the_whole_claim_before_any_share(
    client: TestClient, runtime: Runtime
) -> None:
    post_refunds(client, 10)  # 20 jobs
    lanes = [Lane.critical] * 10 + [Lane.transactional] * 5 + [Lane.bulk] * 5
    by_lane = set_lanes(runtime, lanes)
    assert claim_lanes(runtime, 10, by_lane) == {
        Lane.critical: 10,
        Lane.transactional: 0,
        Lane.bulk: 0,
    }
    assert claim_lanes(runtime, 10, by_lane) == {
        Lane.critical: 0,
        Lane.transactional: 5,
        Lane.bulk: 5,
    }
