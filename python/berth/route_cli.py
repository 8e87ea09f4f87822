"""``berth route``: list, show and change the traffic routes of a running
server through its admin API (docs/traffic.md)::

    berth route list
    berth route show fraud
    berth route set fraud 1=95 2=5            # versions of the model "fraud"
    berth route set ab fraud:1=50 other=50    # model[:version]=weight
    berth route set fraud --shadow fraud:3@0.5
    berth route set fraud --no-shadow

A bare number before ``=`` is a version of the route's model (the one model
its split names now, else the model named like the route); anything else is
``model`` (its newest ready version) or ``model:version``.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError, ServerRequestError

__all__ = ["add_parser", "parse_shadow", "parse_target", "run"]

DEFAULT_URL = "http://127.0.0.1:8080"


def add_parser(commands: Any) -> None:
    """Adds the ``route`` command to the ``berth`` parser's subcommands."""
    route = commands.add_parser(
        "route",
        help="list, show or change traffic routes of a running server",
        description=(
            "List, show or change the traffic routes of a running server through its admin "
            "API (docs/traffic.md). In TARGET=WEIGHT a bare number is a version of the route's "
            "model; else TARGET is MODEL or MODEL:VERSION."
        ),
    )
    route.add_argument("action", choices=("list", "show", "set"))
    route.add_argument("name", nargs="?", help="the route (show, set)")
    route.add_argument(
        "targets", nargs="*", metavar="TARGET=WEIGHT",
        help="set: the new split, e.g. 1=95 2=5 or model:version=50",
    )
    route.add_argument(
        "--url", default=None,
        help=f"the server's REST address [env BERTH_URL, default {DEFAULT_URL}]",
    )
    route.add_argument("--token", default=None, help="admin bearer token [env BERTH_TOKEN]")
    route.add_argument(
        "--sticky-header", default=None, metavar="HEADER",
        help="set: keep callers with the same HEADER value on one target",
    )
    route.add_argument(
        "--shadow", default=None, metavar="MODEL[:VERSION][@RATE]",
        help="set: mirror requests (RATE 0..1, default 1) to this target",
    )
    route.add_argument("--no-shadow", action="store_true", help="set: stop mirroring")


def parse_target(model: str, spec: str) -> dict[str, Any]:
    """``"2=5"`` -> ``{"model": model, "version": "2", "weight": 5.0}``;
    ``"m:v=w"`` and ``"m=w"`` name another model."""
    left, sep, weight_text = spec.rpartition("=")
    if not sep or not left:
        raise ConfigError(f"target {spec!r}: expected TARGET=WEIGHT, e.g. 1=95 or model:2=5")
    try:
        weight = float(weight_text)
    except ValueError:
        raise ConfigError(f"target {spec!r}: the weight {weight_text!r} is not a number") from None
    if left.isdigit():
        return {"model": model, "version": left, "weight": weight}
    model, colon, version = left.partition(":")
    target: dict[str, Any] = {"model": model, "weight": weight}
    if colon:
        target["version"] = version
    return target


def parse_shadow(spec: str) -> dict[str, Any]:
    """``"m:3@0.5"`` -> ``{"model": "m", "version": "3", "rate": 0.5}``."""
    left, at, rate_text = spec.partition("@")
    model, colon, version = left.partition(":")
    if not model:
        raise ConfigError(f"--shadow {spec!r}: expected MODEL[:VERSION][@RATE]")
    shadow: dict[str, Any] = {"model": model}
    if colon:
        shadow["version"] = version
    if at:
        try:
            shadow["rate"] = float(rate_text)
        except ValueError:
            raise ConfigError(f"--shadow {spec!r}: the rate {rate_text!r} is not a number") from None
    return shadow


def _call(url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    import urllib.error  # here, not at the top: `berth serve` starts without them
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            msg = json.loads(raw).get("error", raw.decode(errors="replace"))
        except ValueError:
            msg = raw.decode(errors="replace")
        raise ServerRequestError(f"{method} {path}: HTTP {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ServerRequestError(
            f"cannot reach the server at {url} ({e}); give its address with --url or BERTH_URL"
        ) from None


def _route_model(url: str, token: str | None, path: str, name: str) -> str:
    """The one model a route's split names now, else the route's name."""
    try:
        current = _call(url, token, "GET", path)
    except ServerRequestError as e:
        if "HTTP 404" in str(e):
            return name
        raise
    models = {t.get("model") for t in current.get("split", [])}
    return str(models.pop()) if len(models) == 1 else name


def run(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Runs ``berth route``; prints the JSON answer."""
    url = ns.url or env.get("BERTH_URL") or DEFAULT_URL
    token = ns.token or env.get("BERTH_TOKEN")
    if ns.action == "list":
        doc = _call(url, token, "GET", "/v2/routes")
    else:
        if not ns.name:
            raise ConfigError(f"berth route {ns.action} needs the route's name")
        path = "/v2/routes/" + urllib.parse.quote(ns.name, safe="")
        if ns.action == "show":
            doc = _call(url, token, "GET", path)
        else:
            change: dict[str, Any] = {}
            if ns.targets:
                model = _route_model(url, token, path, ns.name)
                change["split"] = [parse_target(model, t) for t in ns.targets]
            if ns.sticky_header is not None:
                change["sticky_header"] = ns.sticky_header or None
            if ns.shadow is not None and ns.no_shadow:
                raise ConfigError("give --shadow or --no-shadow, not both")
            if ns.shadow is not None:
                change["shadow"] = parse_shadow(ns.shadow)
            if ns.no_shadow:
                change["shadow"] = None
            if not change:
                raise ConfigError("berth route set: give TARGET=WEIGHT entries, --shadow or --no-shadow")
            doc = _call(url, token, "POST", path, change)
    print(json.dumps(doc, indent=2))
    return 0
