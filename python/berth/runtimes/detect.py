"""Which runtime serves a file or folder (standard library only).

Used by the ``berth`` command to build the engine document and by runtimes
whose ``path`` is a folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, ModelLoadError

__all__ = [
    "EXTENSIONS",
    "RUNTIMES",
    "choose_model_file",
    "find_model_files",
    "resolve_model_path",
    "runtime_for_file",
]

#: Runtime names the engine document accepts.
RUNTIMES: tuple[str, ...] = ("sklearn", "xgboost", "lightgbm", "onnx", "python")

#: File extension -> runtime. ``.json`` must hold an XGBoost model (a
#: ``learner`` key) and ``.txt`` a LightGBM model to count.
EXTENSIONS: dict[str, str] = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".onnx": "onnx",
    ".json": "xgboost",
    ".ubj": "xgboost",
    ".txt": "lightgbm",
    ".py": "python",
}

#: In a folder, the custom-model file; it wins over other model files there
#: (a custom model usually loads its own artefacts).
PYTHON_MODEL_FILE = "model.py"

_HEAD_BYTES = 65536
_FULL_JSON_LIMIT = 64 << 20


def supported_extensions() -> str:
    """Human list of the extensions Berth recognises."""
    return ", ".join(f"{ext} ({rt})" for ext, rt in EXTENSIONS.items())


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(_HEAD_BYTES)


def looks_like_xgboost_json(path: Path) -> bool:
    """True when a JSON file holds an XGBoost model (top-level ``learner``)."""
    try:
        if b'"learner"' in _head(path):
            return True
        if path.stat().st_size > _FULL_JSON_LIMIT:
            return False
        with path.open("rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "learner" in doc


def looks_like_lightgbm(path: Path) -> bool:
    """True when a text file looks like a LightGBM model."""
    try:
        head = _head(path)
    except OSError:
        return False
    return head.startswith(b"tree") or b"version=v" in head


def runtime_for_file(path: Path, *, strict: bool = True) -> str | None:
    """The runtime for a model file, from its extension (and, for ``.json``
    and ``.txt``, its content).

    With ``strict`` a file that is not recognised raises :class:`ConfigError`
    saying which extensions are supported and how to force a runtime;
    otherwise it gives ``None``.
    """
    ext = path.suffix.lower()
    runtime = EXTENSIONS.get(ext)
    reason = ""
    if runtime is None:
        reason = f"unknown model file extension {ext or '(none)'!r}"
    elif ext == ".json" and not looks_like_xgboost_json(path):
        runtime, reason = None, "a .json file that is not an XGBoost model (no 'learner' key)"
    elif ext == ".txt" and not looks_like_lightgbm(path):
        runtime, reason = None, "a .txt file that is not a LightGBM model"
    if runtime is None and strict:
        raise ConfigError(
            f"{path}: {reason}. Berth detects {supported_extensions()}; "
            f"force one with --runtime {{{','.join(RUNTIMES)}}} "
            "(or runtime: in berth.yaml)"
        )
    return runtime


def find_model_files(folder: Path) -> list[tuple[Path, str]]:
    """Model files directly inside a folder, with their runtimes, sorted by
    name. Among ``.py`` files only ``model.py`` counts."""
    found: list[tuple[Path, str]] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix.lower() == ".py" and path.name != PYTHON_MODEL_FILE:
            continue
        runtime = runtime_for_file(path, strict=False)
        if runtime is not None:
            found.append((path, runtime))
    return found


def choose_model_file(folder: Path, runtime: str | None = None) -> tuple[Path, str]:
    """The one model file in a folder and its runtime.

    ``model.py`` wins over other files. With ``runtime`` given, only files of
    that runtime count; if none is recognised, a folder holding exactly one
    file (besides ``berth.yaml``) gives that file.
    """
    found = find_model_files(folder)
    if runtime is not None:
        matching = [(p, r) for p, r in found if r == runtime]
        if not matching:
            others = [
                p
                for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name != "berth.yaml"
            ]
            if len(others) == 1:
                return others[0], runtime
            raise ConfigError(
                f"{folder}: no {runtime} model file found (Berth detects {supported_extensions()})"
            )
        found = matching
    python = [(p, r) for p, r in found if r == "python"]
    if python:
        return python[0]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(
            f"{folder}: no model file found; put one of {supported_extensions()} "
            "in it (custom Python models: model.py)"
        )
    names = ", ".join(p.name for p, _ in found)
    raise ConfigError(
        f"{folder}: several model files ({names}); keep one per model version folder, "
        "or say which runtime to use (runtime: in berth.yaml or --runtime)"
    )


def resolve_model_path(path: str | Path, runtime: str) -> Path:
    """The model file a model entry's ``path`` names: the path itself, or the
    model file of that runtime in a folder."""
    p = Path(path)
    if p.is_dir():
        return choose_model_file(p, runtime)[0]
    if not p.exists():
        raise ModelLoadError(f"model path {p} does not exist")
    return p
