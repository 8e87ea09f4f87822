"""Which runtime serves a file or folder (standard library only).

Used by the ``berth`` command to build the engine document and by runtimes
whose ``path`` is a folder.

Most models are one file, recognised by its extension (the framework
table, ``berth/frameworks.py``, lists them). Some frameworks save
a folder (a *bundle*): a TensorFlow SavedModel (``saved_model.pb``), an MLflow
model (``MLmodel``) and a Hugging Face model (``config.json`` with weights, or
a sentence-transformers ``modules.json``). A bundle's files are its parts, not
models of their own; only a custom ``model.py`` next to them wins over it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError, ModelLoadError
from ..frameworks import FRAMEWORKS

__all__ = [
    "BUNDLE_FILES",
    "EXTENSIONS",
    "FOLDER_RUNTIMES",
    "bundle_runtime",
    "RUNTIMES",
    "choose_model_file",
    "find_model_files",
    "resolve_model_path",
    "runtime_for_file",
]

#: Runtime names the engine document accepts.
RUNTIMES: tuple[str, ...] = tuple(f.runtime for f in FRAMEWORKS)

#: File extension -> runtime. ``.json`` must hold an XGBoost model (a
#: ``learner`` key) and ``.txt`` a LightGBM model to count.
EXTENSIONS: dict[str, str] = {s: f.runtime for f in FRAMEWORKS for s in f.suffixes}

#: Files that name a bundle: the runtime serves their folder.
BUNDLE_FILES: dict[str, str] = {n: f.runtime for f in FRAMEWORKS for n in f.bundle_files}

#: Runtimes whose model may be a folder.
FOLDER_RUNTIMES = frozenset(f.runtime for f in FRAMEWORKS if f.folder)

#: Sub-folders of a model folder that hold a SavedModel (Triton's layout:
#: ``<model>/<version>/model.savedmodel/``).
SAVEDMODEL_SUFFIX = ".savedmodel"

#: Weight files of a Hugging Face model folder.
HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)

#: In a folder, the custom-model file; it wins over other model files there
#: (a custom model usually loads its own artefacts).
PYTHON_MODEL_FILE = "model.py"

_HEAD_BYTES = 65536
_FULL_JSON_LIMIT = 64 << 20


def supported_extensions() -> str:
    """Human list of the extensions Berth recognises."""
    return ", ".join(f"{ext} ({rt})" for ext, rt in EXTENSIONS.items())


_BUNDLES_TEXT = (
    "folders: a TensorFlow SavedModel (saved_model.pb), an MLflow model (MLmodel), "
    "a Hugging Face model (config.json and model.safetensors)"
)


def is_sentence_transformers(folder: Path) -> bool:
    """True when a folder was saved by sentence-transformers: it has
    ``config_sentence_transformers.json``, or a ``modules.json`` naming
    sentence-transformers modules."""
    if (folder / "config_sentence_transformers.json").is_file():
        return True
    try:
        return b"sentence_transformers." in _head(folder / "modules.json")
    except OSError:
        return False


def _is_hf_config(path: Path) -> bool:
    try:
        if path.stat().st_size > _FULL_JSON_LIMIT:
            return False
        with path.open("rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and ("model_type" in doc or "architectures" in doc)


def _is_causal_lm(path: Path) -> bool:
    """A Hugging Face config of a generative model (``*ForCausalLM``,
    ``*LMHeadModel``) with a tokenizer beside it: served by ``llm``."""
    try:
        with path.open("rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    archs = doc.get("architectures") if isinstance(doc, dict) else None
    causal = isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs
    )
    tokenizer = any(
        (path.parent / t).is_file() for t in ("tokenizer.json", "tokenizer_config.json")
    )
    return causal and tokenizer


def bundle_runtime(folder: Path) -> str | None:
    """The runtime of a folder that is itself a model (a bundle), or ``None``."""
    for name, runtime in BUNDLE_FILES.items():
        if (folder / name).is_file():
            return runtime
    if is_sentence_transformers(folder):
        return "transformers"
    if (folder / "config.json").is_file():
        has_weights = any((folder / w).is_file() for w in HF_WEIGHTS)
        if has_weights and _is_hf_config(folder / "config.json"):
            return "llm" if _is_causal_lm(folder / "config.json") else "transformers"
    return None


def bundle_folder(path: Path) -> Path:
    """The folder of a bundle named by one of its marker files
    (``.../saved_model.pb`` -> ``...``); other paths unchanged."""
    if path.is_file() and path.name in BUNDLE_FILES:
        return path.parent
    return path


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
    runtime = EXTENSIONS.get(ext) or BUNDLE_FILES.get(path.name)
    reason = ""
    if runtime is None:
        reason = f"unknown model file extension {ext or '(none)'!r}"
    elif ext == ".json" and not looks_like_xgboost_json(path):
        runtime, reason = None, "a .json file that is not an XGBoost model (no 'learner' key)"
    elif ext == ".txt" and not looks_like_lightgbm(path):
        runtime, reason = None, "a .txt file that is not a LightGBM model"
    if runtime is None and strict:
        raise ConfigError(
            f"{path}: {reason}. Berth detects {supported_extensions()} and {_BUNDLES_TEXT}; "
            f"force one with --runtime {{{','.join(RUNTIMES)}}} "
            "(or runtime: in berth.yaml)"
        )
    return runtime


def find_model_files(folder: Path) -> list[tuple[Path, str]]:
    """Models directly inside a folder, with their runtimes, sorted by name:
    model files (among ``.py`` files only ``model.py``) and ``*.savedmodel``
    sub-folders; or, when the folder is itself a bundle, the folder (and a
    ``model.py`` beside its files)."""
    found: list[tuple[Path, str]] = []
    bundle = bundle_runtime(folder)
    if bundle is not None:
        python = folder / PYTHON_MODEL_FILE
        if python.is_file():
            found.append((python, "python"))
        return [*found, (folder, bundle)]
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if path.name.endswith(SAVEDMODEL_SUFFIX) and bundle_runtime(path) == "tensorflow":
                found.append((path, "tensorflow"))
            continue
        if not path.is_file():
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
        if not matching and runtime in FOLDER_RUNTIMES and not any(p.is_file() for p, _ in found):
            return folder, runtime  # the runtime reads the folder and says what is missing
        if not matching:
            others = [
                p
                for p in sorted(folder.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name != "berth.yaml"
            ]
            if len(others) == 1:
                return others[0], runtime
            raise ConfigError(
                f"{folder}: no {runtime} model file found (Berth detects "
                f"{supported_extensions()} and {_BUNDLES_TEXT})"
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
            f"in it (custom Python models: model.py), or make it one of the {_BUNDLES_TEXT}"
        )
    names = ", ".join(p.name for p, _ in found)
    raise ConfigError(
        f"{folder}: several model files ({names}); keep one per model version folder, "
        "or say which runtime to use (runtime: in berth.yaml or --runtime)"
    )


def resolve_model_path(path: str | Path, runtime: str) -> Path:
    """The model a model entry's ``path`` names: the path itself, the model
    file (or bundle folder) of that runtime in a folder, or the folder of a
    bundle's marker file (``saved_model.pb``, ``MLmodel``)."""
    p = Path(path)
    if p.is_dir():
        return choose_model_file(p, runtime)[0]
    if not p.exists():
        raise ModelLoadError(f"model path {p} does not exist")
    return bundle_folder(p)
