"""fanout.eventloop.run: the CLI's and the API's way into the event loop."""

from __future__ import annotations

import anyio
import anyio.lowlevel

from fanout import eventloop


class _Costly:
    """A result whose repr is counted (a planned run of 100 000 targets took a second)."""

    reprs = 0

    def __repr__(self) -> str:
        type(self).reprs += 1
        return "<costly>"


async def _plan() -> _Costly:
    await anyio.lowlevel.checkpoint()
    return _Costly()


def test_the_result_comes_back_and_is_never_formatted() -> None:
    """asyncio's Runner formats repr(main task) on its way out (signal.getsignal on a partial
    over the task); through eventloop.run the task's result is None, so the value is not."""
    _Costly.reprs = 0
    result = eventloop.run(_plan)
    assert isinstance(result, _Costly)
    assert _Costly.reprs == 0


def test_plain_anyio_run_would_format_it() -> None:
    """The trap this module avoids, shown on plain anyio.run (if a Python release stops
    formatting it, this test says so and the module's note can go)."""
    _Costly.reprs = 0
    anyio.run(_plan, backend="asyncio")
    assert _Costly.reprs >= 1
