"""Starting the engine: finding berthd, handing it the document in an
inherited in-memory file, the one-line summary and the exposure warning,
then exec."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EngineNotFoundError
from .document import document_for
from .options import DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_LOG_LEVEL, DEFAULT_PORT


def find_berthd(env: Mapping[str, str]) -> str:
    """The engine binary: ``BERTH_BERTHD``, else the one installed in the
    package, else ``berthd`` on ``PATH``."""
    explicit = env.get("BERTH_BERTHD")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return os.path.abspath(explicit)
        raise EngineNotFoundError(f"BERTH_BERTHD={explicit} is not an executable file")
    bundled = Path(__file__).resolve().parent.parent / "_bin" / "berthd"
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


def serve(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``berth serve``: builds the document, then execs berthd (never returns
    unless printing the config)."""
    doc = document_for(ns, env, terminal=sys.stderr.isatty())
    data = _to_json(doc)
    if ns.print_config:
        print(json.dumps(doc, indent=2, ensure_ascii=False))
        return 0
    if getattr(ns, "ray", None) is not None:  # on a Ray cluster (docs/ray.md)
        from ..scaleout.cli import serve_on_ray, settings_from_config
        from .options import _resolve

        config = _resolve(ns, env)[0].get("config")
        return serve_on_ray(doc, settings_from_config(config), ns.ray or None)
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
