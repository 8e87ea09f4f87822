"""berthd on several network loops (``--network-loops N``, docs/threads.md):
N threads own the sockets (accept, read, parse, write) and hand complete
requests to the one engine loop. Real clients against a real server with 2
and 3 loops: many concurrent HTTP/1.1 keep-alive clients, HTTP/2 with prior
knowledge (curl), gRPC (tritonclient) with a decoupled stream, the binary
extension; exact answers, connections really spread over the loops
(``berth_network_loop_connections``), a client that leaves mid-request, a
SIGTERM drain with answers in flight, bad values refused with the key named,
and the browser/auth defences on every loop."""

from __future__ import annotations

import http.client
import json
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from berth_e2e import (  # noqa: E402
    SLOW_SOURCE,
    BerthServer,
    add_python_model,
    berth_executable,
    fill,
    read_response,
    server_env,
    wait_until,
)

TIMEOUT = 60.0

DOUBLE_SOURCE = '''
import numpy as np
import berth


class Double(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
'''

COUNTER_SOURCE = '''
import numpy as np
import berth


class Counter(berth.Model):
    """Yields n responses {"i": [k]}."""

    inputs = [berth.TensorSpec("n", "INT32", [1])]
    outputs = [berth.TensorSpec("i", "INT32", [1])]

    def predict(self, inputs):
        for k in range(int(inputs["n"][0])):
            yield {"i": np.array([k], dtype=np.int32)}
'''

TOKEN = "loops-token-1234567890"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loops-repo")
    add_python_model(root, "double", DOUBLE_SOURCE, "Double")
    add_python_model(root, "counter", COUNTER_SOURCE, "Counter", yaml_extra="instances: 1\n")
    return root


@pytest.fixture(scope="module", params=[2, 3], ids=["loops2", "loops3"])
def server(request: pytest.FixtureRequest, module_server: Any, repo: Path) -> BerthServer:
    s = module_server(str(repo), "--network-loops", str(request.param))
    s.loops = request.param  # type: ignore[attr-defined]
    return s


def infer_body(values: list[float]) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)],
                                   "data": values}]}).encode()


def answer_of(raw: bytes) -> list[float]:
    doc = json.loads(raw)
    return doc["outputs"][0]["data"]


def loop_metrics(server: BerthServer) -> tuple[dict[int, int], dict[int, int]]:
    text = server.get("/metrics").body.decode()
    conns = {int(m.group(1)): int(m.group(2)) for m in
             re.finditer(r'^berth_network_loop_connections\{loop="(\d+)"\} (\d+)$', text, re.M)}
    reqs = {int(m.group(1)): int(m.group(2)) for m in
            re.finditer(r'^berth_network_loop_requests_total\{loop="(\d+)"\} (\d+)$', text, re.M)}
    return conns, reqs


# ------------------------------------------------------------ spread, answers


def test_keep_alive_clients_spread_over_loops_with_exact_answers(server: BerthServer) -> None:
    n_clients, per_client = 24, 15
    conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
             for _ in range(n_clients)]
    try:
        def one(i: int) -> None:
            c = conns[i]
            for k in range(per_client):
                values = [float(i), float(k), 0.5]
                c.request("POST", "/v2/models/double/infer", body=infer_body(values),
                          headers={"Content-Type": "application/json"})
                resp = read_response(c.getresponse())
                assert resp.status == 200, resp.body
                assert answer_of(resp.body) == [2 * v for v in values]

        with ThreadPoolExecutor(n_clients) as ex:
            list(ex.map(one, range(n_clients)))
        # every connection is still open: the loops hold them now
        open_now, reqs = loop_metrics(server)
        assert sorted(open_now) == list(range(server.loops))  # type: ignore[attr-defined]
        assert sum(open_now.values()) >= n_clients
        assert sum(1 for v in open_now.values() if v > 0) >= 2, open_now
        assert sum(reqs.values()) >= n_clients * per_client
        assert sum(1 for v in reqs.values() if v > 0) >= 2, reqs
    finally:
        for c in conns:
            c.close()


