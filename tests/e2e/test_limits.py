"""Input and transport limits, tried as an attacker would: absurd shapes
(a zero-element tensor with a dimension of 2^63 - 1) over REST JSON, REST
binary, KServe v1 and gRPC get 400 / INVALID_ARGUMENT and never reach the
model; a zero-row batch is answered without the model (or refused with 400
when the outputs' shapes are unknown), never 500; every 405 names the
methods its path takes; a request head trickled a byte at a time is cut
off; connections beyond server.max_connections are closed at once; and the
REST API is served on a Unix socket of mode 0600.

Each model below appends a line to its marks file per call, so a test can
count whether a request reached it.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    ModelZoo,
    add_python_model,
    assert_error,
    berth_executable,
    copy_into,
    fill,
    free_port,
    http_call,
    infer_body,
    outputs_by_name,
    server_env,
    tensor,
    wait_until,
)

grpc = pytest.importorskip("grpc", reason="grpcio is in the test extra (tritonclient[grpc])")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

ABSURD = 9223372036854775807  # 2^63 - 1
MAX_BODY = 1 << 20

COUNTED_SOURCE = '''
import numpy as np
import berth

MARKS = @MARKS@


class Counted(berth.Model):
    """y = the first two columns doubled; n = the batch's row count."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, 4])]
    outputs = [
        berth.TensorSpec("y", "FP32", [-1, 2]),
        berth.TensorSpec("n", "INT64", [-1]),
    ]

    def predict(self, inputs):
        with open(MARKS, "a") as f:
            f.write("call\\n")
        x = inputs["x"]
        return {"y": x[:, :2] * 2, "n": np.full(len(x), len(x), dtype=np.int64)}
'''

WIDE_SOURCE = '''
import berth

MARKS = @MARKS@


