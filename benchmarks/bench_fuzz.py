"""The fuzz suite at scale (issue 16): 10 000+ inputs through the real `fanout` entry point.

Runs `tests/fuzz` in this process with `FANOUT_FUZZ_EXAMPLES` cases per input kind (random,
not derandomized), then prints, per kind, the cases and their exit codes and the slowest case.
Every case held the contract or the run fails: no traceback, an exit code in the documented set,
no InvokeCommand (answered or refused for its signature) and no run or file left behind for a
refused input (exit 2), and no case over 30 s.

    .venv/bin/python -m benchmarks.bench_fuzz [--per-kind 850]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import pytest


def main() -> int:
    """Run the suite, print the counts as a Markdown table; the exit code is pytest's."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=850, help="cases per input kind")
    options = parser.parse_args()
    os.environ["FANOUT_FUZZ_EXAMPLES"] = str(options.per_kind)
    os.environ["FANOUT_FUZZ_RANDOM"] = "1"
    started = time.monotonic()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--timeout", "0", "tests/fuzz"])
    elapsed = time.monotonic() - started
    from tests.fuzz.cases import KINDS, SLOWEST, TALLY  # noqa: PLC0415 - after pytest loaded it

    codes = sorted({c for _k, c in TALLY}, key=int)
    print(
        f"\n{platform.node()}: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{platform.system()} {platform.release()}; {elapsed / 60:.1f} min"
    )
    print(f"| input kind | cases | {' | '.join(f'exit {c}' for c in codes)} | slowest case |")
    print(f"|---|---|{'---|' * len(codes)}---|")
    for kind in KINDS:
        total = sum(n for (k, _c), n in TALLY.items() if k == kind)
        cells = " | ".join(str(TALLY.get((kind, c), 0)) for c in codes)
        print(f"| {kind} | {total} | {cells} | {SLOWEST.get(kind, 0.0):.2f} s |")
    total = sum(TALLY.values())
    cells = " | ".join(str(sum(n for (_k, c2), n in TALLY.items() if c2 == c)) for c in codes)
    print(f"| **all** | **{total}** | {cells} | {max(SLOWEST.values(), default=0.0):.2f} s |")
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
