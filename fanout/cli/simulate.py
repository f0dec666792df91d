"""`fanout simulate`: rehearse a rollout with `run`'s own flags against the emulator, in
simulated time (`fanout.simulate`; the simulated-time seam is `fanout.simtime`)."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from fanout.cli.exits import guarded
from fanout.cli.inputs import read_rollout
from fanout.cli.options import SpendFlags, rollout_options
from fanout.emulator.fleet import Fleet, generated_ids
from fanout.errors import UsageError
from fanout.logs import configure_logging
from fanout.rehearsal import DAY_S
from fanout.simtime import run_simulated
from fanout.simulate import (
    SIMULATION_CREDENTIALS,
    FaultRates,
    Rehearsal,
    SimulationOptions,
    rehearse,
    simulation_fleet,
)

__all__ = ["simulate_command"]

_DEFAULT_REGIONS = "cn-hangzhou"
_DEMO_COMMAND = "fanout-demo"  # the emulator's demo command, in every region
_FRACTION = click.FloatRange(0.0, 1.0)
_IN_PROCESS_LATENCY_MS = 20.0


@dataclass(frozen=True, slots=True)
class _SimFlags:
    """What `simulate` adds to `run`'s flags: the emulated world and its disturbances."""

    instances: int | None
    regions_list: str | None
    fleet: Path | None
    from_plan: bool
    seed: int
    exec_seconds: str
    fail_rate: float
    unreachable_rate: float
    error_rate: float
    throttle_rate: float
    lost_answer_rate: float
    kills: int
    time_scale: float
    latency_ms: float | None
    emulator_process: bool
    out: Path | None


_OPTIONS = [
    click.option("--instances", type=click.IntRange(1, 10_000_000), help="Generated fleet size."),
    click.option("--regions", "regions_list", help="Generated fleet's regions, comma-separated."),
    click.option("--fleet", type=click.Path(dir_okay=False, path_type=Path), help="Fleet JSON."),
    click.option("--from-plan", is_flag=True, help="Rehearse the targets of run's own flags."),
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--exec-seconds", default="10:600", show_default=True, help="MIN:MAX run time."),
    click.option("--fail-rate", type=_FRACTION, default=0.0, help="Executions exiting non-zero."),
    click.option("--unreachable-rate", type=_FRACTION, default=0.0, help="Agents not running."),
    click.option("--error-rate", type=_FRACTION, default=0.0, help="HTTP 500 answers."),
    click.option("--throttle-rate", type=_FRACTION, default=0.0, help="Throttling answers."),
    click.option("--lost-answer-rate", type=_FRACTION, default=0.0, help="Applied, answer lost."),
    click.option("--kills", type=click.IntRange(0, 1000), default=0, help="Runner kills + resume."),
    click.option(
        "--time-scale",
        type=click.FloatRange(0, 1_000_000, min_open=True),
        default=1.0,
        show_default=True,
        help="Simulated seconds per real second while busy (idle waits are skipped anyway).",
    ),
    click.option(
        "--latency-ms",
        type=click.FloatRange(0),
        help="The emulator's answer time [default: 20; 0 with --emulator-process, where it "
        "would be waited in real time: another process's sleeps cannot be skipped].",
    ),
    click.option(
        "--emulator-process",
        is_flag=True,
        help="Run the emulator in a child process (on the same simulated clock): the peak "
        "memory printed is then the runner's alone.",
    ),
    click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Output folder."),
]


def _sim_options(func: Any) -> Any:
    """Add the simulation's options; the command gets `sim: _SimFlags`."""
    names = [f.name for f in dataclasses.fields(_SimFlags)]

    def command(*args: Any, **kwargs: Any) -> None:
        values = {key: kwargs.pop(key) for key in names}
        func(*args, **kwargs, sim=_SimFlags(**values))

    command.__name__ = func.__name__
    command.__doc__ = func.__doc__
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


