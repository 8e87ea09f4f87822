"""The engine document (docs/configuration.md) for a PATH and resolved
options: discovered models, an app-level ``--config`` file, then flags and
variables on top."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..runtimes.detect import choose_model_file, runtime_for_file
from .discovery import _abs, _merge, _read_yaml, discover_models, served_roots
from .gpus import gpus_for_document
from .native import add_native_libraries
from .options import (
    _MODEL_FLAG_KEYS,
    AUTOSCALE_FLAG_KEYS,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    _resolve,
)

# ---------------------------------------------------------------- app config


def _app_models(
    models: Any, base_entries: list[dict[str, Any]], config_path: Path
) -> list[dict[str, Any]]:
    if not isinstance(models, list):
        raise ConfigError(f"{config_path}: models: expected a list of model entries")
    entries = [dict(e) for e in base_entries]
    for index, item in enumerate(models):
        where = f"{config_path}: models[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"{where}: expected a mapping with a name")
        version = item.get("version")
        matches = [
            e
            for e in entries
            if e["name"] == item["name"] and (version is None or e["version"] == str(version))
        ]
        item = dict(item)
        if version is not None:
            item["version"] = str(version)
        if "path" in item:
            item["path"] = str(_abs(config_path.parent / Path(str(item["path"])).expanduser()))
        if matches:
            for e in matches:
                e.update(_merge(e, item))
            continue
        if "path" not in item:
            raise ConfigError(f"{where}: model {item['name']!r} is not being served; give its path")
        path = Path(item["path"])
        if "runtime" not in item:
            if path.is_dir():
                resolved, item["runtime"] = choose_model_file(path)
                item["path"] = str(resolved)
            elif path.is_file():
                item["runtime"] = runtime_for_file(path, strict=True)
            else:
                raise ConfigError(f"{where}: path {path} does not exist")
        item.setdefault("version", "1")
        entries.append(item)
    return entries


def _apply_app_config(doc: dict[str, Any], config_file: str) -> dict[str, Any]:
    config_path = _abs(Path(config_file).expanduser())
    if config_path.suffix == ".py":  # berth.Pipeline objects (docs/pipelines.md)
        from ..pipeline import load_app_file

        app = load_app_file(config_path)
    else:
        app = _read_yaml(config_path)
    if app is None:
        return doc
    if not isinstance(app, dict):
        raise ConfigError(
            f"{config_path}: expected a mapping (server, log, workers, models, pipelines)"
        )
    # berth deploy's (docs/deploy.md) and berth serve --ray's (docs/ray.md)
    app = {k: v for k, v in app.items() if k not in ("deploy", "ray")}
    models = doc["models"]
    if "models" in app:
        models = _app_models(app["models"], models, config_path)
    if "pipelines" in app:  # python: steps become models of their own
        from ..pipeline import expand_python_steps

        app = dict(app)
        app["pipelines"], step_models = expand_python_steps(
            app["pipelines"], config_path.parent, str(config_path)
        )
        taken = {m.get("name") for m in models}
        for entry in step_models:
            if entry["name"] in taken:
                raise ConfigError(
                    f"{config_path}: a python: step becomes model {entry['name']!r}, "
                    "which is also the name of a model; rename the step or the model"
                )
        models = models + step_models
    doc = _merge(doc, {k: v for k, v in app.items() if k != "models"})
    doc["models"] = models
    return doc


# ------------------------------------------------------------------ document


def build_document(
    path: str | None,
    options: Mapping[str, Any],
    *,
    from_flags: frozenset[str] | set[str] = frozenset(),
    terminal: bool = False,
) -> dict[str, Any]:
    """The engine document for a PATH (or ``None`` with a ``config`` option)
    and resolved options (``_OPTIONS`` dests -> values)."""
    models: list[dict[str, Any]] = []
    if path is not None:
        models = discover_models(
            path,
            name=options.get("name"),
            runtime=options.get("runtime"),
            name_from_flag="name" in from_flags,
        )
    doc: dict[str, Any] = {
        "server": {
            "host": DEFAULT_HOST,
            "http_port": DEFAULT_PORT,
            "max_body_bytes": DEFAULT_MAX_BODY_BYTES,
            "drain_timeout_s": DEFAULT_DRAIN_TIMEOUT_S,
        },
        "log": {
            "level": DEFAULT_LOG_LEVEL,
            "format": "text" if terminal else "json",
            "access_log": False,
        },
        "workers": {"command": [sys.executable, "-m", "berth.worker"]},
        "models": models,
    }
    if options.get("config"):
        doc = _apply_app_config(doc, options["config"])
    if not doc["models"]:
        raise ConfigError(
            "nothing to serve: give a model PATH, or a --config file that lists models"
        )
    server = doc.setdefault("server", {})
    server["repositories"] = served_roots(path, doc["models"], server.get("repositories"))

    overrides = {
        ("server", "host"): options.get("host"),
        ("server", "http_port"): options.get("port"),
        ("server", "grpc_port"): options.get("grpc_port"),
        ("server", "metrics_port"): options.get("metrics_port"),
        ("server", "max_body_bytes"): options.get("max_body_bytes"),
        ("server", "drain_timeout_s"): options.get("drain_timeout"),
        ("server", "header_timeout_ms"): options.get("header_timeout_ms"),
        ("server", "max_connections"): options.get("max_connections"),
        ("server", "network_loops"): options.get("network_loops"),
        ("server", "socket"): options.get("socket"),
        ("log", "level"): options.get("log_level"),
        ("log", "format"): options.get("log_format"),
        ("log", "access_log"): options.get("access_log"),
        ("log", "payload_log_path"): options.get("payload_log"),
        ("server", "tls_cert"): options.get("tls_cert"),
        ("server", "tls_key"): options.get("tls_key"),
        ("server", "auth_tokens_file"): options.get("auth_tokens_file"),
        ("server", "auth_tokens_env"): options.get("auth_tokens_env"),
        ("server", "admin_tokens_file"): options.get("admin_tokens_file"),
        ("server", "admin_tokens_env"): options.get("admin_tokens_env"),
        ("server", "model_control_mode"): options.get("model_control_mode"),
        ("server", "write_path"): options.get("write_path"),
        ("tracing", "endpoint"): options.get("otlp_endpoint"),
        ("tracing", "sample_rate"): options.get("trace_sample_rate"),
        ("tracing", "service_name"): options.get("trace_service_name"),
        ("server", "allowed_hosts"): options.get("allowed_hosts"),
        ("server", "cors_origins"): options.get("cors_origins"),
        ("server", "exit_on_error"): options.get("exit_on_error"),
        ("server", "health_open"): (
            None if options.get("protect_health") is None else not options["protect_health"]
        ),
    }
    for (section, key), value in overrides.items():
        if value is not None:
            doc.setdefault(section, {})[key] = value
    for key in _MODEL_FLAG_KEYS:
        if options.get(key) is not None:
            for entry in doc["models"]:
                entry[key] = options[key]
    # autoscaling flags (docs/autoscaling.md): keys of every model's block
    for dest, key in AUTOSCALE_FLAG_KEYS.items():
        if options.get(dest) is not None:
            for entry in doc["models"]:
                block = entry.get("autoscaling")
                entry["autoscaling"] = dict(block) if isinstance(block, dict) else {}
                entry["autoscaling"][key] = options[dest]
    if options.get("memory_budget") is not None:
        doc["memory_budget"] = options["memory_budget"]
    add_native_libraries(doc, doc["models"])
    gpus_for_document(doc, dict(options))
    return doc


def document_for(
    ns: argparse.Namespace, env: Mapping[str, str], *, terminal: bool = False
) -> dict[str, Any]:
    """The engine document for parsed ``berth serve`` arguments and an environment."""
    options, from_flags = _resolve(ns, env)
    return build_document(ns.path, options, from_flags=from_flags, terminal=terminal)
