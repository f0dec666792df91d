"""The layers hold, in the source and at run time (STYLE 2).

Read with `ast` from the source: every import statement runs, module level or inside a
function, except those under `if TYPE_CHECKING:`. Importing `a.b.c` first runs `a/__init__.py`
and `a/b/__init__.py`, so those parent packages count; `from pkg import Name` where `pkg` loads
`Name` lazily (a PEP 562 `_EXPORTS` table) counts as importing the module that defines it.

- The pure core imports no I/O library and none of the CLI, the emulator, the ledger's stores
  or the runner.
- The emulator shares only the pure signing code and the clock with the rest of fanout.
- The API client (`fanout.aliyun`) builds only on the error tree and the clock.
- The runner side imports no view (the live progress view, the CLI, the report).
- No import cycles among fanout modules.
- In a fresh interpreter, importing a pure stage leaves aiohttp, anyio, asyncio and sqlite3
  unloaded.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

import fanout

PACKAGE_ROOT = Path(fanout.__file__).parent

# The modules that take data and return data. Listed explicitly: a module that moves or is
# split must be added here by hand, not silently dropped.
PURE_MODULES = (
    "fanout.rehearsal",
    "fanout._lazy",
    "fanout.targets",
    "fanout.plan",
    "fanout.plan_summary",
    "fanout.params",
    "fanout.quota",
    "fanout.schedule",
    "fanout.validate",
    "fanout.values",
    "fanout.fingerprints",
    "fanout.request",
    "fanout.sources",
    "fanout.redaction",
    "fanout.tally",
    "fanout.verdict",
    "fanout.report",
    "fanout.times",
    "fanout.html_report",
    "fanout.timeline",
    "fanout.failures",
    "fanout.aliyun.signing",
    "fanout.aliyun.wire",
    "fanout.aliyun.endpoints",
    "fanout.aliyun.command",
    "fanout.aliyun.responses",
    "fanout.aliyun.decoders",
    "fanout.aliyun.permissions",
    "fanout.ledger.model",
    "fanout.ledger.rows",
    "fanout.ledger.writes",
)

# Network, files and processes, threads and signals, clocks, event loops, the environment,
# logging with side effects, drivers and terminals.
FORBIDDEN = (
    "aiohttp",
    "aiolimiter",
    "anyio",
    "asyncio",
    "click",
    "os",
    "pathlib",
    "psycopg",
    "rich",
    "shutil",
    "signal",
    "socket",
    "sqlite3",
    "structlog",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "urllib.request",
)

# What a fresh interpreter must not have loaded after importing a pure stage.
RUNTIME_FORBIDDEN = ("aiohttp", "anyio", "asyncio", "sqlite3")
RUNTIME_PURE = (
    "fanout.validate",
    "fanout.values",
    "fanout.plan",
    "fanout.report",
    "fanout.targets",
    "fanout.tally",
    "fanout.verdict",
)

# The root package and its lazy-name helper run before any fanout module: every layer may use them.
PLUMBING = ("fanout", "fanout._lazy")
# The ledger's pure parts; every other `fanout.ledger.*` module is the store side.
LEDGER_CORE = ("fanout.ledger", "fanout.ledger.model", "fanout.ledger.rows", "fanout.ledger.writes")
# The modules that drive a run; they emit events or return data and import no view.
RUNNER_SIDE = (
    "fanout.runner",
    "fanout.launch",
    "fanout.dispatch",
    "fanout.waves",
    "fanout.invoke",
    "fanout.results",
    "fanout.halt",
    "fanout.lease",
    "fanout.verdict",
    "fanout.control",
    "fanout.commands",
    "fanout.command_list",
    "fanout.limits",
    "fanout.refused",
    "fanout.doctor",
    "fanout.linked",
)


def within(name: str, package: str) -> bool:
    """True if `name` is the module or package `package` or inside it."""
    return name == package or name.startswith(package + ".")


def is_cli(name: str) -> bool:
    """The CLI: `fanout.cli`, a `fanout.cli` package, or the `fanout.cli_*` modules."""
    return within(name, "fanout.cli") or name.startswith("fanout.cli_")


def is_view(name: str) -> bool:
    """A module that draws or renders for people: the live progress view, the CLI, the report."""
    return within(name, "fanout.progress") or is_cli(name) or within(name, "fanout.report")


def is_ledger_store(name: str) -> bool:
    """The ledger's storage side (backends, drivers, group commit), not its pure model."""
    return within(name, "fanout.ledger") and name not in LEDGER_CORE


