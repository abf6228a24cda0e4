"""Registers obce_bert with transformers' Auto classes when transformers loads them, not before.

README promises that after ``import obce_core`` a saved pruned model (``model_type`` ``obce_bert``)
loads with ``AutoConfig``/``AutoModel``/``AutoModelForSequenceClassification.from_pretrained`` and
``SentenceTransformer``. Registering means importing ``obce_core.obce_bert`` (torch and
transformers' modeling code: seconds), which ``import obce_core`` and ``python -m obce_core --help``
must not pay. So ``install()`` registers at once when transformers' auto modules are already
loaded, and otherwise puts a finder on ``sys.meta_path`` that watches transformers' modules load.
Once ``transformers.models.auto.configuration_auto`` (which defines ``AutoConfig``) or
``transformers.models.auto.modeling_auto`` (``AutoModel*``) is loaded, it imports
``obce_core.obce_bert``, which registers the config and both model classes, and removes itself.

It does so only when the OUTERMOST transformers import in progress in this thread has finished:
``modeling_auto`` is itself imported half-way through modules that obce_bert's modeling code
imports (``transformers.modeling_layers`` imports ``AutoModel``), and importing obce_bert right
after ``modeling_auto`` would meet them half-initialised. The finder only wraps the loader of
``transformers.*`` modules to count that nesting; it finds nothing itself.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import threading
import warnings

__all__ = ["install"]

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODELING_MODULE = "transformers.models.auto.modeling_auto"

# One registration at a time. Never waited for: a thread calls in while its import system still holds
# the lock of the module it just ran, so waiting here for a thread that needs that module would
# deadlock; the thread that holds it registers for everybody.
_lock = threading.Lock()
_done = False
_local = threading.local()  # .depth: transformers modules executing in this thread; .busy: registering now


def _loaded(name: str) -> bool:
    """``name`` is in sys.modules and has finished executing."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    return module is not None and not getattr(spec, "_initializing", False)


def register_loaded() -> None:
    """Register obce_bert once transformers has loaded an auto module, and stop watching."""
    global _done
    if _done or getattr(_local, "busy", False) or not (_loaded(CONFIG_MODULE) or _loaded(MODELING_MODULE)):
        return
    if not _lock.acquire(blocking=False):
        return
    _local.busy = True  # registering imports transformers modules, whose loaders call back here
    try:
        if not _done:
            _uninstall()
            importlib.import_module("obce_core.obce_bert")  # registers the config and both model classes
            _done = True
    except Exception as exc:  # never break the user's own transformers import over it
        _done = True
        warnings.warn(f"obce could not register its obce_bert model type with transformers' Auto classes "
                      f"({exc!r}); `import obce_core.obce_bert` registers it by hand.", RuntimeWarning, stacklevel=2)
    finally:
        _local.busy = False
        _lock.release()


class _CountingLoader(importlib.abc.Loader):
    """Runs a transformers module's own loader, counting nesting; registers after the outermost one."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package ...: the real loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _local.depth = getattr(_local, "depth", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _local.depth -= 1
        if _local.depth == 0:
            register_loaded()


class _TransformersWatcher(importlib.abc.MetaPathFinder):
    """Finds ``transformers.*`` modules with the finders after it and wraps their loaders."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("transformers.") and fullname != "transformers":
            return None
        for finder in list(sys.meta_path):
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _CountingLoader(spec.loader)
                return spec
        return None


_watcher = _TransformersWatcher()


def _uninstall() -> None:
    if _watcher in sys.meta_path:
        sys.meta_path.remove(_watcher)


def install() -> None:
    """Register now if transformers' auto modules are loaded, else watch for them. Idempotent."""
    register_loaded()
    if not _done and _watcher not in sys.meta_path:
        sys.meta_path.insert(0, _watcher)
