"""The controller: one Ray actor per app that keeps the wanted number of
replicas alive, replaces lost ones, scales on load, rolls updates one
replica at a time, and tells the gateway the set.

It is a named actor (``berth-controller-<app>`` in the app's namespace) owned
by the ``berth serve --ray`` process that created it: when that process ends,
Ray ends the controller, and with it the replica actors it owns, whose berthd
processes die with them. ``berth status`` and ``berth ray update`` find it by
name. A loop thread does the work every ``health_interval_s``; the actor's
methods only read state or set targets, under one lock.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import RaySettings, ScaleDecider
from .gateway import GatewayClient, GatewayError
from .replica import replica_actor_class

#: Consecutive failed health checks after which a replica is replaced.
FAILS_BEFORE_REPLACE = 3
#: Events kept for ``berth status``.
EVENTS_KEPT = 50


@dataclass
class _Entry:
    name: str
    generation: int
    actor: Any
    state: str = "starting"  # starting | ready | draining | stopping
    ready_ref: Any = None
    stop_ref: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    since: float = field(default_factory=time.time)

    def public(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "generation": self.generation,
            "state": self.state,
            "since": self.since,
            "failures": self.failures,
        }
        out.update({k: v for k, v in self.info.items() if k != "name"})
        out.update(self.stats)
        return out


class Controller:
    """The body of the controller actor (see the module's note)."""

    def __init__(
        self,
        doc: Mapping[str, Any],
        settings: RaySettings,
        gateway_url: str | None = None,
        gateway_token: str | None = None,
    ) -> None:
        import ray

        self._ray = ray
        self._replica_cls = replica_actor_class()
        self.settings = settings
        self.doc = dict(doc)
        self.generation = 1
        self.target = settings.initial_replicas()
        self._decider = ScaleDecider(settings.autoscaling) if settings.autoscaling else None
        self._gateway = GatewayClient(gateway_url, gateway_token) if gateway_url else None
        self._pushed: list[tuple[str, str]] | None = None
        self._gateway_states: dict[str, str] = {}  # replica name -> the gateway's state
        self._entries: dict[str, _Entry] = {}
        self._names = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, name="berth-controller", daemon=True)
        self._loop.start()

    # ------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._lock:
                    self._tick()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad tick
                self._event("error", f"controller tick failed: {e!r}")
            self._stop.wait(self.settings.health_interval_s)

    def _tick(self) -> None:
        self._collect_started()
        self._check_health()
        self._autoscale()
        self._reconcile()
        self._push()
        self._reap_stopped()

    def _event(self, kind: str, message: str, **extra: Any) -> None:
        self._events.append({"time": time.time(), "kind": kind, "message": message, **extra})
        del self._events[:-EVENTS_KEPT]

    def _start_replica(self) -> None:
        name = f"{self.settings.name}-{self.generation}-{next(self._names)}"
        actor = self._replica_cls.options(
            name=f"berth-replica-{name}",
            namespace=self.settings.namespace,
            **self.settings.resources.actor_options(),
        ).remote(
            name, self.doc, self.generation, self.settings.replica_host,
            self.settings.ready_timeout_s,
        )
        entry = _Entry(name=name, generation=self.generation, actor=actor)
        entry.ready_ref = actor.info.remote()
        self._entries[name] = entry
        self._event("start", f"starting replica {name}", replica=name)

    def _collect_started(self) -> None:
        starting = [e for e in self._entries.values() if e.state == "starting"]
        if not starting:
            return
        refs = [e.ready_ref for e in starting]
        done, _ = self._ray.wait(refs, num_returns=len(refs), timeout=0)
        done_set = set(done)
        for entry in starting:
            if entry.ready_ref not in done_set:
                continue
            try:
                entry.info = self._ray.get(entry.ready_ref)
                error = entry.info.get("error")
            except Exception as e:  # noqa: BLE001 - its actor died while starting
                error = f"{type(e).__name__}: {str(e)[:500]}"
            if error:
                self._event("failed", f"replica {entry.name} failed to start: {error}",
                            replica=entry.name)
                self._forget(entry)
                continue
            entry.state, entry.since, entry.ready_ref = "ready", time.time(), None
            self._event("ready", f"replica {entry.name} ready at {entry.info.get('url')} "
                        f"on node {entry.info.get('node_id')}", replica=entry.name)

    def _check_health(self) -> None:
        ready = [e for e in self._entries.values() if e.state == "ready"]
        if not ready:
            return
        refs = {e.name: e.actor.stats.remote() for e in ready}
        self._ray.wait(list(refs.values()), num_returns=len(refs), timeout=5.0)
        for entry in ready:
            try:
                stats = self._ray.get(refs[entry.name], timeout=0)
            except self._ray.exceptions.GetTimeoutError:
                stats = {"ready": False, "error": "no answer from the replica actor"}
            except self._ray.exceptions.RayActorError as e:
                self._event("lost", f"replica {entry.name} lost: {type(e).__name__}",
                            replica=entry.name, node_id=entry.info.get("node_id"))
                self._forget(entry)
                continue
            entry.stats = stats
            entry.failures = 0 if stats.get("ready") else entry.failures + 1
            if stats.get("alive") is False:
                self._event("exited", f"replica {entry.name}'s berthd exited; replacing it",
                            replica=entry.name)
                self._forget(entry)
            elif entry.failures >= FAILS_BEFORE_REPLACE:
                self._event("unhealthy", f"replica {entry.name} failed {entry.failures} "
                            "health checks; replacing it", replica=entry.name)
                self._forget(entry)

    def _forget(self, entry: _Entry) -> None:
        with contextlib.suppress(Exception):
            self._ray.kill(entry.actor, no_restart=True)
        self._entries.pop(entry.name, None)

    def _autoscale(self) -> None:
        if self._decider is None:
            return
        ready = [e for e in self._entries.values() if e.state == "ready"]
        ongoing = sum(float(e.stats.get("in_flight", 0.0)) for e in ready)
        wanted = self._decider.decide(ongoing, self.target, time.monotonic())
        if wanted != self.target:
            self._event("scale", f"{self.target} -> {wanted} replicas "
                        f"({ongoing:g} requests ongoing)")
            self.target = wanted

    def _reconcile(self) -> None:
        live = [e for e in self._entries.values() if e.state in ("starting", "ready")]
        old = [e for e in live if e.generation != self.generation]
        new = [e for e in live if e.generation == self.generation]
        if old:
            self._roll(old, new)
            return
        if len(live) < self.target:
            for _ in range(self.target - len(live)):
                self._start_replica()
        elif len(live) > self.target:
            # Replicas not yet serving go first, then the least loaded.
            order = sorted(live, key=lambda e: (e.state == "ready",
                                                 float(e.stats.get("in_flight", 0.0))))
            for entry in order[: len(live) - self.target]:
                self._drain(entry, "scaled down")

    def _roll(self, old: list[_Entry], new: list[_Entry]) -> None:
        """One replica at a time: start a new one, and once it serves (the
        gateway has it), take an old one out and drain it."""
        for entry in [e for e in old if e.state == "starting"]:
            self._event("replaced", f"replica {entry.name} of an older version never served")
            self._forget(entry)
        old = [e for e in old if e.state == "ready"]
        ready = [e for e in new if self._serving(e)] + old
        while old and len(ready) > self.target:
            victim = old.pop(0)
            ready.remove(victim)
            self._drain(victim, f"rolling update to version {self.generation}")
        # the next new one only once every new one serves (with a gateway:
        # ready is not enough until the gateway's probe found it healthy)
        if all(self._serving(e) for e in new) and len(new) < self.target:
            self._start_replica()

    def _drain(self, entry: _Entry, why: str) -> None:
        """Out of the gateway's set first; berthd gets SIGTERM after the push
        (``_reap_stopped``), and finishes what it accepted."""
        entry.state, entry.since = "draining", time.time()
        self._event("drain", f"draining replica {entry.name}: {why}", replica=entry.name)

    def _serving(self, entry: _Entry) -> bool:
        """Ready, and (with a gateway) taking traffic there: a new replica is
        probed by the gateway before it gets requests."""
        if entry.state != "ready":
            return False
        return self._gateway is None or self._gateway_states.get(entry.name) == "healthy"

    def _push(self) -> None:
        ready = sorted(
            (e.name, str(e.info.get("url"))) for e in self._entries.values() if e.state == "ready"
        )
        if self._gateway is not None and ready != self._pushed:
            try:
                self._gateway.put([{"name": n, "url": u} for n, u in ready])
                self._pushed = ready
            except GatewayError as e:
                self._event("gateway", f"could not update the gateway: {e}")
                return  # drains wait: the gateway may still send to them
        if self._gateway is not None:
            try:
                self._gateway_states = {
                    str(r.get("name")): str(r.get("state")) for r in self._gateway.get()
                }
            except GatewayError as e:
                self._event("gateway", f"could not read the gateway's replicas: {e}")
        elif self._gateway is None:
            self._pushed = ready
        for entry in self._entries.values():
            if entry.state == "draining":
                # Without a gateway, clients read the set from the controller:
                # leave them one interval to see the change.
                grace = 0.0 if self._gateway is not None else self.settings.health_interval_s
                entry.stop_ref = entry.actor.stop.remote(self.settings.drain_timeout_s, grace)
                entry.state = "stopping"

    def _reap_stopped(self) -> None:
        stopping = [e for e in self._entries.values() if e.state == "stopping"]
        if not stopping:
            return
        done, _ = self._ray.wait([e.stop_ref for e in stopping], num_returns=len(stopping),
                                 timeout=0)
        for entry in stopping:
            if entry.stop_ref in done:
                with contextlib.suppress(Exception):
                    self._ray.get(entry.stop_ref)
                self._event("stopped", f"replica {entry.name} stopped", replica=entry.name)
                self._forget(entry)

    # ------------------------------------------------------------ methods

    def status(self) -> dict[str, Any]:
        """The app, its replicas (state, node, load, health) and the cluster's
        nodes, for ``berth status``."""
        with self._lock:
            replicas = [
                {**e.public(), "gateway_state": self._gateway_states.get(e.name)}
                for e in self._entries.values()
            ]
            events = list(self._events)
            target, generation = self.target, self.generation
        nodes = [
            {
                "node_id": n.get("NodeID"),
                "address": n.get("NodeManagerAddress"),
                "alive": bool(n.get("Alive")),
                "resources": n.get("Resources", {}),
            }
            for n in self._ray.nodes()
        ]
        return {
            "app": self.settings.name,
            "namespace": self.settings.namespace,
            "generation": generation,
            "target_replicas": target,
            "autoscaling": self._decider is not None,
            "gateway": self._gateway.url if self._gateway else None,
            "replicas": replicas,
            "nodes": nodes,
            "events": events,
        }

    def replicas(self) -> list[dict[str, Any]]:
        """The replicas that serve now (name, url, node_id, generation)."""
        with self._lock:
            return [
                {"name": e.name, "url": e.info.get("url"), "node_id": e.info.get("node_id"),
                 "generation": e.generation, "grpc_port": e.info.get("grpc_port")}
                for e in self._entries.values() if e.state == "ready"
            ]

    def settled(self) -> bool:
        """True when exactly the target count of current-version replicas
        serve and nothing starts or drains."""
        with self._lock:
            states = [(e.state, e.generation) for e in self._entries.values()]
            return len(states) == self.target and all(
                s == "ready" and g == self.generation for s, g in states
            )

    def update(self, doc: Mapping[str, Any]) -> int:
        """A new document (model version or config) to roll out, one replica
        at a time; returns its generation number."""
        with self._lock:
            self.doc = dict(doc)
            self.generation += 1
            self._event("update", f"rolling update to version {self.generation} started")
            return self.generation

    def scale(self, replicas: int) -> int:
        """Sets a fixed replica count (autoscaling, if on, moves it again)."""
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        with self._lock:
            self.target = replicas
            return self.target

    def shutdown(self) -> None:
        """Stops the loop and every replica (each drains what it accepted)."""
        self._stop.set()
        self._loop.join(timeout=30)
        with self._lock:
            entries = list(self._entries.values())
            refs = [e.actor.stop.remote(self.settings.drain_timeout_s, 0.0) for e in entries]
        with contextlib.suppress(Exception):
            self._ray.wait(refs, num_returns=len(refs),
                           timeout=self.settings.drain_timeout_s + 15.0)
        for entry in entries:
            self._forget(entry)


def controller_actor_class() -> Any:
    """``Controller`` as a Ray actor class: threaded, so that ``status``
    answers while the loop works."""
    import ray

    return ray.remote(max_restarts=0, max_concurrency=8, num_cpus=0)(Controller)
