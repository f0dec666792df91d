"""The fuzz suite's inputs and its one property (issue 16).

Each input kind is a Hypothesis strategy of `Case`s: the command line, environment variables,
files to create first and stdin. `check` runs a case through the real `fanout` entry point
in-process, in a folder of its own, against the emulator, and holds it to the contract:

- no traceback: the process ends with SystemExit (or returns), never another exception, never
  the bug exit 70, and nothing on stderr mentions a traceback or an internal error;
- the exit code is one of the documented ones (0-6);
- an input refused (exit 2) sent no InvokeCommand (the emulator's count, answered or refused for
  its signature), left no run in any ledger and no file or folder behind;
- no case runs longer than `HANG_S` seconds.

`TALLY` counts cases by (kind, exit code) for `benchmarks/bench_fuzz.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from hypothesis import strategies as st

from fanout import logs
from fanout.emulator import DEMO_COMMAND_NAME, DEMO_PARAM_COMMAND_NAME, EmulatorThread
from tests.harness import DOCUMENTED_EXIT_CODES, Sandbox

__all__ = ["HANG_S", "KINDS", "SLOWEST", "TALLY", "Case", "check", "kinds"]

HANG_S = 30.0
# (kind, exit code) -> cases that held the contract; the slowest case per kind (seconds).
TALLY: Counter[tuple[str, str]] = Counter()
SLOWEST: dict[str, float] = {}
# Settings that keep a valid case quick: results swept fast, a short connect timeout.
FAST_ENV = {"FANOUT_POLL_INTERVAL_S": "0.05", "FANOUT_CONNECT_TIMEOUT_S": "1"}

REGIONS = ("cn-beijing", "cn-hangzhou")


@dataclass(frozen=True)
class Case:
    """One input: arguments, environment overrides, files to write first, stdin."""

    args: tuple[str, ...]
    env: tuple[tuple[str, str | None], ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()
    specials: tuple[str, ...] = ()  # "dir", "fifo", "device": made under these names first
    stdin: str | None = None

    def describe(self) -> str:
        """A short description for a failure message."""
        return json.dumps(
            {"args": self.args, "env": dict(self.env), "files": [n for n, _ in self.files]},
            default=str,
        )[:2000]


class _Hang(BaseException):
    """A case ran longer than HANG_S (raised by the alarm; not an Exception on purpose)."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _Hang in the main thread if the block runs longer than `seconds`."""

    def alarm(_signum: int, _frame: FrameType | None) -> None:
        raise _Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _make_specials(folder: Path, names: tuple[str, ...]) -> None:
    """A folder, a FIFO and a character device (a copy of /dev/null, if mknod is allowed)."""
    for name in names:
        path = folder / name
        if name == "dir":
            path.mkdir()
        elif name == "fifo":
            os.mkfifo(path)
        elif name == "device":
            try:
                os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
            except PermissionError:
                path.mkdir()


