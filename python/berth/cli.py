"""The ``berth`` command.

``berth serve PATH`` builds the engine document (docs/configuration.md) from
the model path, ``berth.yaml`` files, an optional app-level ``--config`` file,
``BERTH_*`` environment variables and flags, then replaces itself with
``berthd``, handing the document over in an inherited in-memory file, so that
the engine owns the signals.

Precedence, lowest first: what Berth detects from the files, ``berth.yaml``
files, the ``--config`` file, environment variables, flags.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, route_cli
from . import build as build_cli
from . import deploy as deploy_cli
from .errors import BerthError, ConfigError, EngineNotFoundError
from .runtimes.detect import (
    BUNDLE_FILES,
    RUNTIMES,
    choose_model_file,
    find_model_files,
    runtime_for_file,
)

__all__ = [
    "build_document",
    "discover_models",
    "document_for",
    "exposure_warning",
    "find_berthd",
    "main",
    "parse_args",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
#: Keys a berth.yaml next to a model may hold (a model entry's keys less
#: name, version and path, which come from the folders).
MODEL_KEYS = frozenset(
    {
        "runtime",
        "platform",
        "class",
        "instances",
        "max_batch_size",
        "max_queue_delay_us",
        "max_queue_size",
        "preferred_batch_sizes",
        "timeout_us",
        "inputs",
        "outputs",
        "parameters",
        "payload_log",
        "sequence_batching",
    }
)
#: Options (dests) that set the model entry key of the same name in every
#: served model, over berth.yaml and --config.
_MODEL_FLAG_KEYS = (
    "instances",
    "max_batch_size",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "max_queue_size",
    "timeout_us",
)
_FOLDER_KEYS = frozenset({"name", "version", "path"})
_MODEL_YAML = "berth.yaml"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 8081
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_DRAIN_TIMEOUT_S = 30
DEFAULT_LOG_LEVEL = "info"
#: The engine's bounds on a model entry's batching keys (engine/src/core/config.c).
_MAX_BATCH_ROWS = 1048576
_MAX_QUEUE_DELAY_US = 60_000_000
_MAX_QUEUE_SIZE = 1_000_000
_MAX_TIMEOUT_US = 3_600_000_000


# ------------------------------------------------------------------ options


def _parse_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{value!r} is not a valid model name (letters, digits, '_', '.', '-')")
    return value


def _parse_runtime(value: str) -> str:
    if value not in RUNTIMES:
        raise ValueError(f"{value!r} is not a runtime; expected one of {', '.join(RUNTIMES)}")
    return value


def _int_in(low: int, high: int | None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise ValueError(f"expected an integer {bound}, got {number}")
        return number

    return parse


def _parse_batch_sizes(value: str) -> list[int]:
    """``4,8,16`` -> ``[4, 8, 16]``: positive sizes, each listed once."""
    sizes: list[int] = []
    for part in value.split(","):
        part = part.strip()
        try:
            size = int(part)
        except ValueError:
            raise ValueError(
                f"expected comma-separated batch sizes like 4,8,16, got {value!r}"
            ) from None
        if not 1 <= size <= _MAX_BATCH_ROWS:
            raise ValueError(f"batch sizes must be 1..{_MAX_BATCH_ROWS}, got {size} in {value!r}")
        if size in sizes:
            raise ValueError(f"batch size {size} is listed twice in {value!r}")
        sizes.append(size)
    return sizes


def _parse_seconds(value: str) -> float | int:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ValueError(f"expected a number of seconds >= 0, got {value!r}")
    return int(number) if number.is_integer() else number


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value.lower()

    return parse


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _abs_path(value: str) -> str:
    if not value:
        raise ValueError("expected a file path")
    return os.path.abspath(value)


def _parse_otlp_url(value: str) -> str:
    if not value.startswith("http://") or len(value) <= len("http://"):
        raise ValueError(
            f"expected an http://host:port OTLP/HTTP endpoint, got {value!r} "
            "(only plain http is spoken; put a collector next to Berth for TLS)"
        )
    return value


def _parse_fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number from 0 to 1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"expected a number from 0 to 1, got {value!r}")
    return number


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_ORIGIN = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(:[0-9]{1,5})?$"
)
_HOST_NAME = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def _parse_origins(value: str) -> list[str]:
    origins = _comma_list(value)
    for origin in origins:
        if origin not in ("*", "null") and not _ORIGIN.match(origin):
            raise ValueError(
                f"{origin!r} is not an origin: write scheme://host[:port] as a browser "
                "sends it, without a path or a trailing slash (https://app.example), or *"
            )
    return origins


def _parse_hosts(value: str) -> list[str]:
    hosts = _comma_list(value)
    for host in hosts:
        if not _HOST_NAME.match(host):
            raise ValueError(
                f"{host!r} is not a host name: write a name (berth.example.com), "
                "*.example.com for its subdomains, or * for any, without a scheme or path"
            )
    return hosts


@dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


_OPTIONS: tuple[_Option, ...] = (
    _Option(
        "--name",
        "BERTH_NAME",
        _parse_name,
        "model name when serving one model (default: the file or folder name)",
        "NAME",
    ),
    _Option(
        "--runtime",
        "BERTH_RUNTIME",
        _parse_runtime,
        f"force the runtime ({', '.join(RUNTIMES)}; default: detected)",
        "RUNTIME",
    ),
    _Option("--host", "BERTH_HOST", str, f"address to listen on (default {DEFAULT_HOST})", "HOST"),
    _Option(
        "--port",
        "BERTH_PORT",
        _int_in(0, 65535),
        f"REST port; 0 picks a free one (default {DEFAULT_PORT})",
        "PORT",
    ),
    _Option(
        "--grpc-port",
        "BERTH_GRPC_PORT",
        _int_in(0, 65535),
        f"gRPC port (OIP GRPCInferenceService); 0 picks a free one (default {DEFAULT_GRPC_PORT})",
        "PORT",
    ),
    _Option(
        "--metrics-port",
        "BERTH_METRICS_PORT",
        _int_in(0, 65535),
        "also serve GET /metrics (Prometheus) on this port; 0 = only on the REST port (default 0)",
        "PORT",
    ),
    _Option(
        "--instances",
        "BERTH_INSTANCES",
        _int_in(1, None),
        "worker processes per model version (default: cores / 4, at least 1)",
        "N",
    ),
    _Option(
        "--max-batch-size",
        "BERTH_MAX_BATCH_SIZE",
        _int_in(0, _MAX_BATCH_ROWS),
        "most rows stacked into one model call, for every served model; 0 = never batch "
        "(default: berth.yaml, else the runtime's suggestion)",
        "N",
    ),
    _Option(
        "--max-queue-delay-us",
        "BERTH_MAX_QUEUE_DELAY_US",
        _int_in(0, _MAX_QUEUE_DELAY_US),
        "longest a queued request waits for a batch to fill, in microseconds, for every "
        "served model; 0 = never wait (default: berth.yaml, else 1000)",
        "US",
    ),
    _Option(
        "--preferred-batch-sizes",
        "BERTH_PREFERRED_BATCH_SIZES",
        _parse_batch_sizes,
        "batch sizes sent as soon as reached, e.g. 4,8,16, for every served model "
        "(default: berth.yaml, else none)",
        "N,N,...",
    ),
    _Option(
        "--max-queue-size",
        "BERTH_MAX_QUEUE_SIZE",
        _int_in(1, _MAX_QUEUE_SIZE),
        "queued requests per model version beyond which new ones get 429, for every "
        "served model (default: berth.yaml, else 1024)",
        "N",
    ),
    _Option(
        "--timeout-us",
        "BERTH_TIMEOUT_US",
        _int_in(0, _MAX_TIMEOUT_US),
        "default per-request timeout in microseconds, for every served model; 0 = none "
        "(default: berth.yaml, else 0)",
        "US",
    ),
    _Option(
        "--max-body-bytes",
        "BERTH_MAX_BODY_BYTES",
        _int_in(1, None),
        f"request body limit in bytes (default {DEFAULT_MAX_BODY_BYTES})",
        "BYTES",
    ),
    _Option(
        "--header-timeout-ms",
        "BERTH_HEADER_TIMEOUT_MS",
        _int_in(0, 3_600_000),
        "a request head (and a new connection's TLS handshake or HTTP/2 preface) must "
        "arrive within this many milliseconds of its first byte, else 408 and the "
        "connection closes; 0 = no deadline (default 10000)",
        "MS",
    ),
    _Option(
        "--max-connections",
        "BERTH_MAX_CONNECTIONS",
        _int_in(1, 1_000_000),
        "open client connections, all listeners together; beyond it new ones are closed "
        "at once (default 1024)",
        "N",
    ),
    _Option(
        "--socket",
        "BERTH_SOCKET",
        _abs_path,
        "also serve the REST API on this Unix socket, created with mode 0600 "
        "(curl --unix-socket PATH http://localhost/v2)",
        "PATH",
    ),
    _Option(
        "--drain-timeout",
        "BERTH_DRAIN_TIMEOUT",
        _parse_seconds,
        f"seconds in-flight requests may take after SIGTERM (default {DEFAULT_DRAIN_TIMEOUT_S})",
        "SECONDS",
    ),
    _Option(
        "--log-level",
        "BERTH_LOG_LEVEL",
        _choice("debug", "info", "warning", "error"),
        f"debug, info, warning or error (default {DEFAULT_LOG_LEVEL})",
        "LEVEL",
    ),
    _Option(
        "--log-format",
        "BERTH_LOG_FORMAT",
        _choice("json", "text", "auto"),
        "json, text or auto: text on a terminal, else json (default auto)",
        "FORMAT",
    ),
    _Option(
        "--access-log", "BERTH_ACCESS_LOG", _parse_bool, "log one line per request (default off)"
    ),
    _Option(
        "--payload-log",
        "BERTH_PAYLOAD_LOG",
        _abs_path,
        "JSON lines file for sampled requests and answers (models opt in with payload_log.rate)",
        "FILE",
    ),
    _Option(
        "--tls-cert",
        "BERTH_TLS_CERT",
        _abs_path,
        "PEM certificate chain: REST and gRPC then speak TLS only (with --tls-key)",
        "FILE",
    ),
    _Option("--tls-key", "BERTH_TLS_KEY", _abs_path, "PEM private key for --tls-cert", "FILE"),
    _Option(
        "--auth-tokens-file",
        "BERTH_AUTH_TOKENS_FILE",
        _abs_path,
        "file of bearer tokens (one a line) that requests must carry",
        "FILE",
    ),
    _Option(
        "--auth-tokens-env",
        "BERTH_AUTH_TOKENS_ENV",
        str,
        "name of an environment variable holding comma-separated bearer tokens",
        "VAR",
    ),
    _Option(
        "--admin-tokens-file",
        "BERTH_ADMIN_TOKENS_FILE",
        _abs_path,
        "file of admin tokens, needed for repository load/unload (they open everything)",
        "FILE",
    ),
    _Option(
        "--admin-tokens-env",
        "BERTH_ADMIN_TOKENS_ENV",
        str,
        "name of an environment variable holding comma-separated admin tokens",
        "VAR",
    ),
    _Option(
        "--model-control-mode",
        "BERTH_MODEL_CONTROL_MODE",
        _choice("none", "explicit"),
        "none (default): no repository load/unload API; explicit: load and unload "
        "models of the served repositories through the API (docs/security.md)",
        "MODE",
    ),
    _Option(
        "--allowed-hosts",
        "BERTH_ALLOWED_HOSTS",
        _parse_hosts,
        "comma-separated names clients may address this server by (the Host header), "
        "besides IP addresses and localhost: *.example.com for subdomains, * for any "
        "(behind a Kubernetes Service or a proxy); other names get 403, which stops "
        "DNS rebinding (default: none)",
        "NAMES",
    ),
    _Option(
        "--cors-origins",
        "BERTH_CORS_ORIGINS",
        _parse_origins,
        "comma-separated web origins (https://app.example) whose pages may call this "
        "server from a browser; CORS headers and preflights are answered for them, "
        "other origins get 403; * allows any (default: none, only the dashboard's own)",
        "ORIGINS",
    ),
    _Option(
        "--protect-health",
        "BERTH_PROTECT_HEALTH",
        _parse_bool,
        "require a token on the health endpoints too (default: they stay open)",
    ),
    _Option(
        "--otlp-endpoint",
        "BERTH_OTLP_ENDPOINT",
        _parse_otlp_url,
        "turn tracing on: send OpenTelemetry spans to this OTLP/HTTP endpoint "
        "(http://host:4318/v1/traces); OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and "
        "OTEL_EXPORTER_OTLP_ENDPOINT are honoured too (default: tracing off)",
        "URL",
    ),
    _Option(
        "--trace-sample-rate",
        "BERTH_TRACE_SAMPLE_RATE",
        _parse_fraction,
        "share of new traces recorded, 0 to 1; a caller's traceparent decides "
        "for its own requests (default 1)",
        "RATE",
    ),
    _Option(
        "--config",
        "BERTH_CONFIG",
        str,
        "an app-level YAML file whose keys override the built document, or a .py app "
        "file declaring berth.Pipeline objects",
        "FILE",
    ),
)


def _argparse_type(option: _Option) -> Callable[[str], Any]:
    def convert(value: str) -> Any:
        try:
            return option.parse(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = option.dest
    return convert


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="berth",
        description="Serve machine-learning models fast (Open Inference Protocol v2).",
    )
    parser.add_argument("--version", action="version", version=f"berth {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a model file, a model folder or a model repository",
        description=(
            "Serve models. PATH is a model file (iris.joblib, model.onnx, booster.json, "
            "booster.txt, custom.py[:Class]), a folder holding one model's files, or a "
            "model repository <repo>/<model>/<version>/<files> with optional berth.yaml "
            "files. Precedence: flag > environment > --config > berth.yaml > detected."
        ),
    )
    serve.add_argument(
        "path", nargs="?", metavar="PATH", help="what to serve (may be omitted with --config)"
    )
    for option in _OPTIONS:
        help_text = f"{option.help} [env {option.env}]"
        if option.parse is _parse_bool:
            serve.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            serve.add_argument(
                option.flag,
                type=_argparse_type(option),
                default=None,
                metavar=option.metavar,
                help=help_text,
            )
    serve.add_argument(
        "--print-config", action="store_true", help="print the engine document (JSON) and exit"
    )
    route_cli.add_parser(commands)
    build_cli.add_parser(commands)
    deploy_cli.add_parser(commands)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (``sys.argv[1:]`` by default)."""
    return _parser().parse_args(argv)


