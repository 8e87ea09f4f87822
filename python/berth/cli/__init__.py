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
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import __version__, gateway_cli, route_cli
from .. import build as build_cli
from .. import deploy as deploy_cli
from ..errors import BerthError, ConfigError
from .discovery import discover_models, served_roots
from .document import build_document, document_for
from .launch import exposure_warning, find_berthd, serve
from .options import (
    _OPTIONS,
    DEFAULT_DRAIN_TIMEOUT_S,
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_LOG_LEVEL,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    _argparse_type,
    _parse_bool,
)

__all__ = [
    "DEFAULT_DRAIN_TIMEOUT_S",
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_LOG_LEVEL",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PORT",
    "build_document",
    "discover_models",
    "document_for",
    "exposure_warning",
    "find_berthd",
    "main",
    "parse_args",
    "serve",
    "served_roots",
]

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
        if option.flag == "--exit-on-error":  # Triton's spelling takes a value too
            serve.add_argument(
                option.flag, nargs="?", const=True, type=_argparse_type(option),
                default=None, metavar="BOOL", help=help_text,
            )
            serve.add_argument(
                "--no-exit-on-error", dest="exit_on_error", action="store_const", const=False,
                help="same as --exit-on-error=false",
            )
        elif option.parse is _parse_bool:
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
    _add_ray_parsers(commands, serve)  # --ray, berth status, berth ray (docs/ray.md)
    route_cli.add_parser(commands)
    build_cli.add_parser(commands)
    deploy_cli.add_parser(commands)
    gateway_cli.add_parser(commands)
    return parser


def _add_ray_parsers(commands: Any, serve: argparse.ArgumentParser) -> None:
    """``berth serve --ray``, ``berth status`` and ``berth ray update|scale``
    (docs/ray.md)."""
    from ..scaleout.cli import add_cluster_flags

    status = commands.add_parser(
        "status", help="replicas of an app served on Ray: per node, their load and health"
    )
    add_cluster_flags(status)
    status.add_argument("--config", default=None, metavar="FILE",
                        help="the app's berth.yaml (for its ray: block)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    ray_cmd = commands.add_parser("ray", help="manage an app served with berth serve --ray")
    actions = ray_cmd.add_subparsers(dest="ray_command", metavar="ACTION", required=True)
    update = actions.add_parser(
        "update",
        parents=[serve],  # PATH and every flag of serve (its -h too) build the new document
        add_help=False,
        help="roll a new model version or config out, one replica at a time",
        description="Builds the document as `berth serve` would from PATH, --config and "
        "flags, and replaces the app's replicas one at a time: start new, wait until ready, "
        "add it to the gateway, take an old one out, let it drain, stop it.",
    )
    add_cluster_flags(update)
    update.add_argument("--wait", action="store_true", help="return when the update is done")
    update.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                        help="with --wait: fail after this long (default 600)")
    scale = actions.add_parser("scale", help="set a fixed number of replicas")
    scale.add_argument("--replicas", type=int, required=True, metavar="N")
    scale.add_argument("--config", default=None, metavar="FILE")
    add_cluster_flags(scale)
    scale.add_argument("--wait", action="store_true", help="return when they serve")
    scale.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS")
    serve.add_argument(  # after update copied serve's flags: update has its own --ray
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS",
        help="serve on a Ray cluster: replicas as Ray actors behind a gateway here "
        "(ADDRESS default: ray.address in --config, BERTH_RAY_ADDRESS, else auto; docs/ray.md)",
    )


def _run_ray(ns: argparse.Namespace) -> int:
    from ..scaleout import cli as ray_cli

    if ns.command == "status":
        return ray_cli.run_status(ns)
    if ns.ray_command == "update":
        doc = document_for(ns, os.environ)
        if ns.print_config:  # the document the replicas would get
            print(json.dumps(doc, indent=2, ensure_ascii=False))
            return 0
        return ray_cli.run_update(ns, doc)
    return ray_cli.run_scale(ns)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (``sys.argv[1:]`` by default)."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``berth`` command; returns the exit status."""
    try:
        ns = parse_args(argv)  # a bound check may ask berthd for its limits
        if ns.command in ("status", "ray"):  # docs/ray.md
            return _run_ray(ns)
        if ns.command == "serve":
            return serve(ns, os.environ)
        if ns.command == "route":
            return route_cli.run(ns, os.environ)
        if ns.command == "build":
            return build_cli.run(ns, os.environ)
        if ns.command == "deploy":
            return deploy_cli.run(ns, os.environ)
        if ns.command == "gateway":
            return gateway_cli.run(ns, os.environ)
        raise ConfigError(f"unknown command {ns.command!r}")  # argparse refuses it first
    except BerthError as e:
        print(f"berth: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"berth: error: {e}", file=sys.stderr)
        return 1
