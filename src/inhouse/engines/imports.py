"""First imports of the model libraries, one thread at a time. transformers replaces its module with a lazy one
while it imports, and a second thread importing it meanwhile can get a half-built module ("cannot import name
'AutoModel' from 'transformers'"); the worker's warm-up and a first request's model load did exactly that."""

from __future__ import annotations

import importlib
import threading

_LOCK = threading.Lock()
_done: set[str] = set()
# Lazy attributes resolved under the lock too: resolving one imports a submodule, the same race again.
_RESOLVE = {"transformers": ("AutoModel", "AutoTokenizer", "AutoModelForCausalLM")}


def import_libraries(*names: str) -> None:
    """Import `names` (and the lazy attributes other libraries import from them) unless done; a library that is
    not installed is skipped, so the loader that needs it raises its own error."""
    if all(name in _done for name in names):
        return
    with _LOCK:
        for name in names:
            if name in _done:
                continue
            try:
                module = importlib.import_module(name)
                for attr in _RESOLVE.get(name, ()):
                    getattr(module, attr)
            except ImportError:
                continue
            _done.add(name)
