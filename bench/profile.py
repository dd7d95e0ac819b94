"""``python -m bench.profile intake|worker``: where the CPU of a hot path goes.

Runs the path in this process on a throw-away SQLite file, under cProfile, and prints the
functions with the most time of their own, then the same time by package. ``intake``
stores batches of 1,000 refund events through ``Intake.submit`` (as the API does, HTTP
aside); ``worker`` queues refunds that way, then lets one worker deliver their mail to
the bench's outside SMTP sink (a separate process) and times it from start to last mail.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.rows import BATCH, refund_event


@contextmanager
def runtime_in(tmp: Path, **settings: object) -> Iterator[object]:
    from tidings.config import Settings
    from tidings.db.engine import create_disposable_engine
    from tidings.db.migrate import upgrade
    from tidings.runtime import build_runtime

    config = Settings(database_url=f"sqlite:///{tmp / 'tidings.db'}", var_dir=tmp, **settings)
    engine = create_disposable_engine(config.database_url)
    upgrade(engine)
    engine.dispose()
    runtime = build_runtime(config)
    try:
        yield runtime
    finally:
        runtime.close()


def post_batches(runtime: object, run: str, batches: int) -> None:
    intake = runtime.intake  # type: ignore[attr-defined]
    for b in range(batches):
        events = [refund_event(run, b * 1000 + n) for n in range(1000)]
        intake.submit(BATCH, {}, json.dumps(events).encode(), actor="profile")


def by_package(stats: pstats.Stats) -> list[tuple[float, str]]:
    totals: dict[str, float] = {}
    for (file, _, name), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in file:
            key = file.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/tidings/" in file:
            key = "tidings." + file.split("/tidings/", 1)[1].split("/", 1)[0].removesuffix(".py")
        elif file == "~":
            key = f"builtin {name.split(' of ')[0].strip('<>')}"
        else:
            key = "stdlib " + Path(file).stem
        totals[key] = totals.get(key, 0.0) + own
    whole = sum(totals.values()) or 1.0
    return sorted(((100 * t / whole, k) for k, t in totals.items()), reverse=True)


def report(profile: cProfile.Profile, top: int) -> None:
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(top)
    print("own time by package:")
    for share, package in by_package(stats)[:top]:
        print(f"  {share:5.1f}%  {package}")


def intake(batches: int, top: int) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="tidings-profile-") as tmp,
        runtime_in(Path(tmp)) as runtime,
    ):
        post_batches(runtime, "warm", 1)
        profile = cProfile.Profile()
        started = time.perf_counter()
        profile.enable()
        post_batches(runtime, "measured", batches)
        profile.disable()
        seconds = time.perf_counter() - started
    print(f"intake: {batches} x 1,000 refund events in {seconds:.2f} s under cProfile\n")
    report(profile, top)


def worker(mails: int, top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-profile-") as tmp:
        received = Path(tmp) / "sink.txt"
        sink = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bench.sink", str(received)], stdout=subprocess.PIPE
        )
        try:
            line = sink.stdout.readline().decode() if sink.stdout else ""
            port = int(line.split()[1])
            with runtime_in(Path(tmp), smtp_url=f"smtp://127.0.0.1:{port}") as runtime:
                post_batches(runtime, "queued", max(1, mails // 1000))
                profile = cProfile.Profile()
                seconds = asyncio.run(_drain(runtime, received, mails, profile))
        finally:
            sink.terminate()
            sink.wait()
    print(f"worker: {mails} mails (and their in-app messages) in {seconds:.2f} s, cProfile on")
    print("(the event loop's thread only; the database calls run in worker threads)\n")
    report(profile, top)


async def _drain(runtime: object, received: Path, mails: int, profile: cProfile.Profile) -> float:
    worker = runtime.new_worker()  # type: ignore[attr-defined]
    profile.enable()
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while not received.exists() or sum(1 for _ in received.open()) < mails:
        await asyncio.sleep(0.1)
    seconds = time.perf_counter() - started
    profile.disable()
    worker.stop()
    await task
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("path", choices=("intake", "worker"))
    parser.add_argument("--batches", type=int, default=5, help="intake: batches of 1,000")
    parser.add_argument("--mails", type=int, default=2000, help="worker: mails to deliver")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    os.environ.pop("TIDINGS_DATABASE_URL", None)
    if args.path == "intake":
        intake(args.batches, args.top)
    else:
        worker(args.mails, args.top)


if __name__ == "__main__":
    main()
