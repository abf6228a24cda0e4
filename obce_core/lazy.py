"""A package's public names, imported from their modules on first use (PEP 562).

``python -m obce_core --help`` imports each subpackage's ``cli`` module, and so the package's
``__init__``; an ``__init__`` that imported its modules would load torch, transformers and pandas
(seconds) before any argument is read. A package ``__init__`` instead lists its names per module
in a literal ``_EXPORTS`` dict (``tests/test_import_graph.py`` reads it as the package's imports)
and hands it to ``lazy_exports``:

    _EXPORTS = {"obce_core.pruning.plan": ("PruningPlan", "SCORERS"), ...}
    __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

``package.Name`` and ``from package import Name`` then import the defining module on first use;
``package.submodule`` imports the submodule, as an eager ``__init__`` made it available before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: each name in ``exports`` from its module, on first use."""
    home = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name in home:
            value = getattr(importlib.import_module(home[name]), name)
            setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
            return value
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(home))

    return __getattr__, __dir__
