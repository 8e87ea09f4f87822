"""Berth on a real 3-node Ray cluster on this machine, all on 127.0.0.1
(docs/ray.md): replicas are Ray actors that own a berthd each; a controller
places, replaces, rolls and reports them.

The cluster: a head and nodes a and b, one CPU each; each has one
``berth_slot`` (the main app's replicas need one), a and b also ``node_a`` /
``node_b``. One cluster for the module, always shut down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import berth_executable, proc_alive, server_env, wait_until
from ray_cluster import (
    APP_READY_TIMEOUT_S,
    Load,
    RayApp,
    descendants,
    inet_sockets,
    infer,
    is_loopback,
    is_unset,
    process_name,
    start_cluster,
    write_affine_repo,
)

ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    # Ray's own modules warn on import and shutdown (deprecations, resource
    # warnings of its sockets); they are not Berth's.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

NAMESPACE = "berth"


def _gateway_available() -> bool:
    """berthd in gateway mode (docs/gateway.md) is built in."""
    done = subprocess.run([berth_executable(), "gateway", "--help"], capture_output=True,
                          env=server_env(), timeout=60)
    return done.returncode == 0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    c = start_cluster(
        [
            {"num_cpus": 1, "resources": {"berth_slot": 1}},
            {"num_cpus": 1, "resources": {"berth_slot": 1, "node_a": 1}},
            {"num_cpus": 1, "resources": {"berth_slot": 1, "node_b": 1}},
        ]
    )
    try:
        ray.init(address=c.address, namespace=NAMESPACE, log_to_driver=False,
                 logging_level="WARNING")
        yield c
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        c.shutdown()


def _node(cluster: Any, resource: str) -> Any:
    return next(n for n in cluster.worker_nodes
                if resource in (n._ray_params.resources or {}))


@pytest.fixture(scope="module")
def gateway() -> bool:
    return _gateway_available()


@pytest.fixture(scope="module")
def main_app(cluster: Any, tmp_path_factory: pytest.TempPathFactory,
             gateway: bool) -> Iterator[RayApp]:
    root = tmp_path_factory.mktemp("ray-main")
    repo = write_affine_repo(root / "v1", 2.0)
    config = root / "berth.yaml"
    config.write_text(
        "ray:\n"
        "  name: main\n"
        "  replicas: 2\n"
        "  resources: {num_cpus: 0.25, custom: {berth_slot: 1}}\n"
        "  health_interval_s: 0.5\n"
        "  drain_timeout_s: 10\n"
        f"  gateway: {{enabled: {'true' if gateway else 'false'}, port: 0, grpc_port: 0}}\n"
    )
    app = RayApp(cluster.address, root, [str(repo), "--config", str(config)], name="main")
    try:
        app.start()
        yield app
    finally:
        app.stop()


def _controller(app: RayApp) -> Any:
    return ray.get_actor(f"berth-controller-{app.name}", namespace=NAMESPACE)


def _replicas(app: RayApp) -> list[dict[str, Any]]:
    return ray.get(_controller(app).replicas.remote(), timeout=60)


def _targets(app: RayApp, gateway: bool) -> Any:
    if gateway:
        url = ray.get(_controller(app).status.remote(), timeout=60)["gateway"]
        return lambda: [url]
    controller = _controller(app)
    return lambda: [r["url"] for r in ray.get(controller.replicas.remote(), timeout=30)]


def _requests(url: str) -> float:
    import urllib.request

    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("berth_requests_total{"))


# ------------------------------------------------------------------ tests


def test_replicas_land_where_their_resources_say(
    cluster: Any, main_app: RayApp, tmp_path: Path
) -> None:
    head = cluster.head_node.node_id
    slot_nodes = {head} | {n.node_id for n in cluster.worker_nodes}
    replicas = _replicas(main_app)
    assert len(replicas) == 2
    for r in replicas:
        assert r["node_id"] in slot_nodes
        assert r["url"].startswith("http://127.0.0.1:")
    # Two replicas with one slot each: on two different nodes.
    assert len({r["node_id"] for r in replicas}) == 2

    # An app pinned by a custom resource lands on the node that has it.
    repo = write_affine_repo(tmp_path / "repo", 2.0)
    config = tmp_path / "berth.yaml"
    config.write_text(
        "ray:\n  name: pinned\n  replicas: 1\n"
        "  resources: {num_cpus: 0.25, custom: {node_b: 0.5}}\n"
        "  gateway: {enabled: false}\n  health_interval_s: 0.5\n"
    )
    pinned = RayApp(cluster.address, tmp_path, [str(repo), "--config", str(config)],
                    name="pinned")
    try:
        pinned.start()
        placed = _replicas(pinned)
        assert [r["node_id"] for r in placed] == [_node(cluster, "node_b").node_id]
        assert infer(placed[0]["url"], [1.5, 2.0]) == [3.0, 4.0]

        # berthd dies with its actor: kill the actor through Ray; berthd and
        # its worker go; the controller starts a replacement on node b.
        name = placed[0]["name"]
        actor = ray.get_actor(f"berth-replica-{name}", namespace=NAMESPACE)
        info = ray.get(actor.info.remote(), timeout=60)
        berthd = info["berthd_pid"]
        workers = descendants(berthd)
        assert proc_alive(berthd) and workers
        ray.kill(actor, no_restart=True)
        wait_until(lambda: not proc_alive(berthd), 60, "berthd to die with its actor")
        wait_until(lambda: not any(proc_alive(p) for p in workers), 60,
                   "berthd's workers to exit")
        fresh = wait_until(
            lambda: [r for r in _replicas(pinned) if r["name"] != name],
            APP_READY_TIMEOUT_S, "a replacement replica", interval=0.5,
        )
        assert fresh[0]["node_id"] == _node(cluster, "node_b").node_id
        assert infer(fresh[0]["url"], [3.0]) == [6.0]
        events = ray.get(_controller(pinned).status.remote(), timeout=60)["events"]
        assert any(e["kind"] == "lost" and e.get("replica") == name for e in events), events
    finally:
        pinned.stop()
    # Stopping the app (SIGTERM to berth serve --ray) stops its replicas.
    wait_until(lambda: not proc_alive(berthd) and not any(
        proc_alive(p) for p in descendants(os.getpid())
        if "berthd" in process_name(p) and str(fresh[0]["url"].rsplit(":", 1)[1]) in
        process_name(p)), 60, "the pinned app's replicas to stop")
    with pytest.raises(ValueError):
        ray.get_actor("berth-controller-pinned", namespace=NAMESPACE)


def test_requests_spread_over_replicas(main_app: RayApp, gateway: bool) -> None:
    replicas = _replicas(main_app)
    before = {r["name"]: _requests(r["url"]) for r in replicas}
    load = Load(_targets(main_app, gateway), clients=6)
    load.start()
    wait_until(lambda: load.sent >= 2000, 600, "2,000 requests", interval=0.2)
    load.stop()
    assert load.failures == [], load.failures[:10]
    after = {r["name"]: _requests(r["url"]) for r in replicas}
    served = {name: after[name] - before[name] for name in before}
    assert sum(served.values()) == load.sent
    assert all(count > 0 for count in served.values()), served
    assert load.scales == {2.0: load.sent}


def test_status_lists_replicas_per_node(cluster: Any, main_app: RayApp) -> None:
    done = main_app.berth("status")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "app main (namespace berth): version 1, 2 replica(s) wanted" in text
    for r in _replicas(main_app):
        node_line = next(line for line in text.splitlines()
                         if line.startswith(f"node {r['node_id']}"))
        assert "alive" in node_line
        line = next(line for line in text.splitlines() if r["name"] in line)
        assert r["url"] in line and "healthy" in line and "in_flight=" in line
        assert "requests=" in line
    status = main_app.status()
    assert {r["name"] for r in status["replicas"]} == {r["name"] for r in _replicas(main_app)}
    assert all(r["requests"] > 0 for r in status["replicas"])  # the spread test's load
    assert {n["node_id"] for n in status["nodes"] if n["alive"]} >= {
        cluster.head_node.node_id, *(n.node_id for n in cluster.worker_nodes)
    }
    # An app that does not exist: a clear error, not a traceback.
    missing = subprocess.run(
        [berth_executable(), "status", "--ray", cluster.address, "--app", "nosuch"],
        capture_output=True, text=True, timeout=120, env=server_env(),
    )
    assert missing.returncode != 0
    assert "no Berth app 'nosuch'" in missing.stderr and "Traceback" not in missing.stderr


def test_every_socket_is_on_loopback(main_app: RayApp) -> None:
    """Every TCP and UDP socket of the Ray processes, the driver, the
    gateway, the replicas and their workers (all descendants of this test
    process) is bound to and connected with loopback addresses only."""
    pids = descendants(os.getpid())
    names = {p: process_name(p) for p in pids}
    assert any("raylet" in n for n in names.values())
    assert any("gcs_server" in n for n in names.values())
    assert sum("berthd" in n for n in names.values()) >= 2
    sockets = [s for p in pids for s in inet_sockets(p)]
    assert len(sockets) > 20
    bad = [
        (s, names.get(s["pid"]))
        for s in sockets
        if not is_loopback(s["local"][0])
        or not (is_loopback(s["remote"][0]) or is_unset(s["remote"][0]))
    ]
    assert bad == [], bad[:10]
    listening = [s for s in sockets if s["proto"].startswith("tcp") and s["state"] == "0A"]
    assert listening and all(is_loopback(s["local"][0]) for s in listening)


def test_a_dead_berthd_is_replaced(main_app: RayApp) -> None:
    """berthd killed behind its actor's back (SIGKILL): the controller sees
    it at its next check and starts a replacement; the actor goes too."""
    victim = _replicas(main_app)[0]
    actor = ray.get_actor(f"berth-replica-{victim['name']}", namespace=NAMESPACE)
    info = ray.get(actor.info.remote(), timeout=60)
    os.kill(info["berthd_pid"], signal.SIGKILL)

    def replaced() -> bool:
        now = _replicas(main_app)
        return len(now) == 2 and victim["name"] not in {r["name"] for r in now}

    wait_until(replaced, APP_READY_TIMEOUT_S, "a replacement for the killed berthd",
               interval=0.5)
    wait_until(lambda: not proc_alive(info["actor_pid"]), 60, "the old actor to end")
    events = ray.get(_controller(main_app).status.remote(), timeout=60)["events"]
    assert any(e["kind"] == "exited" and e.get("replica") == victim["name"] for e in events)
    for r in _replicas(main_app):
        assert infer(r["url"], [4.0]) == [8.0]


def test_autoscaling_follows_the_load(cluster: Any, tmp_path: Path, gateway: bool) -> None:
    """Replicas from an autoscaling block: one at rest, the maximum (2)
    under six clients of a 50 ms model, one again when the load ends."""
    repo = write_affine_repo(tmp_path / "repo", 2.0, delay=0.05)
    config = tmp_path / "berth.yaml"
    config.write_text(
        "ray:\n  name: auto\n"
        "  autoscaling: {min_replicas: 1, max_replicas: 2, target_ongoing_requests: 2,\n"
        "                upscale_delay_s: 0, downscale_delay_s: 2}\n"
        "  resources: {num_cpus: 0.25}\n  health_interval_s: 0.5\n  drain_timeout_s: 10\n"
        f"  gateway: {{enabled: {'true' if gateway else 'false'}, port: 0, grpc_port: 0}}\n"
    )
    app = RayApp(cluster.address, tmp_path, [str(repo), "--config", str(config)], name="auto")
    try:
        app.start()
        assert len(_replicas(app)) == 1
        load = Load(_targets(app, gateway), clients=6)
        load.start()
        try:
            wait_until(lambda: len(_replicas(app)) == 2, APP_READY_TIMEOUT_S,
                       "a second replica under load", interval=0.5)
            both = load.sent
            wait_until(lambda: load.sent >= both + 100, 120, "traffic on two replicas",
                       interval=0.1)
        finally:
            load.stop()
        assert load.failures == [], load.failures[:10]
        wait_until(lambda: len(_replicas(app)) == 1, 120, "back to one replica at rest",
                   interval=0.5)
        status = app.status()
        assert status["autoscaling"] and status["target_replicas"] == 1
        scales = [e["message"] for e in status["events"] if e["kind"] == "scale"]
        assert scales[0].startswith("1 -> 2") and scales[-1].startswith("2 -> 1"), scales
    finally:
        app.stop()


def test_killing_berth_serve_takes_the_app_with_it(cluster: Any, tmp_path: Path,
                                                  gateway: bool) -> None:
    """The controller is owned by the berth serve --ray process: SIGKILL it
    (no drain, no cleanup of its own) and Ray ends the controller and its
    replicas, whose berthd processes die with their actors."""
    repo = write_affine_repo(tmp_path / "repo", 2.0)
    config = tmp_path / "berth.yaml"
    config.write_text(
        "ray:\n  name: owned\n  replicas: 1\n  resources: {num_cpus: 0.25}\n"
        "  health_interval_s: 0.5\n"
        f"  gateway: {{enabled: {'true' if gateway else 'false'}, port: 0, grpc_port: 0}}\n"
    )
    app = RayApp(cluster.address, tmp_path, [str(repo), "--config", str(config)], name="owned")
    try:
        app.start()
        replica = _replicas(app)[0]
        actor = ray.get_actor(f"berth-replica-{replica['name']}", namespace=NAMESPACE)
        berthd = ray.get(actor.info.remote(), timeout=60)["berthd_pid"]
        ours = [p for p in descendants(app.proc.pid) if "berthd" in process_name(p)]
        assert len(ours) == (1 if gateway else 0)  # the gateway, if any
        os.kill(app.proc.pid, signal.SIGKILL)
        app.proc.wait(timeout=30)
        wait_until(lambda: not proc_alive(berthd), 120, "the replica's berthd to end")
        wait_until(lambda: not any(proc_alive(p) for p in ours), 60, "the gateway to end")

        def controller_gone() -> bool:
            try:
                ray.get_actor("berth-controller-owned", namespace=NAMESPACE)
            except ValueError:
                return True
            return False

        wait_until(controller_gone, 120, "the controller to end")
    finally:
        app.stop()


def test_rolling_update_under_load(main_app: RayApp, gateway: bool,
                                   tmp_path: Path) -> None:
    old = {r["name"] for r in _replicas(main_app)}
    load = Load(_targets(main_app, gateway), clients=4, accept=(2.0, 3.0))
    load.start()
    try:
        wait_until(lambda: load.ok >= 50, 120, "traffic before the update", interval=0.1)
        repo = write_affine_repo(tmp_path / "v2", 3.0)
        config = main_app.workdir / "berth.yaml"
        update_at, sent_before = time.monotonic(), load.sent
        done = main_app.berth("ray", "update", str(repo), "--config", str(config), "--wait",
                              "--timeout", str(APP_READY_TIMEOUT_S * 2), timeout=900)
        print(f"\nrolling update of 2 replicas: {time.monotonic() - update_at:.1f} s, "
              f"{load.sent - sent_before} requests during it, {len(load.failures)} failed")
        assert done.returncode == 0, done.stderr + main_app.log()
        sent_at_end = load.sent
        wait_until(lambda: load.sent >= sent_at_end + 100, 120, "traffic after the update",
                   interval=0.1)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    new = _replicas(main_app)
    assert len(new) == 2 and not old & {r["name"] for r in new}
    assert all(r["generation"] == 2 for r in new)
    assert load.scales.get(3.0, 0) >= 100  # the new version answers
    for r in new:
        assert infer(r["url"], [2.0]) == [6.0]
    events = ray.get(_controller(main_app).status.remote(), timeout=60)["events"]
    drains = [e for e in events if e["kind"] == "drain"]
    starts = [e for e in events if e["kind"] == "start" and "-2-" in e["message"]]
    assert len(drains) == 2 and len(starts) == 2
    # One at a time: the second new replica starts after the first old one drains.
    assert events.index(drains[0]) < events.index(starts[1])


def test_node_loss_under_load(cluster: Any, main_app: RayApp, gateway: bool) -> None:
    """A node removed through Ray's API under load: only requests in flight
    on it may fail (at most one per client), the rest move to the other
    replica, and a replacement starts on the remaining nodes."""
    replicas = _replicas(main_app)
    victim_replica = next(r for r in replicas if r["node_id"] != cluster.head_node.node_id)
    victim = next(n for n in cluster.worker_nodes if n.node_id == victim_replica["node_id"])
    clients = 4
    load = Load(_targets(main_app, gateway), clients=clients, accept=(3.0,))
    load.start()
    try:
        wait_until(lambda: load.ok >= 50, 120, "traffic before the loss", interval=0.1)
        lost_at, sent_before = time.monotonic(), load.sent
        cluster.remove_node(victim)
        after_loss = load.sent
        wait_until(lambda: load.sent >= after_loss + 200, 300, "traffic after the loss",
                   interval=0.1)

        def replaced() -> bool:
            now = _replicas(main_app)
            return len(now) == 2 and all(r["node_id"] != victim.node_id for r in now)

        wait_until(replaced, APP_READY_TIMEOUT_S, "a replacement replica", interval=0.5)
        replaced_after = time.monotonic() - lost_at
        settled = load.sent
        wait_until(lambda: load.sent >= settled + 100, 120, "traffic on the new set",
                   interval=0.1)
    finally:
        load.stop()
    # Measured, not asserted (shown with pytest -s):
    print(f"\nnode loss: {len(load.failures)} failed of {load.sent - sent_before} requests "
          f"sent after the loss began; replacement serving {replaced_after:.1f} s after it; "
          f"failures: {load.failures}")
    assert len(load.failures) <= clients, load.failures
    assert load.ok >= load.sent - clients
    now = _replicas(main_app)
    assert victim_replica["name"] not in {r["name"] for r in now}
    assert all(r["node_id"] != victim.node_id for r in now)
    for r in now:
        assert infer(r["url"], [1.0]) == [3.0]
    events = ray.get(_controller(main_app).status.remote(), timeout=60)["events"]
    assert any(e["kind"] in ("lost", "unhealthy") and e.get("replica") == victim_replica["name"]
               for e in events), events


def test_bad_ray_block_is_refused_before_connecting(tmp_path: Path) -> None:
    repo = write_affine_repo(tmp_path / "repo", 2.0)
    cases = {
        "ray:\n  replicas: 0\n": "ray.replicas: expected a number >= 1",
        "ray:\n  replica: 2\n": "unknown key 'replica'",
        "ray:\n  autoscaling: {min_replicas: 3, max_replicas: 2}\n": "min <= max",
        "ray:\n  replicas: 2\n  autoscaling: {max_replicas: 2}\n": "not both",
        "ray:\n  resources: {memory: 2parsecs}\n": "unknown unit",
        "ray:\n  name: '../x'\n": "ray.name",
    }
    for text, words in cases.items():
        config = tmp_path / "berth.yaml"
        config.write_text(text)
        done = subprocess.run(
            [berth_executable(), "serve", str(repo), "--config", str(config), "--ray",
             "127.0.0.1:1"],
            capture_output=True, text=True, timeout=120, env=server_env(),
        )
        assert done.returncode == 2, (text, done.stderr)
        assert words in done.stderr and "Traceback" not in done.stderr, (text, done.stderr)


def test_a_model_that_fails_to_load_is_reported(cluster: Any, tmp_path: Path) -> None:
    """Replicas whose model cannot load never serve: berth serve --ray gives
    up after ray.ready_timeout_s with the replicas' own error, exits
    non-zero, and leaves no controller behind."""
    repo = tmp_path / "repo"
    model = repo / "broken" / "1"
    model.mkdir(parents=True)
    (model / "model.py").write_text(
        "import berth\n\n\nclass Broken(berth.Model):\n"
        "    def load(self):\n        raise RuntimeError('weights are missing: w.bin')\n\n"
        "    def predict(self, inputs):\n        return inputs\n"
    )
    (repo / "broken" / "berth.yaml").write_text("runtime: python\nclass: Broken\n")
    config = tmp_path / "berth.yaml"
    config.write_text(
        "ray:\n  name: broken\n  replicas: 1\n  resources: {num_cpus: 0.25}\n"
        "  gateway: {enabled: false}\n  ready_timeout_s: 20\n  health_interval_s: 0.5\n"
    )
    done = subprocess.run(
        [berth_executable(), "serve", str(repo), "--config", str(config), "--ray",
         cluster.address],
        capture_output=True, text=True, timeout=300, env=server_env(),
    )
    assert done.returncode == 1, done.stderr
    assert "starting the replicas did not finish within 20s" in done.stderr
    assert "weights are missing: w.bin" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(ValueError):
        ray.get_actor("berth-controller-broken", namespace=NAMESPACE)


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    from berth_e2e import free_port

    repo = write_affine_repo(tmp_path / "repo", 2.0)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for args in (["serve", str(repo), "--ray", address], ["status", "--ray", address],
                 ["ray", "scale", "--replicas", "2", "--ray", address]):
        done = subprocess.run([berth_executable(), *args], capture_output=True, text=True,
                              timeout=120, env=server_env())
        assert done.returncode == 1, (args, done.stderr)
        assert f"cannot reach the Ray cluster at {address}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    done = subprocess.run([berth_executable(), "status", "--ray", "no-port"],
                          capture_output=True, text=True, timeout=120, env=server_env())
    assert done.returncode == 2 and "expected HOST:PORT" in done.stderr, done.stderr