def _resolve(ns: argparse.Namespace, env: Mapping[str, str]) -> tuple[dict[str, Any], set[str]]:
    """Option values, flag over environment; and the dests given as flags."""
    values: dict[str, Any] = {}
    from_flags: set[str] = set()
    for option in _OPTIONS:
        value = getattr(ns, option.dest, None)
        if value is not None:
            values[option.dest] = value
            from_flags.add(option.dest)
            continue
        raw = env.get(option.env)
        if raw is None or (raw == "" and option.parse is not _parse_bool):
            continue
        try:
            values[option.dest] = option.parse(raw)
        except ValueError as e:
            raise ConfigError(f"{option.env}: {e}") from None
    _resolve_otel_env(values, env)
    return values, from_flags


def _resolve_otel_env(values: dict[str, Any], env: Mapping[str, str]) -> None:
    """OpenTelemetry's standard variables, below Berth's own flag and
    variable: the traces endpoint is used as given, the base endpoint gets
    ``/v1/traces`` appended; ``OTEL_SERVICE_NAME`` names the service;
    ``OTEL_SDK_DISABLED=true`` makes Berth ignore them."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return
    if "otlp_endpoint" not in values:
        url = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        name = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        if not url and env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
            name = "OTEL_EXPORTER_OTLP_ENDPOINT"
            url = env["OTEL_EXPORTER_OTLP_ENDPOINT"].strip().rstrip("/") + "/v1/traces"
        if url:
            try:
                values["otlp_endpoint"] = _parse_otlp_url(url)
            except ValueError as e:
                raise ConfigError(f"{name}: {e}") from None
    service = env.get("OTEL_SERVICE_NAME", "").strip()
    if service and "trace_service_name" not in values:
        values["trace_service_name"] = service


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
    for key in doc:
        if key in _FOLDER_KEYS:
            raise ConfigError(f"{path}: {key!r} comes from the folder names; remove it")
        if key not in MODEL_KEYS:
            raise ConfigError(
                f"{path}: unknown key {key!r} (allowed: {', '.join(sorted(MODEL_KEYS))})"
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
        from .pipeline import load_app_file

        app = load_app_file(config_path)
    else:
        app = _read_yaml(config_path)
    if app is None:
        return doc
    if not isinstance(app, dict):
        raise ConfigError(
            f"{config_path}: expected a mapping (server, log, workers, models, pipelines)"
        )
    app = {k: v for k, v in app.items() if k != "deploy"}  # berth deploy's (docs/deploy.md)
    models = doc["models"]
    if "models" in app:
        models = _app_models(app["models"], models, config_path)
    if "pipelines" in app:  # python: steps become models of their own
        from .pipeline import expand_python_steps

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
        ("tracing", "endpoint"): options.get("otlp_endpoint"),
        ("tracing", "sample_rate"): options.get("trace_sample_rate"),
        ("tracing", "service_name"): options.get("trace_service_name"),
        ("server", "allowed_hosts"): options.get("allowed_hosts"),
        ("server", "cors_origins"): options.get("cors_origins"),
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
    return doc


def find_berthd(env: Mapping[str, str]) -> str:
    """The engine binary: ``BERTH_BERTHD``, else the one installed in the
    package, else ``berthd`` on ``PATH``."""
    explicit = env.get("BERTH_BERTHD")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return os.path.abspath(explicit)
        raise EngineNotFoundError(f"BERTH_BERTHD={explicit} is not an executable file")
    bundled = Path(__file__).resolve().parent / "_bin" / "berthd"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which("berthd")
    if found:
        return found
    raise EngineNotFoundError(
        f"the Berth engine (berthd) was not found: not in BERTH_BERTHD, not at {bundled}, "
        "not on PATH. In a source checkout run `make`; otherwise reinstall berth "
        "(pip install --force-reinstall berth), or set BERTH_BERTHD=/path/to/berthd"
    )


def _to_json(doc: Mapping[str, Any]) -> bytes:
    def refuse(value: Any) -> Any:
        raise ConfigError(
            f"config value {value!r} ({type(value).__name__}) cannot be written as JSON"
        )

    return json.dumps(doc, default=refuse, ensure_ascii=False).encode()


def _config_fd(data: bytes) -> int:
    """An inheritable descriptor positioned at the start of ``data``."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("berth-config", 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    else:  # no memfd (not Linux): a pipe, whose buffer must hold the document
        fd, write_end = os.pipe()
        try:
            if os.write(write_end, data) != len(data):
                raise ConfigError("the config document is too large for a pipe on this system")
        finally:
            os.close(write_end)
    os.set_inheritable(fd, True)
    return fd


