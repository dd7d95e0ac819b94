"""One event loop, on a thread of its own, for every gateway call of the process.

HTTP gateways (Stripe's library, Braintree's client) keep pooled connections, and an
asyncio connection belongs to the loop that opened it. Billing calls gateways from sync
code (the worker's billing tick) and from the API's loop; running every call here keeps
each gateway on one loop for its whole life, so its pool is reused, never orphaned.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _gateway_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="tidings-gateways", daemon=True)
            thread.start()
            _loop = loop
        return _loop


def call(coro: Coroutine[Any, Any, T]) -> T:
    """Run a gateway call from sync code and wait for its answer (or its exception)."""
    return asyncio.run_coroutine_threadsafe(coro, _gateway_loop()).result()


async def call_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await a gateway call from another loop (the API's) without tying the gateway to it."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _gateway_loop()))