def module_file(name: str) -> Path | None:
    """The source file of a fanout module (`pkg/__init__.py` for a package), or None."""
    if not within(name, "fanout"):
        return None
    candidate = PACKAGE_ROOT.joinpath(*name.split(".")[1:])
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def all_modules() -> list[str]:
    """Every fanout module and package, by dotted name."""
    names = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def parents(name: str) -> list[str]:
    """The packages whose `__init__` runs before `name`: `a.b.c` -> `a.b`, `a`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


@dataclass(frozen=True, slots=True)
class Import:
    """One module named by one import statement."""

    target: str
    line: int
    deferred: bool  # inside a function: runs when called, not on import

    def where(self, source: str) -> str:
        """`fanout/cli.py:259 (in a function)`."""
        path = module_file(source)
        shown = path.relative_to(PACKAGE_ROOT.parent) if path else source
        return f"{shown}:{self.line}" + (" (in a function)" if self.deferred else "")


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(
    nodes: Iterable[ast.AST], *, deferred: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement that can run, with whether it is inside a function."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse, deferred=deferred)  # only the `else:` runs
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, deferred
        inner = deferred or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _statements(ast.iter_child_nodes(node), deferred=inner)


@cache
def lazy_exports(package: str) -> dict[str, str]:
    """A package's PEP 562 table `_EXPORTS = {"Name": "fanout.module", ...}` (empty if none)."""
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names = [t.id for t in getattr(node, "targets", ()) if isinstance(t, ast.Name)]
        if isinstance(node, ast.Assign) and names == ["_EXPORTS"]:
            table = ast.literal_eval(node.value)
            assert isinstance(table, dict)
            return {str(k): str(v) for k, v in table.items()}
    return {}


def _from_targets(base: str, names: list[str]) -> list[str]:
    """What `from base import names` loads: submodules, lazily exported names' modules, base."""
    if module_file(base) is None:  # not fanout: `from urllib import request` loads both
        return [base, *(f"{base}.{n}" for n in names)]
    found = []
    for n in names:
        if module_file(f"{base}.{n}") is not None:
            found.append(f"{base}.{n}")
        else:
            found.append(lazy_exports(base).get(n, base))
    return found


@cache
def imports_of(name: str) -> tuple[Import, ...]:
    """Every module the source of `name` imports (relative imports made absolute)."""
    path = module_file(name)
    if path is None:
        return ()
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    anchor = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: list[Import] = []
    for node, deferred in _statements(tree.body):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                base = ".".join([*anchor[: len(anchor) - (node.level - 1)], *filter(None, [base])])
            targets = _from_targets(base, [alias.name for alias in node.names])
        found += [Import(t, node.lineno, deferred) for t in targets]
    return tuple(found)


def loaded_by(root: str) -> dict[str, tuple[str, ...]]:
    """Every module (fanout's and foreign ones) that importing `root` can load, each with the
    chain of imports that leads to it; parent packages count (their `__init__` runs first)."""
    chains: dict[str, tuple[str, ...]] = {root: (root,)}
    todo = [root]
    while todo:
        name = todo.pop()
        nexts = [f"{p} (parent)" for p in parents(name)] + [i.target for i in imports_of(name)]
        for shown in nexts:
            target = shown.removesuffix(" (parent)")
            if target in chains:
                continue
            chains[target] = (*chains[name], shown)
            if module_file(target) is not None:
                todo.append(target)
    return chains