def _summary(doc: Mapping[str, Any]) -> str:
    models = doc["models"]
    server = doc.get("server", {})
    host, port = server.get("host", DEFAULT_HOST), server.get("http_port", DEFAULT_PORT)
    shown_host = f"[{host}]" if ":" in str(host) else host
    scheme = "https" if server.get("tls_cert") else "http"
    where = (
        f"{scheme}://{shown_host}:{port}"
        if port
        else f"{scheme}://{shown_host} (the engine picks a free port)"
    )
    grpc_port = server.get("grpc_port", DEFAULT_GRPC_PORT)
    where += f", gRPC on port {grpc_port}" if grpc_port else ", gRPC on a free port"
    if server.get("metrics_port"):
        where += f", metrics on port {server['metrics_port']}"
    if server.get("socket"):
        where += f", REST also on the Unix socket {server['socket']}"
    if port:
        where += f"; dashboard at {scheme}://{shown_host}:{port}/ui"
    if len(models) == 1:
        what = f"{models[0]['name']} ({models[0]['runtime']})"
    else:
        listed = ", ".join(
            f"{m['name']}:{m.get('version', '1')} ({m['runtime']})" for m in models[:6]
        )
        what = f"{len(models)} models: {listed}" + (", …" if len(models) > 6 else "")
    pipelines = [p.get("name") for p in doc.get("pipelines") or [] if isinstance(p, dict)]
    if pipelines:
        what += f" and {len(pipelines)} pipeline{'s' if len(pipelines) > 1 else ''}: " + ", ".join(
            str(n) for n in pipelines[:6]
        ) + (", …" if len(pipelines) > 6 else "")
    return f"berth: serving {what} on {where}"


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(doc: Mapping[str, Any]) -> str | None:
    """The warning ``berth serve`` prints when the server listens beyond this
    machine without bearer tokens, or ``None``."""
    server = doc.get("server", {})
    host = str(server.get("host", DEFAULT_HOST))
    tokens = any(
        server.get(key)
        for key in ("auth_tokens_file", "auth_tokens_env", "admin_tokens_file", "admin_tokens_env")
    )
    if _loopback(host) or tokens:
        return None
    port = server.get("http_port", DEFAULT_PORT) or "(a free port)"
    grpc = server.get("grpc_port", DEFAULT_GRPC_PORT) or "(a free port)"
    mode = server.get("model_control_mode")
    loading = (
        f"and load or unload models through the repository API (model control mode {mode})"
        if mode and mode != "none"
        else "and, if the repository API is enabled (--model-control-mode), load models"
    )
    where = "every address of this machine" if host in ("0.0.0.0", "::") else host
    return (
        f"berth: warning: listening on {where} (port {port}, gRPC {grpc}) without auth "
        f"tokens: anyone who can reach these ports can run inference on every served model "
        f"{loading}. Set tokens (--auth-tokens-file, --admin-tokens-file), TLS "
        "(--tls-cert, --tls-key) and a firewall, or listen on 127.0.0.1; see docs/security.md"
    )