def test_http2_prior_knowledge_on_every_loop(server: BerthServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is needed for HTTP/2 with prior knowledge")

    def one(i: int) -> list[float]:
        done = subprocess.run(
            ["curl", "-sS", "--http2-prior-knowledge", "-H", "Content-Type: application/json",
             "--data-binary", infer_body([float(i), 1.0]).decode(),
             f"{server.url}/v2/models/double/infer", "-w", "\n%{http_version}\n"],
            capture_output=True, text=True, timeout=TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr
        body, version = done.stdout.strip().split("\n")
        assert version == "2", done.stdout
        return answer_of(body.encode())

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(one, range(16)))
    for i, answer in enumerate(got):
        assert answer == [2.0 * i, 2.0]


def test_grpc_unary_binary_and_stream(server: BerthServer) -> None:
    def unary(i: int) -> None:
        c = grpcclient.InferenceServerClient(url=server.grpc_url)
        try:
            x = np.array([i, i + 0.25, -1.0], dtype=np.float32)
            inp = grpcclient.InferInput("x", [3], "FP32")
            inp.set_data_from_numpy(x)
            out = c.infer("double", [inp]).as_numpy("y")
            np.testing.assert_array_equal(out, x * 2)
        finally:
            c.close()

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(unary, range(16)))

    hc = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    try:
        x = np.arange(1000, dtype=np.float32)
        inp = httpclient.InferInput("x", [1000], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        out = hc.infer("double", [inp], outputs=[httpclient.InferRequestedOutput("y", binary_data=True)])
        np.testing.assert_array_equal(out.as_numpy("y"), x * 2)
    finally:
        hc.close()

    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        c.start_stream(callback=lambda result, error: got.put((result, error)))
        n = grpcclient.InferInput("n", [1], "INT32")
        n.set_data_from_numpy(np.array([5], dtype=np.int32))
        c.async_stream_infer("counter", [n], request_id="s1", enable_empty_final_response=True)
        seen = []
        while True:
            result, error = got.get(timeout=TIMEOUT)
            assert error is None, error
            if result.get_response().parameters["triton_final_response"].bool_param:
                break
            seen.append(int(result.as_numpy("i")[0]))
        assert seen == [0, 1, 2, 3, 4]
    finally:
        c.stop_stream()
        c.close()


def test_client_leaving_mid_request_does_not_hurt(server: BerthServer) -> None:
    # half a body, then the client goes: the loop sees it, nothing else breaks
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        s.sendall(b"POST /v2/models/double/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"inputs\"")
        s.close()
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        c.request("POST", "/v2/models/double/infer", body=infer_body([3.0]),
                  headers={"Content-Type": "application/json"})
        resp = read_response(c.getresponse())
        assert resp.status == 200 and answer_of(resp.body) == [6.0]
    finally:
        c.close()
    wait_until(lambda: sum(loop_metrics(server)[0].values()) <= 2, 30,
               "the abandoned connections to close")


def test_client_leaving_a_queued_request_cancels_it(
        berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    """The loop sees the hang-up, the engine loop gets "gone" through the
    queue, and the queued request leaves the queue without ever running."""
    marks = tmp_path / "marks.txt"
    root = tmp_path / "repo"
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=2.0), "Slow",
                     yaml_extra="max_batch_size: 0\ninstances: 1\n")
    server = berth_server(str(root), "--network-loops", "2")
    first: list[Any] = []
    t = threading.Thread(target=lambda: first.append(server.infer("slow", json.loads(infer_body([1.0])))))
    t.start()
    server.wait_queue("slow", inflight=1, queued=0)  # the first runs on the only worker
    body = infer_body([2.0])
    leaver = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    leaver.sendall(b"POST /v2/models/slow/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   b"Content-Type: application/json\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    server.wait_queue("slow", inflight=2, queued=1)
    leaver.close()
    server.wait_queue("slow", inflight=1, queued=0)  # dropped from the queue
    t.join(TIMEOUT)
    assert first[0].status == 200 and answer_of(first[0].body) == [2.0]
    assert answer_of(server.infer("slow", json.loads(infer_body([3.0]))).body) == [4.0]
    ran = [line.split()[1] for line in marks.read_text().splitlines()]
    assert ran == ["1.0", "3.0"]


# ------------------------------------------------------------ drain, SIGTERM


def test_sigterm_drains_in_flight_requests_on_every_loop(
        berth_server: Callable[..., BerthServer], tmp_path: Path) -> None:
    marks = tmp_path / "marks.txt"
    root = tmp_path / "repo"
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=1.0), "Slow",
                     yaml_extra="max_batch_size: 8\nmax_queue_delay_us: 200000\n")
    server = berth_server(str(root), "--network-loops", "2")
    n = 8
    results: list[Any] = [None] * n

    def one(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
        try:
            c.request("POST", "/v2/models/slow/infer", body=infer_body([float(i)]),
                      headers={"Content-Type": "application/json"})
            resp = read_response(c.getresponse())
            results[i] = (resp.status, answer_of(resp.body) if resp.status == 200 else resp.body)
        finally:
            c.close()

    scrapes = [0]

    def handed_over() -> int:  # requests the loops gave the engine, less the scrapes
        scrapes[0] += 1
        return sum(loop_metrics(server)[1].values()) - scrapes[0]

    base = handed_over()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: handed_over() - base >= n, 30, "every request to reach the engine")
    wait_until(lambda: marks.exists() and marks.read_text().strip() != "", 30,
               "the first batch to start")
    server.signal(signal.SIGTERM)
    for t in threads:
        t.join(TIMEOUT)
    assert results == [(200, [float(i) + 1]) for i in range(n)]
    assert server.wait(timeout=30) == 0


# ------------------------------------------------------------ bad values