def offenders(root: str, bad: Callable[[str], bool]) -> list[str]:
    """`root -> ... -> module` for every module loaded by `root` that `bad` picks."""
    return [" -> ".join(chain) for name, chain in sorted(loaded_by(root).items()) if bad(name)]


def is_forbidden_io(name: str) -> bool:
    """An I/O library (or part of one) from FORBIDDEN."""
    return any(within(name, bad) for bad in FORBIDDEN)


def forbidden_imports(root: str) -> list[str]:
    """`root -> ... -> library` for every I/O library that importing `root` can load."""
    return offenders(root, is_forbidden_io)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_exists(module: str) -> None:
    """Every module listed as pure is present (a rename must update the list)."""
    assert module_file(module) is not None


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_library(module: str) -> None:
    """A pure module reaches no network, file, clock, event-loop or logging library, directly,
    through other fanout modules or through its parent packages."""
    found = forbidden_imports(module)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_core_imports_no_cli_emulator_ledger_store_or_runner(module: str) -> None:
    """The pure core builds on nothing that does I/O: not the CLI, the emulator, the ledger's
    stores or the runner."""

    def outside_core(name: str) -> bool:
        return (
            is_cli(name)
            or within(name, "fanout.emulator")
            or is_ledger_store(name)
            or within(name, "fanout.runner")
        )

    found = offenders(module, outside_core)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", [m for m in all_modules() if within(m, "fanout.emulator")])
def test_emulator_shares_only_signing_and_the_clock(module: str) -> None:
    """The emulator imports from fanout only its own modules, the pure signing code and the
    clock (and the packages above them), so it cannot drift with the client it checks."""
    allowed = {*PLUMBING, "fanout.aliyun", "fanout.aliyun.signing", "fanout.clock"}

    def foreign(name: str) -> bool:
        return (
            within(name, "fanout") and not within(name, "fanout.emulator") and name not in allowed
        )

    found = offenders(module, foreign)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", [m for m in all_modules() if within(m, "fanout.aliyun")])
def test_aliyun_builds_only_on_errors_and_the_clock(module: str) -> None:
    """The API package imports from fanout only its own modules, the error tree and the clock."""
    allowed = {*PLUMBING, "fanout.errors", "fanout.clock"}

    def foreign(name: str) -> bool:
        return within(name, "fanout") and not within(name, "fanout.aliyun") and name not in allowed

    found = offenders(module, foreign)
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", RUNNER_SIDE)
def test_runner_side_imports_no_view(module: str) -> None:
    """What drives a run emits events or returns data; it loads no view (live progress, CLI,
    report), not even through another module."""
    assert module_file(module) is not None
    found = offenders(module, is_view)
    assert not found, "\n" + "\n".join(found)


def import_graph() -> dict[str, dict[str, Import]]:
    """module -> {imported fanout module: the first statement importing it}."""
    graph: dict[str, dict[str, Import]] = {}
    for name in all_modules():
        edges: dict[str, Import] = {}
        for imp in imports_of(name):
            if module_file(imp.target) is not None and imp.target != name:
                edges.setdefault(imp.target, imp)
        graph[name] = edges
    return graph


def reachable(graph: dict[str, dict[str, Import]], start: str) -> set[str]:
    """Every module reached from `start` by one import or more (`start` itself if on a cycle)."""
    found: set[str] = set()
    todo = list(graph.get(start, {}))
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, {}))
    return found


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The groups of modules that import each other, in a circle (each sorted)."""
    reach = {node: reachable(graph, node) for node in graph}
    groups: list[list[str]] = []
    for node in sorted(graph):
        if node in reach[node] and not any(node in group for group in groups):
            groups.append(sorted(m for m in reach[node] if node in reach[m]))
    return groups


def _path_within(graph: dict[str, dict[str, Import]], group: list[str]) -> list[str]:
    """A shortest way from the group's first module back to itself inside the group."""
    start = group[0]
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node]):
            if nxt == start:
                return [*paths[node], start]
            if nxt in group and nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                todo.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - `cycles` found one


