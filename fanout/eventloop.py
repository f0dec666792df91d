"""The one way a synchronous caller (the CLI, `fanout.api`) enters the event loop.

`anyio.run(func)` would do, but for one trap of asyncio on Python 3.11: leaving
`asyncio.Runner.run`, it calls `signal.getsignal(SIGINT)`, which turns the handler into an
enum member if it can and so formats `repr(handler)` in a ValueError it throws away — and the
handler is a partial over the main task, whose repr holds `repr(result)`, computed in full
before reprlib cuts it. A command whose main coroutine returned a planned run of 100 000 targets
spent over a second of CPU in that repr (twice) after its work was done; at 1 000 000 targets,
ten. Here the main task's result is always None: the value goes back through a box.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")


def run(func: Callable[[], Awaitable[T]]) -> T:
    """Run `func()` to completion on asyncio and return its result (see the module's note)."""
    box: list[T] = []

    async def main() -> None:
        box.append(await func())

    anyio.run(main, backend="asyncio")
    return box[0]
