"""``berth serve``'s options: the table of flags and their ``BERTH_*``
variables, the parsers that check their values, and how a flag wins over
its variable (and over OpenTelemetry's standard variables)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..runtimes.detect import RUNTIMES
from .gpus import parse_budget, parse_devices, parse_gpus
from .limits import model_bounds, server_bounds

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

#: Options (dests) that set the model entry key of the same name in every
#: served model, over berth.yaml and --config.
_MODEL_FLAG_KEYS = (
    "instances",
    "max_batch_size",
    "max_queue_delay_us",
    "preferred_batch_sizes",
    "max_queue_size",
    "timeout_us",
    "backend",
    "devices",
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 8081
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_DRAIN_TIMEOUT_S = 30
DEFAULT_LOG_LEVEL = "info"


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
        return _checked_int(value, low, high)

    return parse


def _engine_int(bounds: Callable[[str], tuple[int, int]], key: str) -> Callable[[str], int]:
    """An integer within the engine's bounds on ``key`` (asked of berthd
    when a value is given, not before)."""

    def parse(value: str) -> int:
        return _checked_int(value, *bounds(key))

    return parse


def _network_loops(value: str) -> int | str:
    """``auto`` (one network thread per core) or an integer within the
    engine's bounds on ``server.network_loops``."""
    if value.strip().lower() == "auto":
        return "auto"
    return _checked_int(value, *server_bounds("network_loops"))