def describe(graph: dict[str, dict[str, Import]], group: list[str]) -> str:
    """A cycle: its modules, one way round, and every import between them with file and line."""
    lines = [
        f"import cycle among {', '.join(group)}",
        "  for example " + " -> ".join(_path_within(graph, group)),
    ]
    for here in group:
        lines += [
            f"  {imp.where(here)} imports {there}"
            for there, imp in sorted(graph[here].items())
            if there in group
        ]
    return "\n".join(lines)


def test_no_import_cycles() -> None:
    """No fanout module imports itself back through others, at module level or in a function."""
    graph = import_graph()
    found = [describe(graph, group) for group in cycles(graph)]
    assert not found, "\n" + "\n".join(found)


@pytest.mark.parametrize("module", RUNTIME_PURE)
def test_fresh_interpreter_loads_no_io_library(module: str) -> None:
    """Importing a pure stage in a new interpreter leaves aiohttp, anyio, asyncio and sqlite3
    unloaded: purity is a run-time fact, not only a property of the source."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout)
    found = [m for m in loaded if any(within(m, bad) for bad in RUNTIME_FORBIDDEN)]
    assert not found, f"import {module} loaded: {', '.join(found)}"


@pytest.mark.parametrize("package", ["fanout", "fanout.aliyun", "fanout.ledger"])
def test_lazy_package_names_resolve(package: str) -> None:
    """A package that loads its names lazily lists each in `__all__` and each one loads."""
    exports = lazy_exports(package)
    module = importlib.import_module(package)
    assert sorted(module.__all__) == sorted(exports)
    for name in module.__all__:
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError):
        _ = module.no_such_name


def test_the_checker_sees_io_parents_lazy_names_and_cycles() -> None:
    """The walk finds a real I/O import, runs parent packages, follows a lazily exported name to
    its module and reports a cycle with its lines, so an empty result above means something."""
    assert any(c.endswith(" -> sqlite3") for c in forbidden_imports("fanout.ledger.sqlite"))
    assert {"fanout", "fanout.aliyun"} <= set(loaded_by("fanout.aliyun.signing"))
    assert "fanout.ledger.store" in loaded_by(
        "fanout.runner"
    )  # `from fanout.ledger import LedgerStore`
    graph = {
        "fanout.a": {"fanout.b": Import("fanout.b", 3, deferred=False)},
        "fanout.b": {"fanout.a": Import("fanout.a", 7, deferred=True)},
        "fanout.c": {"fanout.a": Import("fanout.a", 1, deferred=False)},
    }
    assert [describe(graph, group) for group in cycles(graph)] == [
        "import cycle among fanout.a, fanout.b\n"
        "  for example fanout.a -> fanout.b -> fanout.a\n"
        "  fanout.a:3 imports fanout.b\n"
        "  fanout.b:7 (in a function) imports fanout.a"
    ]


def test_type_checking_imports_do_not_count() -> None:
    """An import under `if TYPE_CHECKING:` never runs, so it is no edge; one in a function is."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import aiohttp\nelse:\n    import json\n"
        "def f():\n    import sqlite3\n"
    )
    found = [
        (n.module if isinstance(n, ast.ImportFrom) else n.names[0].name, deferred)
        for n, deferred in _statements(tree.body)
    ]
    assert found == [("typing", False), ("json", False), ("sqlite3", True)]


# The simulated-time seam: only these may build a simulated loop and clock (real runs never do).
SIMULATED_TIME_USERS = frozenset({"fanout.simulate", "fanout.simpeer", "fanout.cli.simulate"})


def test_only_simulate_imports_the_simulated_time_seam() -> None:
    """`fanout.simtime` is imported by `fanout simulate` alone, so no real run can reach it."""
    users = {
        name
        for name in all_modules()
        if any(i.target == "fanout.simtime" for i in imports_of(name))
    }
    assert users == SIMULATED_TIME_USERS
