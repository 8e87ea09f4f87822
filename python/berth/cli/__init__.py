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
import os
import sys
from collections.abc import Sequence

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
    route_cli.add_parser(commands)
    build_cli.add_parser(commands)
    deploy_cli.add_parser(commands)
    gateway_cli.add_parser(commands)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (``sys.argv[1:]`` by default)."""
    return _parser().parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``berth`` command; returns the exit status."""
    try:
        ns = parse_args(argv)  # a bound check may ask berthd for its limits
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
