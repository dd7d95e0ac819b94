"""The SQLite writer lock of one process hands itself to waiters in arrival order."""

from __future__ import annotations

import threading
import time

from tidings.db.engine import FifoLock


def wait_for_waiters(lock: FifoLock, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(lock._waiters) < count:
        assert time.monotonic() < deadline, "waiters did not queue"
        time.sleep(0.001)


def test_waiters_get_the_lock_in_the_order_they_asked() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    order: list[int] = []
    threads = []
    for n in range(8):
        thread = threading.Thread(target=lambda n=n: (lock.acquire(10), order.append(n)))
        thread.start()
        threads.append(thread)
        wait_for_waiters(lock, n + 1)  # each queues behind the ones before it
    for _ in range(8):
        lock.release()
        time.sleep(0.01)
    for thread in threads:
        thread.join(5)
    assert order == list(range(8))
    lock.release()
    assert lock.acquire(timeout=0.1)  # free again once the last one let go


def test_a_wait_that_runs_out_leaves_the_queue_and_the_lock_to_the_others() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    assert not lock.acquire(timeout=0.05)
    assert len(lock._waiters) == 0
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(lock.acquire(5)))
    thread.start()
    wait_for_waiters(lock, 1)
    lock.release()
    thread.join(5)
    assert got == [True]
    assert not lock.acquire(timeout=0.01)  # the thread holds it now


def test_a_thread_that_lets_go_cannot_take_the_lock_back_ahead_of_a_waiter() -> None:
    lock = FifoLock()
    assert lock.acquire(timeout=1)
    held = threading.Event()

    def waiter() -> None:
        lock.acquire(5)
        held.set()
        time.sleep(0.2)
        lock.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for_waiters(lock, 1)
    lock.release()
    # The releasing thread asks again at once; the waiter was first, so it gets the lock.
    assert not lock.acquire(timeout=0.05)
    assert held.wait(1)
    thread.join(5)
    assert lock.acquire(timeout=1)
