"""The emulator as a child process of `fanout simulate` (`--emulator-process`), on the simulated
clock the runner publishes (`fanout.simtime.SharedClock`: the simulated-time seam).

With the emulator in its own process the runner's memory and CPU are measured alone (issue 18:
the runner's peak RSS), and the emulator's work runs on the other core. The parent starts
`python -m fanout.simpeer CLOCK_FILE FD` with one end of a socket pair as FD, sends the
emulator's configuration down it, reads the emulator's URL back, and at the end asks for what
the emulator recorded (`record`): the accepted invocations, the refusals per
region and each region's last execution finish, the facts `fanout.rehearsal` checks. Nothing
else crosses the pipe; every call goes over HTTP on 127.0.0.1 as in a real run.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from fanout.emulator.config import EmulatorConfig
from fanout.emulator.server import Emulator
from fanout.emulator.state import World
from fanout.rehearsal import Accepted
from fanout.simtime import SharedClock

__all__ = ["EmulatorRecord", "main", "record", "serve"]


@dataclass(frozen=True, slots=True)
class EmulatorRecord:
    """What the emulator did, as the invariants are checked from its side."""

    accepted: tuple[Accepted, ...]
    refused: dict[str, dict[str, dict[str, int]]]  # region -> action -> error code -> count
    finished: dict[str, float]  # region -> its last execution's finish (epoch seconds)


def record(world: World, now_s: float) -> EmulatorRecord:
    """The emulator's record at `now_s`."""
    accepted = tuple(
        Accepted(inv.region, inv.created_s, inv.spec.client_token, tuple(inv.spec.instance_ids))
        for inv in world.invocations.all
    )
    refused = {
        name: {action: dict(codes) for action, codes in state.refused.items()}
        for name, state in world.regions.items()
    }
    finished: dict[str, float] = {}
    for inv in world.invocations.all:
        for execution in inv.executions(now_s):
            if execution.finish_s is not None:
                finished[inv.region] = max(finished.get(inv.region, 0.0), execution.finish_s)
    return EmulatorRecord(accepted, refused, finished)


def main(argv: list[str]) -> None:
    """`python -m fanout.simpeer CLOCK_FILE FD`: read the configuration from FD, then `serve`."""
    clock_file, fd = argv
    pipe = Connection(int(fd))
    config: EmulatorConfig = pipe.recv()
    serve(config, Path(clock_file), pipe)


def serve(config: EmulatorConfig, clock_file: Path, pipe: Connection) -> None:
    """Serve on the shared clock; send the URL, then answer `("record", now_s)` with an
    `EmulatorRecord`; stop at `("stop",)` or when the parent goes away."""
    asyncio.run(_serve(config, clock_file, pipe))


async def _serve(config: EmulatorConfig, clock_file: Path, pipe: Connection) -> None:
    emulator = Emulator(config, wall=SharedClock(clock_file).time)
    await emulator.start()
    try:
        pipe.send(emulator.url)
        while True:
            try:
                message: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
            except EOFError:  # the parent is gone
                return
            if message[0] != "record":
                return
            pipe.send(record(emulator.world, float(message[1])))
    finally:
        await emulator.close()


if __name__ == "__main__":
    # Through the module's own name, so what is pickled back names `fanout.simpeer`.
    from fanout.simpeer import main as _main

    _main(sys.argv[1:])
