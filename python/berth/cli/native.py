"""Where the native backends' shared libraries are (docs/native.md).

berthd never searches for a framework's library: the CLI, which knows
this Python environment, finds it in the framework's installed wheel and
passes its path in the engine document (``native.onnxruntime``). Only
when some model asks for ``backend: native``, so that serving a model on
the Python path costs nothing here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: document key -> (package, glob under the package folder)
_LIBRARIES = {
    "onnxruntime": ("onnxruntime", "capi/libonnxruntime.so*"),
    "lightgbm": ("lightgbm", "lib/lib_lightgbm.so"),
    "xgboost": ("xgboost", "lib/libxgboost.so"),
}
#: model entry runtime -> the document key of its native backend's library
_RUNTIMES = {"onnx": "onnxruntime", "lightgbm": "lightgbm", "xgboost": "xgboost"}


def find_library(key: str) -> str | None:
    """The shared library of native backend ``key`` in this environment's
    wheel, or None when the package is not installed (the package is
    located, not imported)."""
    package, pattern = _LIBRARIES[key]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob(pattern))
        if found:
            return str(found[-1])
    return None


def add_native_libraries(doc: dict[str, Any], models: Iterable[Mapping[str, Any]]) -> None:
    """Sets ``native.<key>`` in doc for the libraries that native models
    need, unless the document names them already."""
    keys = {_RUNTIMES.get(m.get("runtime")) for m in models if m.get("backend") == "native"}
    keys.discard(None)
    if not keys:
        return
    native = doc.setdefault("native", {})
    for key in sorted(keys):
        if native.get(key) is None:
            path = find_library(key)
            if path is not None:
                native[key] = path