@pytest.mark.parametrize("value", ["0", "-1", "x", "100000", "1.5"])
def test_bad_network_loops_flag_is_refused(value: str, repo: Path) -> None:
    done = subprocess.run([berth_executable(), "serve", str(repo), "--network-loops", value],
                          env=server_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--network-loops" in done.stderr or "BERTH_NETWORK_LOOPS" in done.stderr, done.stderr


@pytest.mark.parametrize("value", ["0", "-1", '"x"', "100000", "1.5"])
def test_bad_network_loops_config_names_the_key(value: str, repo: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "berth.yaml"
    cfg.write_text(f"server:\n  network_loops: {value}\n")
    done = subprocess.run([berth_executable(), "serve", str(repo), "--config", str(cfg)],
                          env=server_env(), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "server.network_loops" in done.stderr, done.stderr
    assert "auto" in done.stderr, done.stderr


def test_auto_starts_and_answers(berth_server: Callable[..., BerthServer], repo: Path,
                                 tmp_path: Path) -> None:
    cfg = tmp_path / "berth.yaml"
    cfg.write_text("server:\n  network_loops: auto\n")
    server = berth_server(str(repo), "--config", str(cfg))
    resp = server.post("/v2/models/double/infer", json.loads(infer_body([1.5])))
    assert resp.status == 200 and answer_of(resp.body) == [3.0]


# ------------------------------------------------------------ defences


@pytest.fixture(scope="module")
def guarded(module_server: Any, repo: Path) -> BerthServer:
    return module_server(str(repo), "--network-loops", "2", "--auth-tokens-env", "BERTH_LOOPS_TOKENS",
                         env={"BERTH_LOOPS_TOKENS": TOKEN})


def raw(server: BerthServer, headers: dict[str, str], body: bytes | None = None) -> tuple[int, bytes]:
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        c.request("POST" if body is not None else "GET",
                  "/v2/models/double/infer" if body is not None else "/v2/models/double",
                  body=body, headers=headers)
        resp = read_response(c.getresponse())
        return resp.status, resp.body
    finally:
        c.close()


def test_defences_hold_on_every_loop(guarded: BerthServer) -> None:
    ok = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    # many connections, so that each loop serves some of each kind
    for _ in range(8):
        assert raw(guarded, ok, infer_body([2.0]))[0] == 200
        assert raw(guarded, {**ok, "Authorization": "Bearer wrong"}, infer_body([2.0]))[0] == 401
        assert raw(guarded, {"Content-Type": "application/json"}, infer_body([2.0]))[0] == 401
        assert raw(guarded, {**ok, "Origin": "http://evil.example"}, infer_body([2.0]))[0] == 403
        assert raw(guarded, {**ok, "Host": "evil.example"}, infer_body([2.0]))[0] == 403
        assert raw(guarded, {**ok, "Content-Type": "text/plain"}, infer_body([2.0]))[0] == 415
    c = grpcclient.InferenceServerClient(url=guarded.grpc_url)
    try:
        inp = grpcclient.InferInput("x", [1], "FP32")
        inp.set_data_from_numpy(np.array([1.0], dtype=np.float32))
        with pytest.raises(Exception, match="(?i)unauthenticated|token|401"):
            c.infer("double", [inp], headers={"authorization": "Bearer wrong"})
        out = c.infer("double", [inp], headers={"authorization": f"Bearer {TOKEN}"})
        np.testing.assert_array_equal(out.as_numpy("y"), np.array([2.0], dtype=np.float32))
    finally:
        c.close()


# ------------------------------------------------------------ connection cap


def test_connection_cap_holds_across_loops(berth_server: Callable[..., BerthServer],
                                           repo: Path) -> None:
    cap, extra = 5, 11
    server = berth_server(str(repo), "--network-loops", "3", "--max-connections", str(cap))
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)

    def open_now() -> int:  # over the probe's own keep-alive connection
        probe.request("GET", "/metrics")
        text = read_response(probe.getresponse()).body.decode()
        return sum(int(v) for v in re.findall(
            r'^berth_network_loop_connections\{loop="\d+"\} (\d+)$', text, re.M))

    try:
        wait_until(lambda: open_now() == 1, 30, "the readiness connections to close")
        socks = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                 for _ in range(cap - 1 + extra)]
        answered = closed = 0
        try:
            for s in socks:
                try:
                    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    reply = s.recv(4096)
                except (ConnectionResetError, BrokenPipeError):
                    reply = b""
                if reply.startswith(b"HTTP/1.1 200 "):
                    answered += 1
                else:
                    assert reply == b"", reply[:200]
                    closed += 1
        finally:
            for s in socks:
                s.close()
        # one count for every loop: exactly cap connections (the probe's and
        # cap - 1 of these) were served
        assert (answered, closed) == (cap - 1, extra)
    finally:
        probe.close()

    def serves() -> bool:  # refused (closed at once) until the server sees the closes
        try:
            return server.get("/v2/health/ready").status == 200
        except (OSError, http.client.HTTPException):
            return False

    wait_until(serves, 30, "the server to serve again")