def _checked_int(value: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"expected an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"expected an integer {bound}, got {number}")
    return number


def _parse_batch_sizes(value: str) -> list[int]:
    """``4,8,16`` -> ``[4, 8, 16]``: positive sizes, each listed once."""
    sizes: list[int] = []
    low, high = model_bounds("preferred_batch_sizes")
    for part in value.split(","):
        part = part.strip()
        try:
            size = int(part)
        except ValueError:
            raise ValueError(
                f"expected comma-separated batch sizes like 4,8,16, got {value!r}"
            ) from None
        if not low <= size <= high:
            raise ValueError(f"batch sizes must be {low}..{high}, got {size} in {value!r}")
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


# ---- autoscaling and the memory budget (docs/autoscaling.md)

#: Options (dests) that set a key of every served model's ``autoscaling``
#: block, over berth.yaml and --config: dest -> key.
AUTOSCALE_FLAG_KEYS = {
    "min_instances": "min_instances",
    "max_instances": "max_instances",
    "target_ongoing_requests": "target_ongoing_requests",
    "upscale_delay_s": "upscale_delay_s",
    "downscale_delay_s": "downscale_delay_s",
    "scale_to_zero_after_s": "scale_to_zero_after_s",
    "stable_window_s": "stable_window_s",
    "panic_window_s": "panic_window_s",
    "panic_threshold": "panic_threshold",
}

_BYTES = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")


def _parse_bytes(value: str) -> int | str:
    """``2GiB``, ``512MB`` or a plain byte count; the engine reads the same
    forms (memory_budget in docs/configuration.md)."""
    if not _BYTES.match(value):
        raise ValueError(
            f"expected a size in bytes, as an integer or with a unit (512MiB, 2GiB, 1.5GB), "
            f"got {value!r}"
        )
    stripped = value.strip()
    return int(stripped) if stripped.isdigit() else stripped.replace(" ", "")


def _positive_number(value: str) -> float | int:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"expected a number > 0, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"expected a number > 0, got {value!r}")
    return int(number) if number.is_integer() else number


_AUTOSCALE_OPTIONS_HELP = (
    ("--min-instances", _int_in(0, 256), "autoscaling: fewest worker instances; 0 lets an "
     "idle model scale to zero (default 1)", "N"),
    ("--max-instances", _int_in(1, 256), "autoscaling: most worker instances (default: the "
     "cores)", "N"),
    ("--target-ongoing-requests", _positive_number, "autoscaling: requests in flight or "
     "queued per instance that the autoscaler aims at (default 2)", "N"),
    ("--upscale-delay-s", _parse_seconds, "autoscaling: seconds more instances must be "
     "wanted before they start (default 30)", "SECONDS"),
    ("--downscale-delay-s", _parse_seconds, "autoscaling: seconds fewer instances must be "
     "wanted before idle ones stop (default 600)", "SECONDS"),
    ("--scale-to-zero-after-s", _parse_seconds, "autoscaling: idle seconds before the last "
     "instance stops, with --min-instances 0 (default: the downscale delay)", "SECONDS"),
    ("--stable-window-s", _positive_number, "autoscaling: seconds of load averaged for "
     "decisions (default 60)", "SECONDS"),
    ("--panic-window-s", _positive_number, "autoscaling: the short window whose average "
     "triggers panic mode on a burst (default 6)", "SECONDS"),
    ("--panic-threshold", _positive_number, "autoscaling: panic when the short window's load "
     "exceeds this many times the current capacity (default 2.0)", "X"),
)


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
        "--backend",
        "BERTH_BACKEND",
        _choice("python", "native"),
        "where every served model runs: python (worker processes) or native (in the "
        "engine through the framework's C API; ONNX, LightGBM and XGBoost models; docs/native.md) "
        "(default: berth.yaml, else python)",
        "BACKEND",
    ),
    _Option(
        "--max-batch-size",
        "BERTH_MAX_BATCH_SIZE",
        _engine_int(model_bounds, "max_batch_size"),
        "most rows stacked into one model call, for every served model; 0 = never batch "
        "(default: berth.yaml, else the runtime's suggestion)",
        "N",
    ),
    _Option(
        "--max-queue-delay-us",
        "BERTH_MAX_QUEUE_DELAY_US",
        _engine_int(model_bounds, "max_queue_delay_us"),
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
        _engine_int(model_bounds, "max_queue_size"),
        "queued requests per model version beyond which new ones get 429, for every "
        "served model (default: berth.yaml, else 1024)",
        "N",
    ),
    _Option(
        "--timeout-us",
        "BERTH_TIMEOUT_US",
        _engine_int(model_bounds, "timeout_us"),
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
        _engine_int(server_bounds, "header_timeout_ms"),
        "a request head (and a new connection's TLS handshake or HTTP/2 preface) must "
        "arrive within this many milliseconds of its first byte, else 408 and the "
        "connection closes; 0 = no deadline (default 10000)",
        "MS",
    ),
    _Option(
        "--max-connections",
        "BERTH_MAX_CONNECTIONS",
        _engine_int(server_bounds, "max_connections"),
        "open client connections, all listeners together; beyond it new ones are closed "
        "at once (default 1024)",
        "N",
    ),
    _Option(
        "--network-loops",
        "BERTH_NETWORK_LOOPS",
        _network_loops,
        "network threads that accept, read, parse and write connections, or auto "
        "(one per core); handlers stay on the engine loop (default 1; docs/threads.md)",
        "N|auto",
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
        "--write-path",
        "BERTH_WRITE_PATH",
        _choice("direct", "writev", "uring", "auto"),
        "how responses reach the sockets: direct (one write per answer, as produced), "
        "writev (one write per connection per loop turn), uring (one io_uring submit "
        "per loop turn) or auto: uring where the kernel allows it, else writev "
        "(default direct)",
        "PATH",
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
        "--exit-on-error",
        "BERTH_EXIT_ON_ERROR",
        _parse_bool,
        "exit (status 1) when a model fails to load at start, as Triton does (default "
        "true); --no-exit-on-error or --exit-on-error=false keeps serving the other "
        "models with the failed one UNAVAILABLE",
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
    # GPU placement (docs/gpus.md)
    _Option(
        "--gpus",
        "BERTH_GPUS",
        parse_gpus,
        "the machine's GPUs as INDEX[:MEMORY],... (0:80GiB,1:80GiB), or none "
        "(default: nvidia-smi's list when it runs, else none)",
        "GPUS",
    ),
    _Option(
        "--gpu-memory-budget",
        "BERTH_GPU_MEMORY_BUDGET",
        parse_budget,
        "GPU memory instances may need together on each GPU (their models' gpu_memory): "
        "a size (70GiB) or a share of its memory (90%%) for every GPU, or per GPU "
        "(0:70GiB,1:90%%) (default: all of its memory)",
        "SIZE",
    ),
    _Option(
        "--devices",
        "BERTH_DEVICES",
        parse_devices,
        "where every served model's instances run: auto (each on one of the GPUs, "
        "spread; the server's own devices when it knows none), cpu (no GPU), all, "
        "or GPU indices 0,1 (default: berth.yaml, else auto)",
        "DEVICES",
    ),
    *(
        _Option(flag, "BERTH_" + flag.lstrip("-").replace("-", "_").upper(), parse, text, meta)
        for flag, parse, text, meta in _AUTOSCALE_OPTIONS_HELP
    ),
    _Option(
        "--memory-budget",
        "BERTH_MEMORY_BUDGET",
        _parse_bytes,
        "memory the models' workers may hold together (2GiB, 512MB, or bytes); beyond it "
        "the least recently used idle models are evicted and reload on their next request "
        "(default: no budget)",
        "BYTES",
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