def check(emu: EmulatorThread, ids: dict[str, list[str]], kind: str, case: Case) -> None:
    """Run `case` in a new folder and assert the contract (see the module docstring)."""
    folder = Path(tempfile.mkdtemp(prefix="fanout-fuzz-"))
    try:
        (folder / "home").mkdir()
        targets = "".join(f"{r},{i}\n" for r in REGIONS for i in ids[r][:3])
        (folder / "t.txt").write_text(targets)
        for name, data in case.files:
            (folder / name).write_bytes(data)
        _make_specials(folder, case.specials)
        box = Sandbox(folder, emu, extra_env=dict(FAST_ENV))
        args = [a.replace("@ABS@", str(folder)) for a in case.args]
        before_calls, before_files = box.invocations(), box.files()
        logs._SECRETS.clear()
        started = time.monotonic()
        try:
            with _deadline(HANG_S):
                result = box.invoke(args, dict(case.env), stdin=case.stdin)
        except _Hang:
            raise AssertionError(f"{kind}: ran over {HANG_S} s: {case.describe()}") from None
        finally:
            structlog.reset_defaults()
        elapsed = time.monotonic() - started
        _hold(kind, case, box, result, (before_calls, before_files, elapsed))
    finally:
        for path in folder.rglob("*"):  # a FIFO or device is removed, never opened
            if not path.is_dir() or path.is_symlink():
                path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def _hold(kind: str, case: Case, box: Sandbox, result: Any, before: tuple[Any, ...]) -> None:
    """The assertions of `check`, and the tally."""
    calls, files, elapsed = before
    what = case.describe()
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), f"{kind}: {exc!r} for {what}"
    code = result.exit_code
    assert code in DOCUMENTED_EXIT_CODES, f"{kind}: exit {code}: {result.stderr[-500:]} {what}"
    assert "Traceback" not in result.stderr, f"{kind}: traceback: {what}"
    assert "internal error" not in result.stderr, f"{kind}: {result.stderr[-300:]} {what}"
    assert elapsed < HANG_S, f"{kind}: {elapsed:.1f} s: {what}"
    if code == 2:
        assert box.invocations() == calls, f"{kind}: refused, yet InvokeCommand sent: {what}"
        ledgers = [
            p for p in box.tmp.rglob("*") if p.is_file() and not p.name.endswith(("-wal", "-shm"))
        ]
        assert all(box.runs(p) == 0 for p in ledgers if _is_sqlite(p)), f"{kind}: a run: {what}"
        assert box.files() == files, f"{kind}: left {box.files() - files}: {what}"
    TALLY[(kind, str(code))] += 1
    SLOWEST[kind] = max(SLOWEST.get(kind, 0.0), elapsed)


def _is_sqlite(path: Path) -> bool:
    """True for a regular file that starts like a SQLite database."""
    try:
        with path.open("rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


# ----------------------------------------------------------------------------- strategies

# The demo commands by name: a CommandId belongs to one region, and the targets span two.
RUN = ("run", "--command-name", DEMO_COMMAND_NAME, "--targets", "t.txt", "--yes", "--no-wait")
PLAN = ("plan", "--command-name", DEMO_COMMAND_NAME, "--targets", "t.txt")
PARAM_RUN = ("run", "--command-name", DEMO_PARAM_COMMAND_NAME, "--targets", "t.txt", "--yes")

# Text as it reaches fanout: any code point (lone surrogates are undecodable argv bytes), but no
# NUL where an OS interface cannot carry one (argv and environment values).
_ANY_TEXT = st.text(max_size=40)
_ARG_TEXT = st.text(alphabet=st.characters(codec=None, exclude_characters="\x00"), max_size=40)
_SHORT = st.text(alphabet="0123456789abcxyz.-_%:/,=@ ", max_size=12)
_NUMBERISH = st.one_of(
    st.integers(-10, 10**6).map(str),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "50",
            "51",
            "100",
            "101",
            "1.5",
            "2.0",
            "nan",
            "inf",
            "-inf",
            "1e400",
            "9" * 30,
            "0x10",
            "1_000",
            "true",
            "86400",
            "86401",
            "9",
            "10",
            "0.5",
            "-1",
        ]
    ),
    _SHORT,
)


def _valid_ids(ids: dict[str, list[str]]) -> st.SearchStrategy[str]:
    """A valid target of the emulator's fleet, in one of the accepted spellings."""
    return st.sampled_from(REGIONS).flatmap(
        lambda r: st.sampled_from(ids[r]).flatmap(
            lambda i: st.sampled_from([f"{r},{i}", f"{r}:{i}", f"{r} , {i}", f"{r}:{i}  # c"])
        )
    )