class Wide(berth.Model):
    """Its output's width is the model's choice: [-1, -1]."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, 4])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, -1])]

    def predict(self, inputs):
        with open(MARKS, "a") as f:
            f.write("call\\n")
        return {"y": inputs["x"]}
'''

FREE_SOURCE = '''
import berth

MARKS = @MARKS@


class Free(berth.Model):
    """No declared signature, no batching: it gets whatever is sent."""

    def predict(self, inputs):
        with open(MARKS, "a") as f:
            f.write("call\\n")
        return {"y": next(iter(inputs.values()))}
'''


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("limits-marks")


@pytest.fixture(scope="module")
def server(module_server: Any, zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory,
           marks: Path) -> BerthServer:
    root = tmp_path_factory.mktemp("limits-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    batching = "max_batch_size: 8\n"
    add_python_model(root, "counted", fill(COUNTED_SOURCE, MARKS=str(marks / "counted")),
                     "Counted", yaml_extra=batching)
    add_python_model(root, "wide", fill(WIDE_SOURCE, MARKS=str(marks / "wide")), "Wide",
                     yaml_extra=batching)
    add_python_model(root, "free", fill(FREE_SOURCE, MARKS=str(marks / "free")), "Free")
    return module_server(str(root), "--max-body-bytes", str(MAX_BODY))


def calls(marks: Path, model: str) -> int:
    path = marks / model
    return len(path.read_text().splitlines()) if path.exists() else 0


def counted_ok(server: BerthServer) -> None:
    """A good request still works (and reaches the model)."""
    doc = server.infer_ok("counted", infer_body([tensor("x", "FP32", [1, 4], [1, 2, 3, 4])]))
    assert outputs_by_name(doc)["y"]["data"] == [2.0, 4.0]


# ------------------------------------------------------------ absurd shapes

ABSURD_SHAPES = [
    [ABSURD, 0],
    [0, ABSURD],
    [ABSURD, ABSURD, 0],  # the product wraps 64 bits
    [1 << 32, 0, 1 << 32],  # exactly 2^64
    [MAX_BODY + 1, 0],  # just past what a body could carry
]


@pytest.mark.parametrize("model", ["counted", "free"])
@pytest.mark.parametrize("shape", ABSURD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_absurd_shape_over_rest_json(server: BerthServer, marks: Path, model: str,
                                     shape: list[int]) -> None:
    before = calls(marks, model)
    resp = server.infer(model, infer_body([tensor("x", "FP32", shape, [])]))
    assert_error(resp, 400, "x", "max_body_bytes")
    assert calls(marks, model) == before, "an absurd shape reached the model"
    counted_ok(server)


def test_negative_dimension_over_rest_json(server: BerthServer, marks: Path) -> None:
    before = calls(marks, "free")
    resp = server.infer("free", infer_body([tensor("x", "FP32", [-1, 4], [])]))
    assert_error(resp, 400, "shape")
    resp = server.infer("free", infer_body([tensor("x", "FP32", [-(1 << 63), 0], [])]))
    assert_error(resp, 400, "shape")
    assert calls(marks, "free") == before


def test_absurd_shape_over_rest_binary(server: BerthServer, marks: Path) -> None:
    before = calls(marks, "counted")
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [ABSURD, 0],
                                   "parameters": {"binary_data_size": 0}}]}).encode()
    resp = http_call(server.port, "POST", "/v2/models/counted/infer", head, {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    })
    assert_error(resp, 400, "max_body_bytes")
    # the same through Triton's HTTP client (binary data, shape set after)
    client = httpclient.InferenceServerClient(url=server.triton_url)
    try:
        inp = httpclient.InferInput("x", [0, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float32), binary_data=True)
        inp.set_shape([ABSURD, 0])
        with pytest.raises(InferenceServerException) as info:
            client.infer("counted", [inp])
        assert "max_body_bytes" in str(info.value)
    finally:
        client.close()
    assert calls(marks, "counted") == before
    counted_ok(server)


def test_absurd_shape_over_grpc(server: BerthServer, marks: Path) -> None:
    before = (calls(marks, "counted"), calls(marks, "free"))
    with grpc.insecure_channel(server.grpc_url) as channel:
        for model in ("counted", "free"):
            r = pb.ModelInferRequest(model_name=model)
            r.inputs.add(name="x", datatype="FP32", shape=[ABSURD, 0])
            r.raw_input_contents.append(b"")
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            with pytest.raises(grpc.RpcError) as info:
                call(r.SerializeToString(), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "max_body_bytes" in info.value.details()
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inp = grpcclient.InferInput("x", [0, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float32))
        inp.set_shape([0, ABSURD])
        with pytest.raises(InferenceServerException) as info2:
            client.infer("counted", [inp])
        assert "INVALID_ARGUMENT" in str(info2.value.status())
    finally:
        client.close()
    assert (calls(marks, "counted"), calls(marks, "free")) == before


def test_kserve_v1_empty_and_ragged_instances_never_reach_the_model(
        server: BerthServer, marks: Path) -> None:
    """KServe v1 takes its shape from the nesting of lists, so it cannot
    claim an absurd dimension; its edge cases still never give 500."""
    before = calls(marks, "counted")
    for body in ({"instances": []}, {"instances": [[]]}, {"instances": [[], []]}):
        resp = server.post("/v1/models/counted:predict", body)
        assert resp.status in (200, 400), f"{body}: {resp.status} {resp.body[:300]!r}"
        if resp.status == 200:
            assert resp.json()["predictions"] == []
        else:
            assert_error(resp, 400)
    assert calls(marks, "counted") == before


# ------------------------------------------------------------ zero rows


def test_zero_rows_over_rest_json_answered_without_the_model(
        server: BerthServer, marks: Path) -> None:
    before = calls(marks, "counted")
    doc = server.infer_ok("counted", infer_body([tensor("x", "FP32", [0, 4], [])]))
    outs = outputs_by_name(doc)
    assert outs["y"]["shape"] == [0, 2] and outs["y"]["data"] == []
    assert outs["y"]["datatype"] == "FP32"
    assert outs["n"]["shape"] == [0] and outs["n"]["data"] == []
    # only the requested output
    doc = server.infer_ok("counted", infer_body([tensor("x", "FP32", [0, 4], [])],
                                                outputs=["n"]))
    assert list(outputs_by_name(doc)) == ["n"]
    assert calls(marks, "counted") == before
    counted_ok(server)


def test_zero_rows_over_rest_binary_and_grpc(server: BerthServer, marks: Path) -> None:
    before = calls(marks, "counted")
    hc = httpclient.InferenceServerClient(url=server.triton_url)
    try:
        inp = httpclient.InferInput("x", [0, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float32), binary_data=True)
        res = hc.infer("counted", [inp], outputs=[
            httpclient.InferRequestedOutput("y", binary_data=True),
            httpclient.InferRequestedOutput("n", binary_data=True)])
        assert res.as_numpy("y").shape == (0, 2)
        assert res.as_numpy("n").shape == (0,)
    finally:
        hc.close()
    gc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inp = grpcclient.InferInput("x", [0, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float32))
        res = gc.infer("counted", [inp])
        assert res.as_numpy("y").shape == (0, 2)
        assert res.as_numpy("y").dtype == np.float32
        assert res.as_numpy("n").shape == (0,)
    finally:
        gc.close()
    assert calls(marks, "counted") == before


def test_zero_rows_refused_when_output_shapes_are_unknown(
        server: BerthServer, marks: Path) -> None:
    before = calls(marks, "wide")
    resp = server.infer("wide", infer_body([tensor("x", "FP32", [0, 4], [])]))
    assert_error(resp, 400, "0 rows", "'y'", "at least one row")
    gc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inp = grpcclient.InferInput("x", [0, 4], "FP32")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float32))
        with pytest.raises(InferenceServerException) as info:
            gc.infer("wide", [inp])
        assert "INVALID_ARGUMENT" in str(info.value.status())
    finally:
        gc.close()
    assert calls(marks, "wide") == before
    # one row still reaches it
    doc = server.infer_ok("wide", infer_body([tensor("x", "FP32", [1, 4], [1, 2, 3, 4])]))
    assert outputs_by_name(doc)["y"]["shape"] == [1, 4]


def test_zero_rows_to_a_scikit_learn_model_is_not_500(server: BerthServer) -> None:
    """What the Open Inference Protocol property-based tester found: a
    zero-row batch reached scikit-learn and answered 500."""
    resp = server.infer("iris", infer_body([tensor("input", "FP64", [0, 4], [])]))
    assert resp.status in (200, 400), f"{resp.status}: {resp.body[:500]!r}"
    if resp.status == 200:
        for out in resp.json()["outputs"]:
            assert out["shape"][0] == 0 and out["data"] == []
    else:
        assert_error(resp, 400, "at least one row")
    gc = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        inp = grpcclient.InferInput("input", [0, 4], "FP64")
        inp.set_data_from_numpy(np.zeros((0, 4), np.float64))
        try:
            res = gc.infer("iris", [inp])
            assert res.as_numpy("predict").shape[0] == 0
        except InferenceServerException as e:
            assert "INVALID_ARGUMENT" in str(e.status()), str(e)
    finally:
        gc.close()


def test_a_zero_row_request_batched_with_others_gets_zero_rows(
        server: BerthServer, marks: Path) -> None:
    """Many requests at once, some with 0 rows: each gets its own rows."""
    import concurrent.futures as cf

    def one(rows: int) -> tuple[int, dict[str, Any]]:
        data = [float(i) for i in range(rows * 4)]
        return rows, server.infer_ok("counted", infer_body([tensor("x", "FP32", [rows, 4],
                                                                   data)]))

    with cf.ThreadPoolExecutor(8) as pool:
        for rows, doc in pool.map(one, [0, 1, 0, 2, 0, 3, 1, 0] * 3):
            outs = outputs_by_name(doc)
            assert outs["y"]["shape"] == [rows, 2]
            assert outs["n"]["shape"] == [rows]
            assert len(outs["y"]["data"]) == rows * 2


# ------------------------------------------------------------ Allow headers

ALLOW = [
    ("POST", "/v2", "GET"),
    ("POST", "/v2/health/live", "GET"),
    ("DELETE", "/v2/health/ready", "GET"),
    ("DELETE", "/v2/models/counted", "GET"),
    ("PUT", "/v2/models/counted/ready", "GET"),
    ("POST", "/v2/models/counted/config", "GET"),
    ("GET", "/v2/models/counted/infer", "POST"),
    ("PUT", "/v2/models/counted/versions/1/infer", "POST"),
    ("POST", "/v2/models/stats", "GET"),
    ("POST", "/v1/models", "GET"),
    ("POST", "/v1/models/counted", "GET"),
    ("GET", "/v1/models/counted:predict", "POST"),
    ("GET", "/v2/repository/index", "POST"),
    ("GET", "/v2/repository/models/counted/load", "POST"),
    ("POST", "/metrics", "GET"),
    ("DELETE", "/v2/routes", "GET"),
    ("DELETE", "/v2/routes/some-route", "GET, POST"),
    ("POST", "/ui", "GET, HEAD"),
]


@pytest.mark.parametrize(("method", "path", "allow"), ALLOW, ids=lambda v: str(v))
def test_405_names_the_methods_of_its_path(server: BerthServer, method: str, path: str,
                                           allow: str) -> None:
    resp = http_call(server.port, method, path, b"{}" if method != "GET" else None,
                     {"Content-Type": "application/json"})
    assert resp.status == 405, f"{method} {path}: {resp.status} {resp.body[:300]!r}"
    assert resp.header("allow") == allow
    assert "application/json" in (resp.header("content-type") or "")
    # and the method it names works (or at least is not 405)
    named = allow.split(",")[0].strip()
    ok = http_call(server.port, named, path, b"{}" if named == "POST" else None,
                   {"Content-Type": "application/json"})
    assert ok.status != 405, f"{named} {path} answered 405 although Allow named it"


# ------------------------------------------------------- transport limits

MAX_CONNECTIONS = 6
HEADER_TIMEOUT_MS = 1000
TOKEN = "limits-test-token-5c1f"


@pytest.fixture(scope="module")
def edge(module_server: Any, zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory,
         ) -> BerthServer:
    """A server with a short head deadline, a small connection cap, a Unix
    socket and an inference token."""
    work = tmp_path_factory.mktemp("edge")
    tokens = work / "tokens"
    tokens.write_text(TOKEN + "\n")
    model = work / "iris.joblib"
    model.write_bytes(zoo.sklearn_classifier().read_bytes())
    sock = Path(f"/tmp/berth-limits-{os.getpid()}.sock")
    s = module_server(str(model), "--header-timeout-ms", str(HEADER_TIMEOUT_MS),
                      "--max-connections", str(MAX_CONNECTIONS), "--socket", str(sock),
                      "--auth-tokens-file", str(tokens))
    s.socket_path = sock  # type: ignore[attr-defined]
    return s


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def trickle(s: socket.socket, data: bytes, each_s: float = 0.2) -> tuple[int, bytes]:
    """Sends data one byte per each_s until the server answers or closes;
    returns (bytes sent, what the server sent). Bounded by len(data)."""
    got = b""
    sent = 0
    for byte in data:
        try:
            s.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += 1
        readable, _, _ = select.select([s], [], [], each_s)
        if readable:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:
                break
            got += chunk
            if not chunk or got:
                break
    # whatever follows, up to the close
    s.settimeout(30)
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, TimeoutError, OSError):
        pass
    return sent, got


HEAD = (b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"User-Agent: a-very-slow-client-that-sends-one-byte-at-a-time\r\n\r\n")


def test_a_trickled_head_is_cut_off(edge: BerthServer) -> None:
    slow = connect(edge.port)
    try:
        slow.sendall(HEAD[:3])  # the deadline starts with the first byte
        # a normal request on another connection is served meanwhile
        resp = http_call(edge.port, "GET", "/v2/health/ready")
        assert resp.status == 200
        sent, got = trickle(slow, HEAD[3:])
    finally:
        slow.close()
    # 200 ms a byte: the whole head would take ~25 s; 1 s is the deadline
    assert sent < len(HEAD) - 3, "the trickled head was never cut off"
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert b"header_timeout_ms" in got
    assert b"connection: close" in got.lower()
    assert http_call(edge.port, "GET", "/v2/health/ready").status == 200


def test_a_trickled_http2_preface_is_cut_off(edge: BerthServer) -> None:
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    for port in (edge.port, edge.grpc_port):
        s = connect(port)
        try:
            sent, got = trickle(s, preface)
        finally:
            s.close()
        assert sent < len(preface), f"port {port}: the trickled preface was never cut off"
        assert got == b"", got[:200]


def test_a_complete_head_after_a_pause_is_served(edge: BerthServer) -> None:
    """The deadline counts from the head's first byte: an idle keep-alive
    connection is not cut by it, only by the idle timeout."""
    s = connect(edge.port)
    try:
        readable, _, _ = select.select([s], [], [], 2 * HEADER_TIMEOUT_MS / 1000)
        assert not readable, "the server closed an idle connection at the head deadline"
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(30)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
    finally:
        s.close()


def metric(edge: BerthServer, name: str) -> float:
    resp = http_call(edge.port, "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200, resp.body[:300]
    for line in resp.body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def serves(edge: BerthServer) -> bool:
    try:
        return http_call(edge.port, "GET", "/v2/health/ready", timeout=10).status == 200
    except OSError:
        return False


def test_connections_beyond_the_cap_are_closed_at_once(edge: BerthServer) -> None:
    wait_until(lambda: serves(edge) or None, timeout=30, what="the server serves")
    refused_before = metric(edge, "berth_connections_refused_total")
    extra = 4
    socks = [connect(edge.port) for _ in range(MAX_CONNECTIONS + extra)]
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
    assert answered == MAX_CONNECTIONS
    assert closed == extra
    # once they are gone the server serves again, and counted the refusals
    wait_until(lambda: serves(edge) or None, timeout=30, what="the server serves again")
    assert metric(edge, "berth_connections_refused_total") >= refused_before + extra
    assert metric(edge, "berth_connections_open") >= 1
    assert edge.log_text().count("connection limit reached") >= 1


# ------------------------------------------------------------ Unix socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(self.unix_path)
        self.sock = s


def unix_call(path: Path, method: str, target: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = UnixHTTPConnection(str(path))
    try:
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, target, body=json.dumps(body) if body is not None else None,
                     headers=hdrs)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


IRIS_ROW = infer_body([tensor("input", "FP64", [1, 4], [5.1, 3.5, 1.4, 0.2])])


def test_unix_socket_mode_and_http_client(edge: BerthServer) -> None:
    path: Path = edge.socket_path  # type: ignore[attr-defined]
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    status, body = unix_call(path, "GET", "/v2/health/ready")
    assert status == 200, body
    # tokens apply on the socket as on TCP
    status, body = unix_call(path, "POST", "/iris/infer".join(["/v2/models", ""]), IRIS_ROW)
    assert status == 401, body
    status, body = unix_call(path, "POST", "/v2/models/iris/infer", IRIS_ROW,
                             {"Authorization": "Bearer wrong"})
    assert status == 401, body
    status, body = unix_call(path, "POST", "/v2/models/iris/infer", IRIS_ROW,
                             {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, body
    assert outputs_by_name(json.loads(body))["predict"]["data"] == [0]
    # the same limits: a bad shape is 400 there too
    status, body = unix_call(path, "POST", "/v2/models/iris/infer",
                             infer_body([tensor("input", "FP64", [ABSURD, 0], [])]),
                             {"Authorization": f"Bearer {TOKEN}"})
    assert status == 400, body


@pytest.mark.parametrize("proto", ["--http1.1", "--http2-prior-knowledge"])
def test_unix_socket_with_curl(edge: BerthServer, proto: str) -> None:
    path: Path = edge.socket_path  # type: ignore[attr-defined]
    curl = "/usr/bin/curl"
    if not os.path.exists(curl):
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", proto, "--unix-socket", str(path), "-H",
         f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/json",
         "-d", json.dumps(IRIS_ROW), "-w", "\\n%{http_code} %{http_version}",
         "http://localhost/v2/models/iris/infer"],
        capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    body, _, tail = out.stdout.decode().rpartition("\n")
    code, version = tail.split()
    assert code == "200", out.stdout
    assert version == ("2" if "http2" in proto else "1.1")
    assert outputs_by_name(json.loads(body))["predict"]["data"] == [0]


def run_berth(args: list[str], workdir: Path) -> subprocess.CompletedProcess[bytes]:
    """berth serve that must fail at start (bounded by a timeout)."""
    return subprocess.run(
        [berth_executable(), "serve", *args, "--host", "127.0.0.1", "--port",
         str(free_port()), "--grpc-port", str(free_port())],
        capture_output=True, timeout=120, env=server_env(), cwd=str(workdir), check=False)


def test_socket_path_that_is_a_file_is_refused(zoo: ModelZoo, tmp_path: Path) -> None:
    victim = tmp_path / "important.txt"
    victim.write_text("keep me")
    out = run_berth([str(zoo.sklearn_classifier()), "--socket", str(victim)], tmp_path)
    assert out.returncode != 0
    assert b"not a socket" in out.stdout + out.stderr
    assert victim.read_text() == "keep me"
    long_path = tmp_path / ("s" * 200)
    out = run_berth([str(zoo.sklearn_classifier()), "--socket", str(long_path)], tmp_path)
    assert out.returncode != 0
    assert b"longer than" in out.stdout + out.stderr


@pytest.fixture
def stale_socket() -> Iterator[Path]:
    path = Path(f"/tmp/berth-stale-{os.getpid()}.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the file stays: a stale socket
    try:
        yield path
    finally:
        if path.exists():
            path.unlink()


def test_a_stale_socket_is_replaced_and_removed_at_exit(
        berth_server: Any, zoo: ModelZoo, stale_socket: Path) -> None:
    assert stale_socket.exists()
    s = berth_server(str(zoo.sklearn_classifier()), "--socket", str(stale_socket))
    status, _ = unix_call(stale_socket, "GET", "/v2/health/ready")
    assert status == 200
    assert stat.S_IMODE(os.stat(stale_socket).st_mode) == 0o600
    # a second server does not take a socket that is in use
    out = run_berth([str(zoo.sklearn_classifier()), "--socket", str(stale_socket)],
                    stale_socket.parent)
    assert out.returncode != 0
    assert b"another process listens" in out.stdout + out.stderr
    status, _ = unix_call(stale_socket, "GET", "/v2/health/ready")
    assert status == 200
    s.close()
    assert s.returncode == 0
    assert not stale_socket.exists(), "the socket was left behind at exit"
