"""The ``ray:`` block of an app-level berth.yaml (docs/ray.md) and the
document each replica serves.

Pure functions: no Ray import, so the CLI can check a file on a machine
without Ray and the unit tests run anywhere.
"""

from __future__ import annotations

import copy
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

#: Keys of the ``ray:`` block.
RAY_KEYS = frozenset(
    {
        "address",
        "namespace",
        "name",
        "replicas",
        "autoscaling",
        "resources",
        "gateway",
        "health_interval_s",
        "ready_timeout_s",
        "drain_timeout_s",
        "replica_host",
    }
)
AUTOSCALING_KEYS = frozenset(
    {
        "min_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "upscale_delay_s",
        "downscale_delay_s",
    }
)
RESOURCE_KEYS = frozenset({"num_cpus", "num_gpus", "memory", "custom"})
GATEWAY_KEYS = frozenset({"enabled", "host", "port", "grpc_port"})

_APP_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Autoscaling:
    """Replica autoscaling (the replicas of the whole app, not workers:
    a model's own ``autoscaling`` block still scales workers inside each
    replica)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 5.0
    downscale_delay_s: float = 30.0


@dataclass(frozen=True)
class Resources:
    """What Ray reserves for each replica (its actor's resources)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes
    custom: Mapping[str, float] = field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments of ``ActorClass.options``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory is not None:
            options["memory"] = self.memory
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


@dataclass(frozen=True)
class RaySettings:
    """The parsed ``ray:`` block (defaults when the file has none)."""

    address: str = "auto"
    namespace: str = "berth"
    name: str = "berth"
    replicas: int = 1
    autoscaling: Autoscaling | None = None
    resources: Resources = field(default_factory=Resources)
    gateway_enabled: bool = True
    gateway_host: str | None = None  # None: the served document's host
    gateway_port: int | None = None  # None: the served document's http_port
    gateway_grpc_port: int | None = None
    health_interval_s: float = 1.0
    ready_timeout_s: float = 120.0
    drain_timeout_s: float = 30.0
    replica_host: str | None = None  # None: the Ray node's IP address

    @property
    def controller_name(self) -> str:
        """The controller's actor name in ``namespace``."""
        return f"berth-controller-{self.name}"

    def initial_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return self.replicas


def _where(source: str, key: str) -> str:
    return f"{source}: ray.{key}"


def _number(value: Any, where: str, *, low: float, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    if not math.isfinite(value) or value < low:
        raise ConfigError(f"{where}: expected a number >= {low}, got {value!r}")
    return int(value) if integer else float(value)


def parse_size(value: Any, where: str) -> int:
    """Bytes from ``2GiB``, ``512MB``, ``1000`` (a number is bytes)."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size like 2GiB, got {value!r}")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ConfigError(f"{where}: expected a size like 2GiB or 512MB, got {value!r}")
        number, unit = float(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ConfigError(
            f"{where}: unknown unit {unit!r} in {value!r}; use B, KB, MB, GB, KiB, MiB or GiB"
        )
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{where}: expected a size above 0, got {value!r}")
    return size


def _mapping(value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(allowed))}"
        )
    return value


def _autoscaling(value: Any, source: str) -> Autoscaling:
    block = _mapping(value, _where(source, "autoscaling"), AUTOSCALING_KEYS)
    at = lambda k: _where(source, f"autoscaling.{k}")  # noqa: E731
    low = _number(block.get("min_replicas", 1), at("min_replicas"), low=0, integer=True)
    high = _number(block.get("max_replicas", max(low, 1)), at("max_replicas"), low=1, integer=True)
    if low > high:
        raise ConfigError(
            f"{at('min_replicas')}: {low} is above max_replicas {high}; make min <= max"
        )
    target = _number(
        block.get("target_ongoing_requests", 2), at("target_ongoing_requests"), low=0
    )
    if target <= 0:
        raise ConfigError(f"{at('target_ongoing_requests')}: expected a number above 0")
    return Autoscaling(
        min_replicas=low,
        max_replicas=high,
        target_ongoing_requests=target,
        upscale_delay_s=_number(block.get("upscale_delay_s", 5), at("upscale_delay_s"), low=0),
        downscale_delay_s=_number(
            block.get("downscale_delay_s", 30), at("downscale_delay_s"), low=0
        ),
    )


def _resources(value: Any, source: str) -> Resources:
    block = _mapping(value, _where(source, "resources"), RESOURCE_KEYS)
    custom_raw = block.get("custom", {})
    custom_where = _where(source, "resources.custom")
    if not isinstance(custom_raw, Mapping):
        raise ConfigError(f"{custom_where}: expected a mapping of resource name to amount")
    custom: dict[str, float] = {}
    for key, amount in custom_raw.items():
        if not isinstance(key, str) or not key or key in ("CPU", "GPU", "memory"):
            raise ConfigError(
                f"{custom_where}: {key!r} is not a custom resource name "
                "(CPU, GPU and memory have their own keys)"
            )
        custom[key] = _number(amount, f"{custom_where}.{key}", low=0)
    memory = block.get("memory")
    return Resources(
        num_cpus=_number(block.get("num_cpus", 1), _where(source, "resources.num_cpus"), low=0),
        num_gpus=_number(block.get("num_gpus", 0), _where(source, "resources.num_gpus"), low=0),
        memory=None if memory is None else parse_size(memory, _where(source, "resources.memory")),
        custom=custom,
    )


def _port(value: Any, where: str) -> int:
    port = _number(value, where, low=0, integer=True)
    if port > 65535:
        raise ConfigError(f"{where}: expected a port 0..65535, got {value!r}")
    return port


def parse_ray_block(block: Any, source: str = "berth.yaml") -> RaySettings:
    """Checks a ``ray:`` block (``None``: the defaults)."""
    if block is None:
        return RaySettings()
    block = _mapping(block, f"{source}: ray", RAY_KEYS)
    kw: dict[str, Any] = {}
    for key in ("address", "namespace", "name", "replica_host"):
        if key in block:
            if not isinstance(block[key], str) or not block[key].strip():
                raise ConfigError(f"{_where(source, key)}: expected a non-empty string")
            kw[key] = block[key].strip()
    for key in ("namespace", "name"):
        if key in kw and not _APP_NAME.match(kw[key]):
            raise ConfigError(
                f"{_where(source, key)}: {kw[key]!r}: use letters, digits, '_', '.', '-'"
            )
    if "replicas" in block and "autoscaling" in block:
        raise ConfigError(
            f"{source}: ray: give replicas (a fixed count) or autoscaling, not both"
        )
    if "replicas" in block:
        kw["replicas"] = _number(block["replicas"], _where(source, "replicas"), low=1, integer=True)
    if "autoscaling" in block:
        kw["autoscaling"] = _autoscaling(block["autoscaling"], source)
    if "resources" in block:
        kw["resources"] = _resources(block["resources"], source)
    for key, low in (("health_interval_s", 0.05), ("ready_timeout_s", 1), ("drain_timeout_s", 0)):
        if key in block:
            kw[key] = _number(block[key], _where(source, key), low=low)
    if "gateway" in block:
        gw = _mapping(block["gateway"], _where(source, "gateway"), GATEWAY_KEYS)
        if "enabled" in gw:
            if not isinstance(gw["enabled"], bool):
                raise ConfigError(f"{_where(source, 'gateway.enabled')}: expected true or false")
            kw["gateway_enabled"] = gw["enabled"]
        if "host" in gw:
            if not isinstance(gw["host"], str) or not gw["host"]:
                raise ConfigError(f"{_where(source, 'gateway.host')}: expected an address")
            kw["gateway_host"] = gw["host"]
        if "port" in gw:
            kw["gateway_port"] = _port(gw["port"], _where(source, "gateway.port"))
        if "grpc_port" in gw:
            kw["gateway_grpc_port"] = _port(gw["grpc_port"], _where(source, "gateway.grpc_port"))
    return RaySettings(**kw)


def replica_document(
    doc: Mapping[str, Any], host: str, http_port: int, grpc_port: int
) -> dict[str, Any]:
    """The document one replica's berthd serves: the app's document, listening
    on ``host`` and the given ports, with workers started by this
    process's Python (the node's, not the driver's), without a metrics port
    or Unix socket of its own (they would clash between replicas on a node)."""
    out = copy.deepcopy(dict(doc))
    server = dict(out.get("server") or {})
    server["host"] = host
    server["http_port"] = http_port
    server["grpc_port"] = grpc_port
    for key in ("metrics_port", "socket"):
        server.pop(key, None)
    out["server"] = server
    workers = dict(out.get("workers") or {})
    command = list(workers.get("command") or [])
    if command[1:3] == ["-m", "berth.worker"] or not command:
        workers["command"] = [sys.executable, "-m", "berth.worker"]
    out["workers"] = workers
    return out


def desired_replicas(scaling: Autoscaling, ongoing: float) -> int:
    """Replicas that ``ongoing`` requests (in flight and queued, all replicas
    together) ask for: ceil(ongoing / target), within min..max. With no load
    the count stays at min_replicas (at least 1 while requests are ongoing)."""
    if ongoing <= 0:
        return scaling.min_replicas
    wanted = math.ceil(ongoing / scaling.target_ongoing_requests)
    return max(scaling.min_replicas, min(scaling.max_replicas, max(wanted, 1)))


@dataclass
class ScaleDecider:
    """Applies the upscale and downscale delays: a new count is taken only
    when every decision over the delay agreed on going that way."""

    scaling: Autoscaling
    _up_since: float | None = None
    _down_since: float | None = None

    def decide(self, ongoing: float, current: int, now: float) -> int:
        wanted = desired_replicas(self.scaling, ongoing)
        if wanted > current:
            self._down_since = None
            if self._up_since is None:
                self._up_since = now
            if now - self._up_since >= self.scaling.upscale_delay_s:
                self._up_since = None
                return wanted
            return current
        if wanted < current:
            self._up_since = None
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since >= self.scaling.downscale_delay_s:
                self._down_since = None
                return wanted
            return current
        self._up_since = self._down_since = None
        return current
