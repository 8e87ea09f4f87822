"""Gateway mode (docs/gateway.md): ``berth gateway`` in front of ordinary
``berth serve`` replicas, all real processes on 127.0.0.1.

What a user relies on: answers through the gateway are the replicas'
answers (tritonclient HTTP and gRPC, curl), load spreads over the replicas,
a replica killed under load costs at most the requests in flight on it and
is ejected, the replica set changes at run time (added ones take traffic,
removed ones finish what they hold), no healthy replica is a clear 503 /
UNAVAILABLE, the admin endpoint refuses what it must, and every socket
stays on loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    assert_error,
    children_of,
    free_port,
    http_call,
    wait_until,
)

MODEL_SOURCE = '''
import time
import numpy as np
import berth


class Double(berth.Model):
    """y = 2x; a first element of 99 makes it take 2 s (a slow request)."""
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        if x.size and x[0] == 99:
            time.sleep(2)
        return {"y": x * 2}
'''

PATH = "/v2/models/double/infer"


def body(values: list[float]) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values}]}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("gw-model") / "double.py"
    path.write_text(MODEL_SOURCE)
    return str(path)


def start_gateway(workdir: Path, replicas: list[BerthServer | str], *flags: str,
                  wait_for: str = "server", token: str | None = None) -> BerthServer:
    args: list[str] = []
    for i, r in enumerate(replicas):
        url = r if isinstance(r, str) else f"http://127.0.0.1:{r.port}"
        args += ["--replica", f"r{i}={url}"]
    gw = BerthServer(
        target=[], workdir=workdir, extra_args=[*args, *flags], wait_for=wait_for,
        label="gateway", command="gateway",
    )
    gw.token = token
    return gw.start()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., BerthServer]]:
    started: list[BerthServer] = []

    def start(replicas: list[BerthServer | str], *flags: str, **kw: Any) -> BerthServer:
        gw = start_gateway(tmp_path / "gateway", replicas, *flags, **kw)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.close()


@pytest.fixture(scope="module")
def three(module_server: Callable[..., BerthServer], model: str) -> list[BerthServer]:
    """Three replicas shared by the module's read-only tests."""
    return [module_server(model, "--instances", "1", label=f"replica{i}") for i in range(3)]


