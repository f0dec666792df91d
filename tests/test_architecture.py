"""The pure core imports no I/O library, directly or through other fanout modules (STYLE 2)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import fanout

PACKAGE_ROOT = Path(fanout.__file__).parent

# The modules that take data and return data. Listed explicitly: a module that moves or is
# split must be added here by hand, not silently dropped.
PURE_MODULES = (
    "fanout.targets",
    "fanout.plan",
    "fanout.redaction",
    "fanout.report",
    "fanout.aliyun.signing",
    "fanout.aliyun.wire",
    "fanout.aliyun.endpoints",
)

# Network, files and processes, clocks, event loops, the environment, logging with side effects.
FORBIDDEN = (
    "aiohttp",
    "sqlite3",
    "socket",
    "asyncio",
    "anyio",
    "os",
    "time",
    "subprocess",
    "structlog",
    "urllib.request",
)


def module_file(name: str) -> Path | None:
    """The source file of a fanout module (`pkg/__init__.py` for a package), or None."""
    if name != "fanout" and not name.startswith("fanout."):
        return None
    parts = name.split(".")[1:]
    candidate = PACKAGE_ROOT.joinpath(*parts)
    if candidate.with_suffix(".py").is_file():
        return candidate.with_suffix(".py")
    if (candidate / "__init__.py").is_file():
        return candidate / "__init__.py"
    return None


def imported_names(name: str, path: Path) -> set[str]:
    """Every module named by an import statement in `path` (relative ones made absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names.add(base)
            # `from fanout import plan` imports the submodule fanout.plan
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(root: str) -> list[str]:
    """`chain -> forbidden module` for every I/O import reachable from `root` through fanout."""
    found: list[str] = []
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(root, (root,))]
    while todo:
        name, chain = todo.pop()
        path = module_file(name)
        if path is None or name in seen:
            continue
        seen.add(name)
        for imported in sorted(imported_names(name, path)):
            if any(imported == bad or imported.startswith(bad + ".") for bad in FORBIDDEN):
                found.append(" -> ".join((*chain, imported)))
            elif module_file(imported) is not None and imported not in seen:
                todo.append((imported, (*chain, imported)))
    return found


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_exists(module: str) -> None:
    """Every module listed as pure is present (a rename must update the list)."""
    assert module_file(module) is not None


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io_library(module: str) -> None:
    """A pure module reaches no network, file, clock, event-loop or logging library."""
    assert forbidden_imports(module) == []


def test_the_checker_sees_forbidden_imports() -> None:
    """The walk finds a real I/O import, so an empty result above means something."""
    assert any(chain.endswith(" -> sqlite3") for chain in forbidden_imports("fanout.ledger.sqlite"))
