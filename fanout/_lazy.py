"""Public names of a package loaded on first use (PEP 562), for the package `__init__`s.

Importing `fanout.aliyun.signing` runs `fanout/aliyun/__init__.py` first; if that file imported
the HTTP client to re-export it, every pure module of the package would load aiohttp too. So a
package lists its public names as `_EXPORTS = {"Name": "fanout.module", ...}` (read as data by
tests/test_architecture.py) and sets `__getattr__ = lazy_getattr(__name__, _EXPORTS)`; type
checkers see the same names through imports under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` that imports the module defining `name` and returns `name` from it.

    A name not in `exports` raises AttributeError, so `from package import submodule` still
    imports the submodule as usual.
    """

    def load(name: str) -> object:
        """The public `name`, from the module that defines it."""
        module = exports.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(module), name)

    return load