@click.command("simulate")
@rollout_options
@_sim_options
@guarded
def simulate_command(rollout: Any, spend: SpendFlags, sim: _SimFlags) -> None:
    """Rehearse a rollout in simulated time, with run's own flags; spends no quota.

    \b
    The emulator runs in-process on one clock shared with the runner: quota days, bake times
    and executions pass in simulated time, idle waits cost no real time. Prints each region's
    timeline (waves, quota days running out), calls per region per day, the plan's ETA beside
    the simulated finish, and checks from the emulator's side that no instance was invoked
    twice, nothing was lost and no quota window was exceeded. Writes the ledger and the HTML
    report of the simulated run to --out.
    \b
    fanout simulate --instances 300000 --regions cn-hangzhou,cn-beijing --daily-quota 5000 \\
        --waves 1%,10%,50%,100% --fail-rate 0.02 --wait-for-quota
    fanout simulate --from-plan --command-name deploy --targets hosts.txt --waves 1,10%,100%
    \b
    Exit codes: 0 every invariant held (the simulated run's own exit code is printed),
    1 an invariant broke, 2 bad input.
    """
    configure_logging(spend.common.log_level)
    _refuse_real_only(spend)
    folder = sim.out or Path(tempfile.mkdtemp(prefix="fanout-simulate-"))
    if (folder / "ledger.sqlite3").exists():  # its runs and quota calls would mix with these
        msg = f"--out {folder}: already holds a simulated ledger; give a new folder"
        raise UsageError(msg)
    options, rollout = _world(sim, rollout, spend, folder)
    read = read_rollout(rollout, spend, credentials=SIMULATION_CREDENTIALS)
    request, settings = read.request, read.settings
    options = dataclasses.replace(options, daily_quota=settings.daily_quota or options.daily_quota)

    def ignore(_kind: str, _data: Mapping[str, object]) -> None:
        """The run's events: the rehearsal reads the ledger and the emulator instead."""

    result = run_simulated(
        lambda clock: rehearse(settings, request, options, clock, emit=ignore),
        time_scale=sim.time_scale,
    )
    if spend.common.as_json:
        click.echo(json.dumps(_document(result), indent=2))
    else:
        click.echo(_text(result))
    for problem in result.problems:
        click.echo(f"fanout: error: invariant broken: {problem}", err=True)
    raise SystemExit(1 if result.problems else 0)


def _refuse_real_only(spend: SpendFlags) -> None:
    """The options of a real endpoint mean nothing here: refused, not ignored."""
    given = {
        "--endpoint": spend.endpoint,
        "--ledger": spend.common.ledger,
        "--profile": spend.profile,
        "--ca-bundle": spend.ca_bundle,
        "--insecure-http": spend.insecure_http or None,
    }
    for flag, value in given.items():
        if value is not None:
            msg = f"{flag}: fanout simulate runs its own emulator and ledger (see --out)"
            raise UsageError(msg)


def _world(
    sim: _SimFlags, rollout: Any, spend: SpendFlags, folder: Path
) -> tuple[SimulationOptions, Any]:
    """The emulated fleet and the run flags pointed at it (targets, a default command)."""
    low, high = _exec_seconds(sim.exec_seconds)
    regions = tuple(r.strip() for r in (sim.regions_list or "").split(",") if r.strip())
    options = SimulationOptions(
        folder=folder,
        regions=regions or tuple(rollout.regions) or (_DEFAULT_REGIONS,),
        seed=sim.seed,
        exec_seconds=(low, high),
        faults=FaultRates(
            sim.fail_rate,
            sim.unreachable_rate,
            sim.error_rate,
            sim.throttle_rate,
            sim.lost_answer_rate,
        ),
        kills=sim.kills,
        time_scale=sim.time_scale,
        latency_ms=_latency_ms(sim),
        daily_quota=spend.daily_quota or 5000,
        emulator_process=sim.emulator_process,
    )
    given_targets = bool(rollout.targets_file or rollout.instance_ids or rollout.tags)
    if sim.from_plan:
        if not given_targets:
            raise UsageError("--from-plan: give run's targets (--targets FILE or --instance-id)")
        if sim.instances or sim.fleet:
            raise UsageError(
                "--from-plan: the fleet is the plan's targets; drop --instances/--fleet"
            )
    else:
        if given_targets:
            raise UsageError("--targets/--instance-id/--tag: add --from-plan to rehearse them")
        options = _generated(sim, options, folder)
        rollout = dataclasses.replace(rollout, targets_file=str(folder / "targets.txt"))
    if not (rollout.command_id or rollout.command_name or rollout.script):
        rollout = dataclasses.replace(rollout, command_name=_DEMO_COMMAND)
    return options, rollout


def _latency_ms(sim: _SimFlags) -> float:
    """The emulator's answer time: 20 ms, skipped like any idle wait in-process; none by default
    in a child process, whose sleeps would be waited in real time."""
    if sim.latency_ms is not None:
        return sim.latency_ms
    return 0.0 if sim.emulator_process else _IN_PROCESS_LATENCY_MS


