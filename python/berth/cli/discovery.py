"""Finding the models a PATH names: a model file, a folder holding one
model's files, a folder of versions or a model repository, with the
``berth.yaml`` files beside them; and the roots a load through the
repository API may name files under."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runtimes.detect import (
    BUNDLE_FILES,
    RUNTIMES,
    choose_model_file,
    find_model_files,
    runtime_for_file,
)
from .limits import FOLDER_KEYS, model_keys
from .options import _NAME

_MODEL_YAML = "berth.yaml"


# ------------------------------------------------------------------ models


def _read_yaml(path: Path) -> Any:
    import yaml

    try:
        with path.open("rb") as f:
            return yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None


def _model_yaml(folder: Path) -> dict[str, Any]:
    path = folder / _MODEL_YAML
    if not path.is_file():
        return {}
    doc = _read_yaml(path)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of model settings")
    if "models" in doc or "server" in doc:
        raise ConfigError(
            f"{path}: looks like an app-level config (it has models/server); "
            "pass it with --config instead"
        )
    allowed = model_keys() if doc else frozenset()
    for key in doc:
        if key in FOLDER_KEYS:
            raise ConfigError(f"{path}: {key!r} comes from the folder names; remove it")
        if key not in allowed:
            raise ConfigError(
                f"{path}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})"
            )
    return doc


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``; mappings merge recursively, the rest replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _checked_name(name: str, source: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"{source}: {name!r} is not a valid model name or version "
            "(letters, digits, '_', '.', '-'); rename it or pass --name"
        )
    return name


def _entry(
    name: str, version: str, folder: Path, settings: dict[str, Any], runtime: str | None
) -> dict[str, Any]:
    """A model entry for a model folder (its files directly inside)."""
    runtime = runtime or settings.get("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        raise ConfigError(
            f"{folder / _MODEL_YAML}: runtime {runtime!r} is not one of {', '.join(RUNTIMES)}"
        )
    path, detected = choose_model_file(folder, runtime)
    entry = {
        "name": name,
        "version": version,
        "runtime": runtime or detected,
        "path": str(_abs(path)),
    }
    entry.update((k, v) for k, v in settings.items() if k != "runtime")
    return entry


def _visible_dirs(folder: Path) -> list[Path]:
    return [
        p
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".") and not p.name.startswith("__")
    ]


def _version_key(path: Path) -> tuple[int, int, str]:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _model_with_versions(
    name: str, model_dir: Path, versions: list[Path], runtime: str | None
) -> list[dict[str, Any]]:
    base = _model_yaml(model_dir)
    entries = []
    for vdir in sorted(versions, key=_version_key):
        version = _checked_name(vdir.name, f"version folder {vdir}")
        entries.append(_entry(name, version, vdir, _merge(base, _model_yaml(vdir)), runtime))
    return entries


def discover_models(
    target: str,
    *,
    name: str | None = None,
    runtime: str | None = None,
    name_from_flag: bool = False,
) -> list[dict[str, Any]]:
    """Model entries for a PATH argument (file, ``file.py:Class``, model
    folder, folder of versions, or repository)."""
    class_name = None
    head, sep, tail = target.rpartition(":")
    if sep and head.endswith(".py") and tail:
        target, class_name = head, tail
    path = _abs(Path(target).expanduser())
    if not path.exists():
        raise ConfigError(f"{target}: no such file or folder")
    if path.is_file() and path.name in BUNDLE_FILES and not class_name:
        path = path.parent  # saved_model.pb, MLmodel: serve the bundle folder

    if path.is_file():
        detected = runtime or runtime_for_file(path, strict=True)
        model_name = name or _checked_name(path.stem, f"model file {path.name}")
        entry: dict[str, Any] = {
            "name": model_name,
            "version": "1",
            "runtime": detected,
            "path": str(path),
        }
        if class_name:
            if detected != "python":
                raise ConfigError(f"{target}: a class name applies to the python runtime only")
            entry["class"] = class_name
        return [entry]
    if class_name:
        raise ConfigError(f"{target}: a class name needs a .py file")

    if find_model_files(path) or (runtime and not _visible_dirs(path)):
        model_name = name or _checked_name(path.name, f"folder {path}")
        return [_entry(model_name, "1", path, _model_yaml(path), runtime)]

    subdirs = _visible_dirs(path)
    if not subdirs:
        raise ConfigError(
            f"{path}: holds no model file and no model folders; put a model file in it "
            "or lay it out as <repo>/<model>/<version>/<files>"
        )
    if all(d.name.isdigit() and find_model_files(d) for d in subdirs):
        model_name = name or _checked_name(path.name, f"folder {path}")
        return _model_with_versions(model_name, path, subdirs, runtime)

    if name and name_from_flag:
        raise ConfigError(f"--name applies to one model, but {path} is a model repository")
    entries: list[dict[str, Any]] = []
    for model_dir in subdirs:
        model_name = _checked_name(model_dir.name, f"model folder {model_dir}")
        versions = _visible_dirs(model_dir)
        if not versions:
            raise ConfigError(
                f"{model_dir}: no version folders; a model repository is laid out as "
                f"<repo>/<model>/<version>/<files>, e.g. {model_dir}/1/model.onnx"
            )
        entries.extend(_model_with_versions(model_name, model_dir, versions, runtime))
    return entries


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def served_roots(
    target: str | None, models: Sequence[Mapping[str, Any]], configured: Any = None
) -> list[str]:
    """``server.repositories``: what ``berth serve`` serves, where a load
    through the repository API may name files. The PATH argument counts
    whole when it is a folder (a model folder, a folder of versions, a
    repository) and alone when it is a file; a model a ``--config`` file
    adds counts by its own path (its folder, or its file alone). Roots a
    ``--config`` file lists under ``server.repositories`` are kept."""
    roots: list[str] = []
    if configured is not None:
        if not isinstance(configured, list) or not all(isinstance(r, str) for r in configured):
            raise ConfigError("server.repositories: expected a list of absolute paths")
        roots.extend(str(_abs(Path(r).expanduser())) for r in configured)
    if target is not None:
        head, sep, tail = target.rpartition(":")
        if sep and head.endswith(".py") and tail:
            target = head
        root = _abs(Path(target).expanduser())
        if root.is_file() and root.name in BUNDLE_FILES:
            root = root.parent
        roots.append(str(root))
    for entry in models:
        path = entry.get("path")
        if isinstance(path, str) and not any(_within(path, r) for r in roots):
            roots.append(str(_abs(Path(path))))
    return list(dict.fromkeys(roots))