def document_for(
    ns: argparse.Namespace, env: Mapping[str, str], *, terminal: bool = False
) -> dict[str, Any]:
    """The engine document for parsed ``berth serve`` arguments and an environment."""
    options, from_flags = _resolve(ns, env)
    return build_document(ns.path, options, from_flags=from_flags, terminal=terminal)


def serve(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``berth serve``: builds the document, then execs berthd (never returns
    unless printing the config)."""
    doc = document_for(ns, env, terminal=sys.stderr.isatty())
    data = _to_json(doc)
    if ns.print_config:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    berthd = find_berthd(env)
    log = doc.get("log", {})
    # Workers inherit the engine's environment: tell them how to log.
    os.environ["BERTH_LOG_LEVEL"] = str(log.get("level", DEFAULT_LOG_LEVEL))
    os.environ["BERTH_LOG_FORMAT"] = str(log.get("format", "json"))
    fd = _config_fd(data)
    print(_summary(doc), file=sys.stderr)
    warning = exposure_warning(doc)
    if warning:
        print(warning, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(berthd, [berthd, "--config-fd", str(fd)])
    return 1  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``berth`` command; returns the exit status."""
    ns = parse_args(argv)
    try:
        if ns.command == "serve":
            return serve(ns, os.environ)
        if ns.command == "route":
            return route_cli.run(ns, os.environ)
        if ns.command == "build":
            return build_cli.run(ns, os.environ)
        if ns.command == "deploy":
            return deploy_cli.run(ns, os.environ)
        raise ConfigError(f"unknown command {ns.command!r}")  # argparse refuses it first
    except BerthError as e:
        print(f"berth: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"berth: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
