"""``berth serve --ray``, ``berth status`` and ``berth ray update``
(docs/ray.md)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BerthError, ConfigError
from .config import RaySettings, parse_ray_block


class RayMissingError(BerthError):
    """Ray is not installed."""

    exit_code = 2


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            "serving on Ray needs Ray: pip install 'berth[ray]' (Ray 2.40 or later, on every "
            "node of the cluster, with the same Berth)"
        ) from None
    return ray


def settings_from_config(config_file: str | None) -> RaySettings:
    """The ``ray:`` block of an app-level YAML file (defaults without one)."""
    if not config_file or Path(config_file).suffix == ".py":
        return RaySettings()
    from ..cli.discovery import _read_yaml

    path = Path(config_file).expanduser().resolve()
    app = _read_yaml(path)
    if not isinstance(app, dict):
        return RaySettings()
    return parse_ray_block(app.get("ray"), str(path))


def _address(flag: str | None, settings: RaySettings) -> str:
    return flag or os.environ.get("BERTH_RAY_ADDRESS") or settings.address


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """A TCP connection to a HOST:PORT address, so that a wrong address is an
    error at once (Ray's own client retries for minutes). ``auto`` and
    ``ray://`` addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"Ray address {address!r}: expected HOST:PORT (or auto)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise BerthError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}. Start one with "
            "`ray start --head --node-ip-address=127.0.0.1` (docs/ray.md) or pass its address "
            "with --ray HOST:PORT"
        ) from None


def connect(address: str, namespace: str) -> Any:
    ray = require_ray()
    check_reachable(address)
    try:
        ray.init(
            address=address,
            namespace=namespace,
            log_to_driver=False,
            logging_level="WARNING",
            configure_logging=True,
        )
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BerthError(
            f"cannot connect to the Ray cluster at {address!r}: {e}. Start one with "
            "`ray start --head --node-ip-address=127.0.0.1` (docs/ray.md) or pass its address "
            "with --ray HOST:PORT"
        ) from None
    return ray