def targets(ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """Target files: valid lines, comments, blanks, junk, NUL, BOM, CRLF, undecodable bytes."""
    line = st.one_of(
        _valid_ids(ids),
        st.sampled_from(["", "# comment", "   ", "i-", "cn-hangzhou,", ",i-abc12345", "\ufeff"]),
        _ANY_TEXT,
        st.sampled_from(ids["cn-hangzhou"]),
    )
    text = st.lists(line, max_size=8).map(
        lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")
    )
    data = st.one_of(text, st.binary(max_size=60), text.map(lambda b: b.replace(b"\n", b"\r\n")))
    region = st.one_of(st.just(()), st.sampled_from(REGIONS).map(lambda r: ("--region", r)))
    return st.tuples(data, region, st.sampled_from([RUN, PLAN])).map(
        lambda t: Case(args=(*t[2][:4], "f.txt", *t[2][5:], *t[1]), files=(("f.txt", t[0]),))
    )


def instance_ids(ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--instance-id` values: valid, half valid, any text; with or without --region."""
    value = st.one_of(_valid_ids(ids), _ARG_TEXT, st.sampled_from(ids["cn-beijing"]))
    region = st.one_of(
        st.just(()), st.sampled_from([*REGIONS, "xx-nowhere-1", ""]).map(lambda r: ("--region", r))
    )
    base = ("run", "--command-name", DEMO_COMMAND_NAME, "--yes", "--no-wait")
    return st.tuples(st.lists(value, min_size=1, max_size=4), region).map(
        lambda t: Case(args=(*base, *(a for v in t[0] for a in ("--instance-id", v)), *t[1]))
    )


def parameters(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--param`, `--secret-param`, `--param-file`, `FANOUT_PARAM_*`: names and values of any
    text, duplicates, no '=', short secrets, with and without --allow-short-secret."""
    key = st.one_of(st.sampled_from(["name", "version", "token", "", "x" * 65]), _ARG_TEXT)
    value = st.one_of(st.sampled_from(["web", "1.2.3", "", "s3cr3t-value-long", "abc"]), _ARG_TEXT)
    item = st.one_of(st.tuples(key, value).map(lambda kv: f"{kv[0]}={kv[1]}"), _ARG_TEXT)
    flags = st.lists(item, max_size=5).map(
        lambda items: tuple(a for i in items for a in ("--param", i))
    )
    secret = st.lists(key, max_size=2).map(
        lambda keys: tuple(a for k in keys for a in ("--secret-param", k))
    )
    short = st.sampled_from([(), ("--allow-short-secret",)])
    file_text = st.lists(item, max_size=4).map(
        lambda items: "\n".join(items).encode("utf-8", "surrogatepass")
    )
    use_file = st.booleans()
    env = st.dictionaries(
        key.filter(lambda k: k and "=" not in k and "\x00" not in k).map(
            lambda k: f"FANOUT_PARAM_{k}"
        ),
        value.filter(lambda v: "\x00" not in v),
        max_size=2,
    )
    return st.tuples(flags, secret, short, file_text, use_file, env).map(
        lambda t: Case(
            args=(
                *PARAM_RUN,
                "--no-wait",
                *t[0],
                *t[1],
                *t[2],
                *(("--param-file", "p.env") if t[4] else ()),
            ),
            files=(("p.env", t[3]),),
            env=tuple(t[5].items()),
        )
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def params_json(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--params-json` inline or `@FILE`: JSON of any shape, objects of text, deep nesting, huge
    numbers, undecodable bytes, duplicates, `@` of a missing file, `@-` with stdin."""
    good = st.fixed_dictionaries({"name": st.text(max_size=8), "version": st.text(max_size=8)})
    doc = st.one_of(
        _JSON.map(json.dumps),
        good.map(json.dumps),
        st.sampled_from(["[" * 5000, '{"name": ' + "9" * 5000 + "}", '{"a":1,"a":2}', "NaN", ""]),
        _ANY_TEXT,
    )
    raw = st.one_of(doc.map(lambda d: d.encode("utf-8", "surrogatepass")), st.binary(max_size=40))
    how = st.sampled_from(["inline", "file", "missing", "stdin"])

    def case(text: bytes, mode: str) -> Case:
        if mode == "inline":
            value = text.decode("utf-8", "surrogateescape").replace("\x00", "")
            return Case(args=(*PARAM_RUN, "--no-wait", "--params-json", value))
        if mode == "stdin":
            return Case(
                args=(*PARAM_RUN, "--no-wait", "--params-json", "@-"),
                stdin=text.decode("utf-8", "replace"),
            )
        name = "p.json" if mode == "file" else "absent.json"
        return Case(
            args=(*PARAM_RUN, "--no-wait", "--params-json", f"@{name}"), files=(("p.json", text),)
        )

    return st.tuples(raw, how).map(lambda t: case(*t))


def frequency(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--frequency` (cron fields, rate(), at()) with `--timed` and `--repeat-mode`."""
    field_ = st.one_of(
        st.sampled_from(["*", "0", "*/5", "1-5", "MON", "?", "L", "60", "*/0"]), _SHORT
    )
    cron = st.lists(field_, min_size=1, max_size=8).map(" ".join)
    rate = st.tuples(_NUMBERISH, st.sampled_from(["s", "m", "h", "d", "", "x"])).map(
        lambda t: f"rate({t[0]}{t[1]})"
    )
    at = st.tuples(st.integers(1900, 3000), st.integers(0, 13), st.integers(0, 32), _SHORT).map(
        lambda t: f"at({t[0]}-{t[1]:02}-{t[2]:02} 10:00:00 {t[3]})"
    )
    value = st.one_of(cron, rate, at, _ARG_TEXT)
    extra = st.lists(
        st.sampled_from(
            [
                ("--timed",),
                ("--repeat-mode", "Period"),
                ("--repeat-mode", "Once"),
                ("--repeat-mode", "DryRun"),
                ("--repeat-mode", "Bogus"),
            ]
        ),
        max_size=2,
    )
    return st.tuples(value, extra).map(
        lambda t: Case(args=(*RUN, "--frequency", t[0], *(a for e in t[1] for a in e)))
    )


def waves(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--waves` (counts, percentages, junk) with `--wave-order`."""
    element = st.one_of(
        st.integers(-2, 10).map(str),
        st.integers(0, 120).map(lambda n: f"{n}%"),
        st.sampled_from(["", "50.5%", "1e3", "%", "100%", "1,"]),
        _SHORT,
    )
    spec = st.lists(element, min_size=1, max_size=5).map(",".join)
    order = st.sampled_from(
        [
            (),
            ("--wave-order", "spread"),
            ("--wave-order", "region-by-region"),
            ("--wave-order", "x"),
        ]
    )
    return st.tuples(spec, order).map(lambda t: Case(args=(*RUN, "--waves", t[0], *t[1])))


def budgets(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--max-errors` and `--wave-max-failures`: N, P%, junk, huge."""
    value = st.one_of(_NUMBERISH, _NUMBERISH.map(lambda v: f"{v}%"), _ARG_TEXT)
    flag = st.sampled_from(["--max-errors", "--wave-max-failures"])
    return st.lists(st.tuples(flag, value), min_size=1, max_size=2).map(
        lambda pairs: Case(args=(*RUN, *(a for p in pairs for a in p)))
    )


_NUMBER_FLAGS = (
    (RUN, "--timeout"),
    (RUN, "--batch-size"),
    (RUN, "--concurrency"),
    (RUN, "--rate"),
    (RUN, "--daily-quota"),
    (RUN, "--quota-reserve"),
    (("runs",), "--limit"),
    (("stop", "r20000101-000000-000000"), "--wait-s"),
    (("quota",), "--daily-quota"),
)


def numbers(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """Every numeric flag with number-ish text: ints, floats, nan, inf, huge, signs, junk."""
    return st.tuples(st.sampled_from(_NUMBER_FLAGS), _NUMBERISH).map(
        lambda t: Case(args=(*t[0][0], t[0][1], t[1]))
    )


_SETTING_KEYS = (
    "batch_size",
    "max_batch_size",
    "concurrency",
    "region_concurrency",
    "preflight_concurrency",
    "rate_per_s",
    "daily_quota",
    "quota_reserve",
    "quota_mode",
    "quota_time_zone",
    "max_attempts",
    "connect_timeout_s",
    "read_timeout_s",
    "poll_interval_s",
    "max_output_bytes",
    "describe_rate_per_s",
    "lease_s",
    "content_limit_bytes",
    "network",
    "signature",
    "region",
    "insecure_http",
    "bogus",
)
_ROLLOUT_KEYS = (
    "command_id",
    "targets",
    "regions",
    "instance_ids",
    "params",
    "secret_params",
    "waves",
    "max_errors",
    "frequency",
    "repeat_mode",
    "timeout_s",
    "username",
    "working_dir",
    "tags",
    "x",
)
_TOML_VALUE = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(
        [
            "inf",
            "-inf",
            "nan",
            "1e400",
            "1.5",
            "0",
            "true",
            "false",
            "[]",
            "{}",
            '"Bogus"',
            '"Asia/Shanghai"',
            '"Mars/Base"',
            '"t.txt"',
            '["a", 1]',
            '{ name = "web" }',
            '"' + "u" * 300 + '"',
            "3",
            "86401",
            "5",
        ]
    ),
    st.floats(allow_nan=False).map(repr),
    st.text(max_size=12).map(json.dumps),
)


def toml_configs(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """Config files: known and unknown keys with values of every TOML type (inf, nan, 1e400,
    floats for integers), a `[rollout]` table, `[fanout]`, broken TOML and undecodable bytes."""
    settings = st.lists(st.tuples(st.sampled_from(_SETTING_KEYS), _TOML_VALUE), max_size=4)
    rollout = st.lists(st.tuples(st.sampled_from(_ROLLOUT_KEYS), _TOML_VALUE), max_size=4)
    header = st.sampled_from(["", "[fanout]\n"])

    def render(s: list[tuple[str, str]], r: list[tuple[str, str]], h: str) -> bytes:
        top = "".join(f"{k} = {v}\n" for k, v in dict(s).items())
        table = "".join(f"{k} = {v}\n" for k, v in dict(r).items())
        return (h + top + ("[rollout]\n" + table if r else "")).encode("utf-8", "surrogatepass")

    text = st.tuples(settings, rollout, header).map(lambda t: render(*t))
    data = st.one_of(
        text,
        text,
        st.binary(max_size=40),
        _ANY_TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
    )
    how = st.sampled_from([("--config", "c.toml"), ("env",)])
    cmd = st.sampled_from([RUN, PLAN, ("runs",), ("run", "--yes", "--no-wait")])
    return st.tuples(data, how, cmd).map(
        lambda t: Case(
            args=(*t[2], *(t[1] if t[1][0] == "--config" else ())),
            env=(("FANOUT_CONFIG", "c.toml"),) if t[1][0] == "env" else (),
            files=(("c.toml", t[0]),),
        )
    )


_ENV_VALUE = st.one_of(
    _NUMBERISH, _ARG_TEXT.filter(lambda v: "\x00" not in v), st.sampled_from(["http://[::1", "x"])
)


def environment(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`FANOUT_*` variables and credentials with any value (newlines, undecodable bytes)."""
    names = st.sampled_from(
        [f"FANOUT_{k.upper()}" for k in _SETTING_KEYS[:-1]]
        + [
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            "ALIBABA_CLOUD_SECURITY_TOKEN",
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            "ALIBABA_CLOUD_CA_BUNDLE",
            "FANOUT_PARAM_name",
            "ALIBABA_CLOUD_PROFILE",
        ]
    )
    env = st.dictionaries(names, _ENV_VALUE, min_size=1, max_size=3)
    cmd = st.sampled_from([RUN, PLAN, ("runs",), ("quota",)])
    return st.tuples(env, cmd).map(lambda t: Case(args=t[1], env=tuple(t[0].items())))


def endpoints(emu_url: str) -> Callable[[dict[str, list[str]]], st.SearchStrategy[Case]]:
    """`--endpoint` URLs: schemes, loopback and broken hosts, ports in and out of range, paths,
    queries, user info; the emulator's own URL. (No host that would be looked up on a network.)"""

    def strategy(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
        scheme = st.sampled_from(["http", "https", "ftp", "", "HTTP", "http:"])
        host = st.sampled_from(
            ["127.0.0.1", "localhost", "[::1]", "[::1", "", "a b", "ex ample", "127.0.0.1.", "[zz]"]
        )
        port = st.one_of(
            st.just(""),
            st.integers(-1, 70000).map(lambda p: f":{p}"),
            st.sampled_from([":abc", ":"]),
        )
        rest = st.sampled_from(["", "/", "/x", "?a=1", "#f", "/%zz"])
        user = st.sampled_from(["", "u:p@", "u@"])
        url = st.tuples(scheme, user, host, port, rest).map(
            lambda t: f"{t[0]}://{t[1]}{t[2]}{t[3]}{t[4]}"
        )
        value = st.one_of(url, url, st.just(emu_url), _ARG_TEXT)
        cmd = st.sampled_from([RUN, PLAN])
        return st.tuples(value, cmd, st.sampled_from([(), ("--insecure-http",)])).map(
            lambda t: Case(args=(*t[1], "--endpoint", t[0], *t[2]))
        )

    return strategy


def ledgers(_ids: dict[str, list[str]]) -> st.SearchStrategy[Case]:
    """`--ledger` locations: relative and nested paths, sqlite: URLs in every form, mode=ro,
    folders, FIFOs, devices, files that are no ledger, broken postgresql:// URLs."""
    name = st.sampled_from(
        [
            "l.db",
            "a/b/l.db",
            "dir",
            "fifo",
            "device",
            "notes.txt",
            "empty.db",
            "dir/",
            "",
            ".",
            "t.txt",
        ]
    )
    form = st.sampled_from(
        [
            "{}",
            "sqlite:{}",
            "sqlite:///{abs}",
            "sqlite:////{abs}",
            "sqlite:{}?mode=ro",
            "sqlite://host/{}",
            "sqlite:{}?mode=x",
            "file:{}",
            "ftp://x/{}",
        ]
    )
    pg = st.sampled_from(
        [
            "postgresql://u:pw@[::1:1/db",
            "postgresql://u:pw@127.0.0.1:99999/db",
            "postgres://u@127.0.0.1:1/db",
            "postgresql://u:p@h:x/db",
            "postgresql://#",
        ]
    )
    location = st.one_of(
        st.tuples(form, name), pg.map(lambda p: ("", p)), _ARG_TEXT.map(lambda t: ("", t))
    )
    cmd = st.sampled_from(
        [
            RUN,
            ("runs",),
            ("status", "r20000101-000000-000000"),
            ("quota",),
            ("report", "r20000101-000000-000000"),
        ]
    )

    def case(loc: tuple[str, str], args: tuple[str, ...]) -> Case:
        form_, value = loc
        text = form_.replace("{abs}", "@ABS@/" + value).replace("{}", value) if form_ else value
        return Case(
            args=(*args, "--ledger", text),
            files=(("notes.txt", b"not a ledger\n"), ("empty.db", b"")),
            specials=("dir", "fifo", "device"),
        )

    return st.tuples(location, cmd).map(lambda t: case(*t))


def kinds(emu_url: str) -> dict[str, Callable[[dict[str, list[str]]], st.SearchStrategy[Case]]]:
    """Every input kind and its strategy."""
    return {
        "targets": targets,
        "instance ids": instance_ids,
        "parameters": parameters,
        "params-json": params_json,
        "frequency": frequency,
        "waves": waves,
        "budgets": budgets,
        "numbers": numbers,
        "TOML configs": toml_configs,
        "environment": environment,
        "endpoints": endpoints(emu_url),
        "ledger locations": ledgers,
    }


KINDS = tuple(kinds("http://127.0.0.1:1"))
