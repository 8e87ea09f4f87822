"""``berth gateway``: runs berthd in gateway mode (docs/gateway.md), a front
door that serves no models and forwards every OIP REST, KServe v1 and gRPC
request to one of its replicas (ordinary ``berth serve`` servers)::

    berth gateway --replica http://127.0.0.1:9001 --replica b=http://127.0.0.1:9002

A replica is ``URL`` (named r0, r1, ... in order) or ``NAME=URL``; URL is
``http://ADDRESS:PORT``, the replica's REST port (which also answers gRPC).
The replica set can be replaced at run time with ``PUT
/v2/gateway/replicas`` (admin token). Like ``berth serve``, the command
builds the engine document and replaces itself with berthd.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from typing import Any

from .cli.launch import _config_fd, _to_json, find_berthd
from .errors import ConfigError

__all__ = ["add_parser", "gateway_document", "parse_replica", "run"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def parse_replica(value: str, index: int) -> dict[str, str]:
    """``URL`` or ``NAME=URL`` as a replicas entry (the engine checks the
    URL itself)."""
    name, sep, url = value.partition("=")
    if not sep:
        name, url = f"r{index}", value
    if not _NAME.match(name):
        raise ConfigError(
            f"--replica {value!r}: the name must be 1-128 characters of [A-Za-z0-9_.-]"
        )
    if not url.startswith("http://"):
        raise ConfigError(
            f"--replica {value!r}: expected http://ADDRESS:PORT (h2c; TLS to replicas is not "
            "supported yet)"
        )
    return {"name": name, "url": url}


def _int(low: int, high: int) -> Any:
    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if not low <= v <= high:
            raise argparse.ArgumentTypeError(f"expected {low}..{high}, got {v}")
        return v

    return parse


def add_parser(commands: Any) -> None:
    """Adds the ``gateway`` command to the ``berth`` parser's subcommands."""
    gw = commands.add_parser(
        "gateway",
        help="forward requests to replicas (gateway mode)",
        description=(
            "Run a gateway: a berthd that serves no models and forwards OIP REST, KServe v1 "
            "and gRPC requests to replicas over HTTP/2, choosing the less loaded of two "
            "(docs/gateway.md)."
        ),
    )
    gw.add_argument(
        "--replica", action="append", default=[], metavar="[NAME=]URL",
        help="a replica's REST address, http://127.0.0.1:PORT (repeatable)",
    )
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on")
    gw.add_argument("--port", type=_int(0, 65535), default=8080, help="REST port (0: free)")
    gw.add_argument("--grpc-port", type=_int(0, 65535), default=8081, help="gRPC port (0: free)")
    gw.add_argument("--health-interval-ms", type=_int(1, 3600000), default=None)
    gw.add_argument("--eject-after-failures", type=_int(1, 1000), default=None)
    gw.add_argument("--eject-for-ms", type=_int(1, 3600000), default=None)
    gw.add_argument("--retries", type=_int(0, 8), default=None)
    gw.add_argument("--connections-per-replica", type=_int(1, 64), default=None)
    gw.add_argument(
        "--allow-remote", action="store_true",
        help="allow replicas beyond loopback (needs --admin-tokens-file)",
    )
    gw.add_argument("--auth-tokens-file", default=None, help="inference bearer tokens")
    gw.add_argument("--admin-tokens-file", default=None, help="admin bearer tokens")
    gw.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None)
    gw.add_argument("--log-format", choices=("json", "text", "auto"), default=None)
    gw.add_argument(
        "--print-config", action="store_true", help="print the engine document (JSON) and exit"
    )


def gateway_document(ns: argparse.Namespace) -> dict[str, Any]:
    """The engine document of ``berth gateway``."""
    replicas = [parse_replica(v, i) for i, v in enumerate(ns.replica)]
    names = [r["name"] for r in replicas]
    if len(set(names)) != len(names):
        raise ConfigError(f"--replica: duplicate names in {names}")
    server: dict[str, Any] = {"host": ns.host, "http_port": ns.port, "grpc_port": ns.grpc_port}
    if ns.auth_tokens_file:
        server["auth_tokens_file"] = ns.auth_tokens_file
    if ns.admin_tokens_file:
        server["admin_tokens_file"] = ns.admin_tokens_file
    gateway: dict[str, Any] = {"replicas": replicas}
    for key in (
        "health_interval_ms", "eject_after_failures", "eject_for_ms", "retries",
        "connections_per_replica",
    ):
        if getattr(ns, key) is not None:
            gateway[key] = getattr(ns, key)
    if ns.allow_remote:
        gateway["allow_remote"] = True
    doc: dict[str, Any] = {"server": server, "gateway": gateway, "models": []}
    log = {k: v for k, v in (("level", ns.log_level), ("format", ns.log_format)) if v}
    if log:
        doc["log"] = log
    return doc


def run(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """``berth gateway``: execs berthd with the document (never returns
    unless printing it)."""
    import os

    doc = gateway_document(ns)
    if ns.print_config:
        print(json.dumps(doc, indent=2))
        return 0
    berthd = find_berthd(env)
    fd = _config_fd(_to_json(doc))
    print(
        f"berth: gateway on http://{ns.host}:{ns.port} (gRPC port {ns.grpc_port}) "
        f"for {len(doc['gateway']['replicas'])} replica(s)",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(berthd, [berthd, "--config-fd", str(fd)])
    return 1  # not reached