def replicas_of(gw: BerthServer, token: str | None = None) -> dict[str, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = http_call(gw.port, "GET", "/v2/gateway/replicas", headers=headers)
    assert resp.status == 200, resp.body
    return {r["name"]: r for r in resp.json()["replicas"]}


def inference_count(server: BerthServer) -> int:
    resp = server.get("/v2/models/double/stats")
    assert resp.status == 200, resp.body
    return sum(s["inference_count"] for s in resp.json()["model_stats"])


def wait_healthy(gw: BerthServer, names: list[str], token: str | None = None) -> None:
    wait_until(
        lambda: all(replicas_of(gw, token).get(n, {}).get("state") == "healthy" for n in names),
        timeout=60, what=f"replicas {names} healthy",
    )


def load(port: int, n: int, threads: int = 8) -> list[tuple[int | None, Any]]:
    """n inference requests over `threads` kept-alive connections; each
    result is (status, y) or (None, the exception's text)."""
    results: list[tuple[int | None, Any]] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            try:
                conn.request("POST", PATH, json.dumps(body([float(i % 50), 1.0])),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
                out: Any = None
                if resp.status == 200:
                    out = json.loads(data)["outputs"][0]["data"]
                    assert out == [2.0 * (i % 50), 2.0], out
                with lock:
                    results.append((resp.status, out if resp.status == 200 else data))
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                with lock:
                    results.append((None, repr(e)))
        conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results


# ------------------------------------------------------------------ answers


def test_clients_through_the_gateway(three: list[BerthServer], gateway: Callable[..., BerthServer]) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    gw = gateway(three)
    wait_healthy(gw, ["r0", "r1", "r2"])
    x = np.array([1.5, -2.0, 3.0], dtype=np.float32)
    for mod, url in ((httpclient, f"127.0.0.1:{gw.port}"), (grpcclient, f"127.0.0.1:{gw.grpc_port}")):
        client = mod.InferenceServerClient(url)
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("double")
        inp = mod.InferInput("x", [3], "FP32")
        inp.set_data_from_numpy(x)
        for _ in range(10):
            result = client.infer("double", [inp])
            np.testing.assert_array_equal(result.as_numpy("y"), x * 2)
        with pytest.raises(Exception, match="(?i)unknown model|not found"):
            client.infer("nosuch", [inp])
    # a replica's REST port answers gRPC too (what the gateway relies on)
    direct = grpcclient.InferenceServerClient(f"127.0.0.1:{three[0].port}")
    inp = grpcclient.InferInput("x", [3], "FP32")
    inp.set_data_from_numpy(x)
    np.testing.assert_array_equal(direct.infer("double", [inp]).as_numpy("y"), x * 2)
    # and its REST answers over HTTP/1.1 are unchanged
    assert http_call(three[0].port, "POST", PATH, body([1.0])).json()["outputs"][0]["data"] == [2.0]
    # gRPC bidirectional streaming passes through as bytes
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
    got: list[Any] = []
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        got.append(error if error is not None else result.as_numpy("y").tolist())
        if len(got) == 5:
            done.set()

    client.start_stream(callback=callback)
    for i in range(5):
        inp = grpcclient.InferInput("x", [1], "FP32")
        inp.set_data_from_numpy(np.array([float(i)], dtype=np.float32))
        client.async_stream_infer("double", [inp])
    assert done.wait(60), got
    client.stop_stream()
    assert sorted(got) == [[0.0], [2.0], [4.0], [6.0], [8.0]]
    # curl, HTTP/1.1 and h2c prior knowledge; KServe v1 too
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    for proto in ("--http1.1", "--http2-prior-knowledge"):
        out = subprocess.run(
            [curl, "-sS", proto, "-H", "Content-Type: application/json", "-d",
             json.dumps(body([4.0])), f"http://127.0.0.1:{gw.port}{PATH}"],
            capture_output=True, check=True, timeout=60,
        )
        assert json.loads(out.stdout)["outputs"][0]["data"] == [8.0]
    out = subprocess.run(
        [curl, "-sS", "-H", "Content-Type: application/json", "-d", '{"instances": [1, 2]}',
         f"http://127.0.0.1:{gw.port}/v1/models/double:predict"],
        capture_output=True, check=True, timeout=60,
    )
    assert json.loads(out.stdout) == {"predictions": [2.0, 4.0]}
    # the gateway's own metrics name every replica
    metrics = http_call(gw.port, "GET", "/metrics").body.decode()
    for name in ("r0", "r1", "r2"):
        assert f'berth_gateway_requests_total{{replica="{name}"}}' in metrics
        assert f'berth_gateway_replica_healthy{{replica="{name}"}} 1' in metrics
    assert "berth_gateway_forward_duration_seconds_bucket" in metrics


def test_2000_requests_spread_over_replicas(three: list[BerthServer],
                                            gateway: Callable[..., BerthServer]) -> None:
    gw = gateway(three)
    wait_healthy(gw, ["r0", "r1", "r2"])
    before = [inference_count(r) for r in three]
    results = load(gw.port, 2000)
    assert [s for s, _ in results].count(200) == 2000, [r for r in results if r[0] != 200][:5]
    delta = [inference_count(r) - b for r, b in zip(three, before)]
    assert all(d > 0 for d in delta), delta
    assert sum(delta) == 2000, delta
    listed = replicas_of(gw)
    assert sum(listed[n]["requests"] for n in ("r0", "r1", "r2")) == 2000
    assert all(listed[n]["in_flight"] == 0 for n in ("r0", "r1", "r2"))


COUNTER_SOURCE = '''
import time
import numpy as np
import berth


class Counter(berth.Model):
    """Yields n responses {"i": [k]}, 20 ms apart."""
    inputs = [berth.TensorSpec("n", "INT32", [1])]
    outputs = [berth.TensorSpec("i", "INT32", [1])]

    def predict(self, inputs):
        for k in range(int(inputs["n"][0])):
            yield {"i": np.array([k], dtype=np.int32)}
            time.sleep(0.02)
'''


def test_generate_stream_through_the_gateway(berth_server: Callable[..., BerthServer],
                                             gateway: Callable[..., BerthServer],
                                             tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "counter", COUNTER_SOURCE, "Counter", yaml_extra="instances: 1\n")
    replica = berth_server(str(repo), label="counter")
    gw = gateway([replica])
    wait_healthy(gw, ["r0"])
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
    try:
        for n in (5, 2):  # the same connection serves the next request
            conn.request("POST", "/v2/models/counter/generate_stream", json.dumps({"n": n}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert (resp.getheader("content-type") or "").startswith("text/event-stream")
            assert resp.getheader("content-length") is None  # streamed through, not collected
            text = resp.read().decode()
            events = [json.loads(b[len("data: "):]) for b in text.split("\n\n") if b]
            assert [e["i"] for e in events] == list(range(n))
    finally:
        conn.close()


# ------------------------------------------------------------------ failures


def test_replica_killed_under_load(berth_server: Callable[..., BerthServer], model: str,
                                   gateway: Callable[..., BerthServer]) -> None:
    a = berth_server(model, "--instances", "1", label="victim")
    b = berth_server(model, "--instances", "1", label="survivor")
    gw = gateway([a, b])
    wait_healthy(gw, ["r0", "r1"])
    threads = 8
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(r=load(gw.port, 1500, threads)))
    runner.start()
    wait_until(lambda: replicas_of(gw)["r0"]["requests"] >= 100, timeout=60,
               what="traffic on the victim")
    os.killpg(a.pid, signal.SIGKILL)
    runner.join(300)
    assert not runner.is_alive()
    results = outcome["r"]
    failed = [r for r in results if r[0] != 200]
    # only requests in flight on the killed replica may fail
    assert len(failed) <= threads, failed[:5]
    assert len(results) == 1500
    wait_until(lambda: replicas_of(gw)["r0"]["state"] == "ejected", timeout=60,
               what="the killed replica ejected")
    listed = replicas_of(gw)
    assert listed["r0"]["ejections"] >= 1
    assert listed["r1"]["state"] == "healthy"
    # traffic continues on the survivor
    again = load(gw.port, 200, 4)
    assert [s for s, _ in again].count(200) == 200, again[:3]
    assert http_call(gw.port, "GET", "/v2/health/ready").status == 200


def test_hung_replica_is_ejected_and_comes_back(berth_server: Callable[..., BerthServer],
                                                model: str,
                                                gateway: Callable[..., BerthServer]) -> None:
    a = berth_server(model, "--instances", "1", label="hung")
    b = berth_server(model, "--instances", "1", label="well")
    gw = gateway([a, b], "--health-interval-ms", "200", "--eject-for-ms", "300")
    wait_healthy(gw, ["r0", "r1"])
    os.kill(a.pid, signal.SIGSTOP)  # accepts nothing, answers nothing
    try:
        wait_until(lambda: replicas_of(gw)["r0"]["state"] == "ejected", timeout=60,
                   what="the stopped replica ejected by its health checks")
        before_b = inference_count(b)
        results = load(gw.port, 100, 4)
        assert [s for s, _ in results].count(200) == 100, results[:3]
        assert inference_count(b) - before_b == 100
    finally:
        os.kill(a.pid, signal.SIGCONT)
    wait_until(lambda: replicas_of(gw)["r0"]["state"] == "healthy", timeout=60,
               what="the resumed replica healthy again")
    assert replicas_of(gw)["r0"]["ejections"] >= 1


def test_no_healthy_replica(gateway: Callable[..., BerthServer]) -> None:
    import tritonclient.grpc as grpcclient

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gw = gateway([dead], wait_for="listening")
    assert http_call(gw.port, "GET", "/v2/health/ready").status == 503
    resp = http_call(gw.port, "POST", PATH, body(list(map(float, [1]))))
    assert_error(resp, 503, "no healthy replica")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gw.grpc_port}")
    inp = grpcclient.InferInput("x", [1], "FP32")
    inp.set_data_from_numpy(np.array([1.0], dtype=np.float32))
    with pytest.raises(Exception) as info:
        client.infer("double", [inp])
    assert "UNAVAILABLE" in str(info.value.status()), info.value
    assert "no healthy replica" in str(info.value)
    listed = replicas_of(gw)["r0"]
    assert listed["state"] == "probing"
    assert listed["failures"] >= 1


# ------------------------------------------------------------ the replica set


def test_put_adds_and_removed_replica_drains(berth_server: Callable[..., BerthServer], model: str,
                                             gateway: Callable[..., BerthServer]) -> None:
    a = berth_server(model, "--instances", "1", label="a")
    b = berth_server(model, "--instances", "1", label="b")
    gw = gateway([a])
    wait_healthy(gw, ["r0"])
    url_a, url_b = f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}"
    resp = http_call(gw.port, "PUT", "/v2/gateway/replicas",
                     {"replicas": [{"name": "a", "url": url_a}, {"name": "b", "url": url_b}]})
    assert resp.status == 200, resp.body
    states = {r["name"]: r["state"] for r in resp.json()["replicas"]}
    # "a" is a new name (the old entry was r0): it starts probing; r0 drains
    assert states["a"] == "probing" and states["b"] == "probing"
    wait_healthy(gw, ["a", "b"])
    assert "r0" not in replicas_of(gw)
    before_b = inference_count(b)
    results = load(gw.port, 300)
    assert [s for s, _ in results].count(200) == 300
    assert inference_count(b) > before_b, "the added replica got no traffic"
    # a slow request in flight on "a", then "a" is removed: it finishes
    slow: dict[str, Any] = {}

    def slow_call() -> None:
        slow["r"] = http_call(gw.port, "POST", PATH, body([99.0]))

    # only "a" takes the slow request: make "b" look busy by removing it first
    resp = http_call(gw.port, "PUT", "/v2/gateway/replicas",
                     {"replicas": [{"name": "a", "url": url_a}]})
    assert resp.status == 200
    t = threading.Thread(target=slow_call)
    t.start()
    wait_until(lambda: replicas_of(gw)["a"]["in_flight"] == 1, timeout=30,
               what="the slow request in flight on a")
    resp = http_call(gw.port, "PUT", "/v2/gateway/replicas",
                     {"replicas": [{"name": "b", "url": url_b}]})
    assert resp.status == 200, resp.body
    listed = {r["name"]: r for r in resp.json()["replicas"]}
    assert listed["a"]["state"] == "draining"
    assert listed["a"]["in_flight"] == 1
    t.join(60)
    assert slow["r"].status == 200, slow["r"].body
    assert slow["r"].json()["outputs"][0]["data"] == [198.0]
    wait_until(lambda: "a" not in replicas_of(gw), timeout=30, what="a drained and gone")
    wait_healthy(gw, ["b"])
    before_a, before_b = inference_count(a), inference_count(b)
    results = load(gw.port, 100, 4)
    assert [s for s, _ in results].count(200) == 100
    assert inference_count(a) == before_a
    assert inference_count(b) - before_b == 100


# ------------------------------------------------------------------ attacks


def test_admin_endpoint_attacks(berth_server: Callable[..., BerthServer], model: str,
                                gateway: Callable[..., BerthServer], tmp_path: Path) -> None:
    replica = berth_server(model, "--instances", "1", label="replica")
    admin_file = tmp_path / "admin.txt"
    admin_file.write_text("admin-secret\n")
    user_file = tmp_path / "user.txt"
    user_file.write_text("user-secret\n")
    gw = gateway([replica], "--admin-tokens-file", str(admin_file),
                 "--auth-tokens-file", str(user_file))
    good = {"replicas": [{"name": "x", "url": f"http://127.0.0.1:{replica.port}"}]}
    admin = {"Authorization": "Bearer admin-secret"}
    path = "/v2/gateway/replicas"

    assert_error(http_call(gw.port, "GET", path), 401, "token")
    assert_error(http_call(gw.port, "PUT", path, good), 401, "token")
    assert_error(http_call(gw.port, "PUT", path, good, {"Authorization": "Bearer nope"}), 401)
    assert_error(http_call(gw.port, "PUT", path, good, {"Authorization": "Bearer user-secret"}),
                 403, "admin")
    # inference needs a token too (the gateway checks its own)
    assert_error(http_call(gw.port, "POST", PATH, body([1.0])), 401)
    # browser defences
    assert_error(http_call(gw.port, "PUT", path, good, {**admin, "Origin": "http://evil.example"}),
                 403, "origin")
    assert_error(http_call(gw.port, "PUT", path, good, {**admin, "Host": "evil.example"}),
                 403, "host")
    assert_error(http_call(gw.port, "PUT", path, json.dumps(good),
                           {**admin, "Content-Type": "text/plain"}), 415)
    # bad documents
    bad_json = {**admin, "Content-Type": "application/json"}
    assert_error(http_call(gw.port, "PUT", path, "{nope", bad_json), 400, "json")
    assert_error(http_call(gw.port, "PUT", path, {"replicas": "x"}, admin), 400, "replicas")
    assert_error(http_call(gw.port, "PUT", path, {"replicas": [{"name": "x"}]}, admin), 400)
    assert_error(http_call(gw.port, "PUT", path,
                           {"replicas": [{"name": "x", "url": "http://127.0.0.1:1", "cmd": "x"}]},
                           admin), 400)
    for url in ("http://192.0.2.10:8080", "http://10.0.0.1:80", "http://[2001:db8::1]:80"):
        msg = assert_error(http_call(gw.port, "PUT", path,
                                     {"replicas": [{"name": "x", "url": url}]}, admin),
                           400, "loopback")
        assert "allow_remote" in msg
    for url in ("http://example.com:80", "file:///etc/passwd", "http://127.0.0.1:80/x",
                "https://127.0.0.1:443"):
        assert_error(http_call(gw.port, "PUT", path,
                               {"replicas": [{"name": "x", "url": url}]}, admin), 400)
    assert_error(http_call(gw.port, "PUT", path,
                           {"replicas": [{"name": "../x", "url": "http://127.0.0.1:1"}]}, admin),
                 400, "name")
    big = json.dumps({"replicas": [{"name": "x", "url": "http://127.0.0.1:1"}], "pad": "a" * (2 << 20)})
    assert_error(http_call(gw.port, "PUT", path, big, bad_json), 413)
    assert_error(http_call(gw.port, "DELETE", path, None, admin), 405)
    # nothing of that changed the set
    listed = replicas_of(gw, "admin-secret")
    assert list(listed) == ["r0"] and listed["r0"]["state"] == "healthy"
    # the admin token does it
    resp = http_call(gw.port, "PUT", path, good, admin)
    assert resp.status == 200, resp.body
    assert [r["name"] for r in resp.json()["replicas"]][0] == "x"


def test_allow_remote_needs_an_admin_token(tmp_path: Path) -> None:
    gw = BerthServer(target=[], workdir=tmp_path, command="gateway", label="gateway",
                     extra_args=["--allow-remote"], wait_for="listening", ready_timeout=20)
    with pytest.raises(pytest.fail.Exception, match="admin tokens"):
        gw.start()


def test_non_loopback_replica_refused_at_start(tmp_path: Path) -> None:
    gw = BerthServer(target=[], workdir=tmp_path, command="gateway", label="gateway",
                     extra_args=["--replica", "http://192.0.2.1:8080"], wait_for="listening",
                     ready_timeout=20)
    with pytest.raises(pytest.fail.Exception, match="loopback"):
        gw.start()


# ------------------------------------------------------------------ sockets


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return ".".join(str(b) for b in raw[::-1]), int(port, 16)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return words.hex(), int(port, 16)


def _loopback(ip: str) -> bool:
    if "." in ip:
        return ip.startswith("127.")
    return ip == "0" * 31 + "1" or (ip.startswith("0" * 20 + "ffff") and ip[24:26] == "7f")


def _sockets(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def test_every_socket_on_loopback(three: list[BerthServer], gateway: Callable[..., BerthServer]) -> None:
    gw = gateway(three)
    wait_healthy(gw, ["r0", "r1", "r2"])
    assert [s for s, _ in load(gw.port, 60, 4)].count(200) == 60
    pids = [gw.pid]
    for r in three:
        pids += [r.pid, *children_of(r.pid)]
    inodes: set[str] = set()
    for pid in pids:
        inodes |= _sockets(pid)
    seen = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:]
        for line in lines:
            f = line.split()
            if f[9] not in inodes:
                continue
            seen += 1
            local, remote, st = _addr(f[1]), _addr(f[2]), f[3]
            assert _loopback(local[0]), f"{table}: a socket on {local}"
            listening = st == "0A"
            assert listening or _loopback(remote[0]), f"{table}: a connection to {remote}"
    # the gateway's two listeners, its pools to 3 replicas, the replicas' listeners
    assert seen >= 2 + 3 + 6, seen