def _generated(sim: _SimFlags, options: SimulationOptions, folder: Path) -> SimulationOptions:
    """A generated (`--instances`) or given (`--fleet`) fleet, its targets in targets.txt."""
    if sim.fleet is not None:
        options = dataclasses.replace(options, fleet_file=sim.fleet, instances_per_region=0)
    else:
        total = sim.instances or 1000
        per_region = -(-total // len(options.regions))
        options = dataclasses.replace(options, instances_per_region=per_region)
    config = simulation_fleet(options)
    if sim.fleet is not None:
        try:
            fleet = Fleet.from_config(config)
        except ValueError as exc:
            raise UsageError(f"--fleet {sim.fleet}: {exc}") from exc
        lines = [
            f"{region}:{inst.instance_id}"
            for region, region_fleet in sorted(fleet.regions.items())
            for inst in region_fleet.instances
        ]
    else:  # the ids alone (the runner's memory is what a rehearsal shows, not the fleet's),
        # the total spread evenly over the regions: the first ones of each
        regions = sorted(options.regions)
        share, extra = divmod(sim.instances or 1000, len(regions))
        lines = [
            f"{region}:{instance_id}"
            for index, region in enumerate(regions)
            for instance_id in generated_ids(config, region)[: share + (index < extra)]
        ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "targets.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return options


def _exec_seconds(text: str) -> tuple[float, float]:
    """`MIN:MAX` seconds, 0 <= MIN <= MAX."""
    low, sep, high = text.partition(":")
    try:
        pair = (float(low), float(high if sep else low))
    except ValueError:
        pair = (-1.0, -1.0)
    if not 0 <= pair[0] <= pair[1] < float("inf"):
        raise UsageError(f"--exec-seconds {text!r}: expected MIN:MAX with 0 <= MIN <= MAX")
    return pair


def _span(seconds: float) -> str:
    """`1d 02:03:04` (or `02:03:04`)."""
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    days, rest = divmod(total, int(DAY_S))
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{sign}{days}d {text}" if days else f"{sign}{text}"


def _at(result: Rehearsal, moment: float) -> str:
    """`+1d 02:03:04` after the start."""
    return "+" + _span(moment - result.start_s)


def _text(result: Rehearsal) -> str:
    """The rehearsal as the operator reads it."""
    start = datetime.fromtimestamp(result.start_s, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    out = result.outcome
    eta = result.eta
    lines = [
        f"simulated run {result.run_id}: {result.targets} targets, started {start} (simulated)",
        f"finished after {_span(result.end_s - result.start_s)} simulated, in "
        f"{result.real_s:.1f} s real; {result.kills} kills, {result.legs} legs; peak memory "
        f"{result.peak_rss_mb:.0f} MB ({_whose(result)})",
        f"outcome: exit {int(out.exit_code)} ({out.state.value}): {out.message}",
        f"plan ETA: {_span(eta.planned_s)}; for the calls charged (retries included): "
        f"{_span(eta.replanned_s)}; simulated finish: {_span(eta.simulated_s)} "
        f"(difference {_span(eta.difference_s)}, tolerance {_span(eta.tolerance_s)}: "
        f"{'within' if eta.within else 'OUTSIDE'})",
    ]
    for timeline in result.timelines:
        lines.append(f"{timeline.region}: {timeline.calls} calls")
        for wave, (first, last) in timeline.waves.items():
            lines.append(f"  wave {wave}: calls {_at(result, first)} .. {_at(result, last)}")
        for day, (last_call, next_call) in enumerate(timeline.quota_out, start=1):
            lines.append(
                f"  quota day {day} used up at {_at(result, last_call)}; "
                f"next call {_at(result, next_call)}"
            )
        if timeline.finished_s is not None:
            lines.append(f"  last result {_at(result, timeline.finished_s)}")
    lines.append("calls per region per day:")
    for region, days in result.calls_per_day.items():
        lines.append(f"  {region}: " + ", ".join(f"day {d}: {n}" for d, n in days.items()))
    verdict = "every invariant held" if not result.problems else "INVARIANTS BROKEN"
    lines.append(f"invariants (exactly once, nothing lost, quota): {verdict}")
    lines.append(f"ledger: {result.ledger}")
    lines.append(f"report: {result.report}")
    return "\n".join(lines)


def _whose(result: Rehearsal) -> str:
    """Whose memory the peak is."""
    return "the runner's" if result.emulator_process else "runner and emulator"


def _document(result: Rehearsal) -> dict[str, Any]:
    """The rehearsal as one JSON document."""
    eta = result.eta
    return {
        "run_id": result.run_id,
        "targets": result.targets,
        "start_s": result.start_s,
        "finish_after_s": result.end_s - result.start_s,
        "real_s": result.real_s,
        "peak_rss_mb": round(result.peak_rss_mb, 1),
        "emulator_process": result.emulator_process,
        "kills": result.kills,
        "legs": result.legs,
        "exit_code": int(result.outcome.exit_code),
        "state": result.outcome.state.value,
        "eta": {
            "planned_s": eta.planned_s,
            "replanned_s": eta.replanned_s,
            "simulated_s": eta.simulated_s,
            "difference_s": eta.difference_s,
            "tolerance_s": eta.tolerance_s,
            "within": eta.within,
        },
        "regions": {
            t.region: {
                "calls": t.calls,
                "waves": {
                    str(w): [a - result.start_s, b - result.start_s]
                    for w, (a, b) in t.waves.items()
                },
                "quota_out": [[a - result.start_s, b - result.start_s] for a, b in t.quota_out],
                "finished_after_s": None if t.finished_s is None else t.finished_s - result.start_s,
                "calls_per_day": {
                    str(d): n for d, n in result.calls_per_day.get(t.region, {}).items()
                },
            }
            for t in result.timelines
        },
        "invariants_ok": not result.problems,
        "problems": list(result.problems),
        "ledger": str(result.ledger),
        "report": str(result.report),
    }