def _driver_node_affinity(ray: Any) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def _wait_settled(
    ray: Any, controller: Any, timeout_s: float, what: str, stop: threading.Event | None = None
) -> bool:
    """Waits until the controller says the wanted replicas serve; False when
    ``stop`` was set first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.get(controller.settled.remote(), timeout=30):
            return True
        if stop is not None and stop.wait(0.25):
            return False
        if stop is None:
            time.sleep(0.25)
    status = ray.get(controller.status.remote(), timeout=30)
    events = "; ".join(e["message"] for e in status["events"][-5:])
    raise BerthError(f"{what} did not finish within {timeout_s:.0f}s (last events: {events})")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_duplicate(ray: Any, settings: RaySettings) -> None:
    try:
        ray.get_actor(settings.controller_name, namespace=settings.namespace)
    except ValueError:
        return
    raise ConfigError(
        f"app {settings.name!r} is already served on this Ray cluster (actor "
        f"{settings.controller_name} in namespace {settings.namespace}); stop it or "
        "give this one another ray.name"
    )


def _start_gateway(doc: Mapping[str, Any], settings: RaySettings, node_ip: str) -> Any:
    """The gateway berthd on this machine, or None when disabled. Replicas
    beyond loopback are allowed when this node's Ray address is not
    loopback (a real cluster)."""
    from .gateway import GatewayProcess, gateway_document, gateway_token
    from .replica import free_port

    if not settings.gateway_enabled:
        return None
    server = doc.get("server", {})
    host = settings.gateway_host or str(server.get("host", "127.0.0.1"))
    port = settings.gateway_port
    if port is None:
        port = int(server.get("http_port", 8080))
    grpc = settings.gateway_grpc_port
    if grpc is None:
        grpc = int(server.get("grpc_port", 8081))
    port = port or free_port(host)
    grpc = grpc or free_port(host)
    remote = not _is_loopback(settings.replica_host or node_ip)
    token = gateway_token(doc, os.environ, remote)
    gateway = GatewayProcess(gateway_document(doc, host, port, grpc, remote), token)
    gateway.start()
    return gateway


def serve_on_ray(doc: Mapping[str, Any], settings: RaySettings, address: str | None) -> int:
    """Runs the app on a Ray cluster until SIGTERM or SIGINT: a controller
    actor owned by this process, its replicas, and the gateway here."""
    from .controller import controller_actor_class

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    address = _address(address, settings)
    ray = connect(address, settings.namespace)
    for sig in (signal.SIGTERM, signal.SIGINT):  # over Ray's own handlers
        signal.signal(sig, lambda *_: stop.set())
    gateway = None
    try:
        _refuse_duplicate(ray, settings)
        gateway = _start_gateway(doc, settings, ray.util.get_node_ip_address())
        url, token = (gateway.url, gateway.token) if gateway else (None, None)
        controller = controller_actor_class().options(
            name=settings.controller_name,
            namespace=settings.namespace,
            scheduling_strategy=_driver_node_affinity(ray),
        ).remote(doc, settings, url, token)
        if _wait_settled(ray, controller, settings.ready_timeout_s, "starting the replicas", stop):
            where = f"; gateway at {url}" if url else "; no gateway (ray.gateway.enabled is false)"
            print(
                f"berth: serving on Ray at {address}: {settings.initial_replicas()} replica(s) "
                f"of app {settings.name!r}{where}",
                file=sys.stderr,
                flush=True,
            )
        status = 0
        while not stop.wait(1.0):
            if gateway is not None and not gateway.running():
                print(f"berth: the gateway exited: {gateway.log_tail()}", file=sys.stderr)
                status = 1
                break
        # The front door first (it finishes what it forwarded), then the
        # replicas, each finishing what it accepted.
        if gateway is not None:
            gateway.stop(settings.drain_timeout_s + 10)
        try:
            ray.get(controller.shutdown.remote(), timeout=settings.drain_timeout_s + 60)
        except ray.exceptions.RayError as e:
            print(f"berth: warning: the replicas did not stop cleanly ({type(e).__name__}); "
                  "Ray ends them with this process", file=sys.stderr)
        return status
    finally:
        if gateway is not None:
            gateway.stop()
        ray.shutdown()


# ----------------------------------------------------------------- status


def _controller(ns: argparse.Namespace) -> tuple[Any, Any, RaySettings]:
    settings = settings_from_config(getattr(ns, "config", None))
    if ns.app:
        settings = RaySettings(**{**settings.__dict__, "name": ns.app})
    if ns.namespace:
        settings = RaySettings(**{**settings.__dict__, "namespace": ns.namespace})
    ray = connect(_address(ns.ray, settings), settings.namespace)
    try:
        controller = ray.get_actor(settings.controller_name, namespace=settings.namespace)
    except ValueError:
        ray.shutdown()
        raise BerthError(
            f"no Berth app {settings.name!r} on this Ray cluster (no actor "
            f"{settings.controller_name} in namespace {settings.namespace}); is "
            "`berth serve --ray` running?"
        ) from None
    return ray, controller, settings


def format_status(status: Mapping[str, Any]) -> str:
    """``berth status``'s table: replicas per node, their load and health."""
    lines = [
        f"app {status['app']} (namespace {status['namespace']}): version "
        f"{status['generation']}, {status['target_replicas']} replica(s) wanted"
        + (" (autoscaling)" if status.get("autoscaling") else "")
        + (f", gateway {status['gateway']}" if status.get("gateway") else ", no gateway")
    ]
    by_node: dict[str, list[Mapping[str, Any]]] = {}
    for replica in status["replicas"]:
        by_node.setdefault(str(replica.get("node_id") or "(not placed yet)"), []).append(replica)
    nodes = {n["node_id"]: n for n in status.get("nodes", [])}
    for node_id in sorted(set(by_node) | {n for n, v in nodes.items() if v["alive"]}):
        node = nodes.get(node_id, {})
        alive = "alive" if node.get("alive") else ("dead" if node else "")
        replicas = by_node.get(node_id, [])
        head = " ".join(part for part in ("node", node_id, node.get("address"), alive) if part)
        lines.append(f"{head}: {len(replicas)} replica(s)")
        for r in sorted(replicas, key=lambda r: r["name"]):
            health = "healthy" if r.get("ready") else ("unknown" if "ready" not in r else "UNHEALTHY")
            lines.append(
                f"  {r['name']:<24} {r['state']:<9} v{r['generation']}  {r.get('url', '-')}  "
                f"in_flight={r.get('in_flight', 0):g} queued={r.get('queued', 0):g} "
                f"requests={r.get('requests', 0):g}  {health}"
            )
    return "\n".join(lines)


def run_status(ns: argparse.Namespace) -> int:
    ray, controller, _ = _controller(ns)
    try:
        status = ray.get(controller.status.remote(), timeout=60)
    finally:
        ray.shutdown()
    if ns.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(format_status(status))
    return 0


def run_update(ns: argparse.Namespace, doc: Mapping[str, Any]) -> int:
    ray, controller, settings = _controller(ns)
    try:
        generation = ray.get(controller.update.remote(dict(doc)), timeout=60)
        print(f"berth: rolling update to version {generation} started", file=sys.stderr)
        if ns.wait:
            _wait_settled(ray, controller, ns.timeout, "the rolling update")
            print(f"berth: version {generation} serves on every replica", file=sys.stderr)
    finally:
        ray.shutdown()
    return 0


def run_scale(ns: argparse.Namespace) -> int:
    ray, controller, _ = _controller(ns)
    try:
        target = ray.get(controller.scale.remote(ns.replicas), timeout=60)
        print(f"berth: {target} replica(s) wanted", file=sys.stderr)
        if ns.wait:
            _wait_settled(ray, controller, ns.timeout, "scaling")
    finally:
        ray.shutdown()
    return 0


def add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="the Ray cluster (default: ray.address in --config, "
                        "BERTH_RAY_ADDRESS, else auto)")
    parser.add_argument("--app", default=None, metavar="NAME",
                        help="the app's name (ray.name; default berth)")
    parser.add_argument("--namespace", default=None, metavar="NS",
                        help="the Ray namespace (ray.namespace; default berth)")
