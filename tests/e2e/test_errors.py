"""Bad requests get a clear 4xx with a JSON {"error": "..."} naming the
problem, model failures a 500 with the model's message, and the server
keeps serving through all of it. Invalid requests never reach a worker."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import (
    CHECKED_SOURCE,
    RAISER_SOURCE,
    REJECTER_SOURCE,
    TEXT_SOURCE,
    BerthServer,
    ModelZoo,
    Response,
    add_python_model,
    assert_error,
    copy_into,
    fill,
    http_call,
    infer_body,
    outputs_by_name,
    tensor,
)

MAX_BODY = 65536
ROW = [5.1, 3.5, 1.4, 0.2]
GOOD_IRIS = json.dumps(infer_body([tensor("input", "FP64", [1, 4], ROW)])).encode()


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("marks") / "checked.log"


@pytest.fixture(scope="module")
def server(module_server: Any, zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory, marks: Path) -> BerthServer:
    root = tmp_path_factory.mktemp("errors-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "checked", fill(CHECKED_SOURCE, MARKS=str(marks)), "Checked")
    add_python_model(root, "text", TEXT_SOURCE, "Text")
    add_python_model(root, "raiser", RAISER_SOURCE, "Raiser")
    add_python_model(root, "rejecter", REJECTER_SOURCE, "Rejecter")
    server = module_server(str(root), "--max-body-bytes", str(MAX_BODY))
    server.initial_workers = server.worker_pids()  # type: ignore[attr-defined]
    return server


def predict_calls(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


def still_serving(server: BerthServer) -> None:
    resp = server.post("/v2/models/iris/infer", GOOD_IRIS)
    assert resp.status == 200, f"the server stopped serving: {resp.status} {resp.body[:300]!r}"
    assert outputs_by_name(resp.json())["predict"]["data"] == [0]


def j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def vec_offset(vec: Any = None, offset: Any = None, offset_shape: list[int] | None = None) -> bytes:
    """A request for the "checked" model (vec FP32 [-1, 3], offset INT64 [-1])."""
    inputs = [
        tensor("vec", "FP32", [1, 3], vec if vec is not None else [1.0, 2.0, 3.0]),
        tensor("offset", "INT64", offset_shape or [1], offset if offset is not None else [4]),
    ]
    return j({"inputs": inputs})


# (id, model, body, status, words the message must contain)
BAD_REQUESTS: list[tuple[str, str, bytes, int | tuple[int, ...], tuple[str, ...]]] = [
    ("malformed-json", "iris", b'{"inputs": [', 400, ("json",)),
    ("not-json", "iris", b"hello there", 400, ("json",)),
    ("empty-body", "iris", b"", 400, ()),
    ("non-utf8-outside-strings", "iris", b'{"inputs": \xff\xfe}', 400, ()),
    ("body-is-array", "iris", b"[1, 2, 3]", 400, ("object",)),
    ("inputs-missing", "iris", j({"id": "x"}), 400, ("inputs",)),
    ("inputs-not-a-list", "iris", j({"inputs": {"name": "input"}}), 400, ("inputs",)),
    ("name-not-a-string", "iris", j({"inputs": [tensor(5, "FP64", [1, 4], ROW)]}), 400, ("name",)),  # type: ignore[arg-type]
    ("shape-not-a-list", "iris", j({"inputs": [{"name": "input", "datatype": "FP64", "shape": "1,4", "data": ROW}]}), 400, ("shape",)),
    ("shape-negative", "iris", j({"inputs": [tensor("input", "FP64", [-1, 4], ROW)]}), 400, ("shape",)),
    ("data-missing", "iris", j({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4]}]}), 400, ("input",)),
    ("data-not-a-list", "iris", j({"inputs": [tensor("input", "FP64", [1, 4], "5.1,3.5,1.4,0.2")]}), 400, ("input",)),
    ("element-wrong-type", "iris", j({"inputs": [tensor("input", "FP64", [1, 4], ["a", "b", "c", "d"])]}), 400, ("input",)),
    ("datatype-missing", "iris", j({"inputs": [{"name": "input", "shape": [1, 4], "data": ROW}]}), 400, ("datatype",)),
    ("datatype-unknown", "iris", j({"inputs": [tensor("input", "FP128", [1, 4], ROW)]}), 400, ("FP128",)),
    ("data-shorter-than-shape", "iris", j({"inputs": [tensor("input", "FP64", [2, 4], ROW)]}), 400, ("input", "8")),
    ("data-longer-than-shape", "iris", j({"inputs": [tensor("input", "FP64", [1, 4], ROW + ROW)]}), 400, ("input", "4")),
    ("nested-ragged", "iris", j({"inputs": [tensor("input", "FP64", [2, 4], [ROW, ROW[:2]])]}), 400, ("input",)),
    # A shape whose tensor could never fit: refusing it as too large is as right as 400.
    ("huge-shape", "iris", j({"inputs": [tensor("input", "FP64", [10**12, 4], ROW)]}), (400, 413), ("input",)),
    ("wrong-datatype", "iris", j({"inputs": [tensor("input", "FP32", [1, 4], ROW)]}), 400, ("input", "FP64")),
    ("wrong-shape", "iris", j({"inputs": [tensor("input", "FP64", [1, 5], ROW + [1.0])]}), 400, ("input", "shape")),
    ("wrong-rank", "iris", j({"inputs": [tensor("input", "FP64", [4], ROW)]}), 400, ("input", "shape")),
    ("unknown-input", "iris", j({"inputs": [tensor("features", "FP64", [1, 4], ROW)]}), 400, ("features",)),
    ("extra-unknown-input", "iris", j({"inputs": [tensor("input", "FP64", [1, 4], ROW), tensor("extra", "FP64", [1], [1.0])]}), 400, ("extra",)),
    ("duplicate-input", "iris", j({"inputs": [tensor("input", "FP64", [1, 4], ROW), tensor("input", "FP64", [1, 4], ROW)]}), 400, ("input",)),
    ("unknown-output", "iris", j(infer_body([tensor("input", "FP64", [1, 4], ROW)], outputs=["probabilities"])), 400, ("probabilities",)),
    ("missing-input", "checked", j({"inputs": [tensor("vec", "FP32", [1, 3], [1.0, 2.0, 3.0])]}), 400, ("offset",)),
    ("int-not-integer", "checked", vec_offset(offset=[1.5]), 400, ("offset",)),
    ("int-out-of-range", "checked", vec_offset(offset=[2**70]), 400, ("offset",)),
    ("bool-for-int", "checked", vec_offset(offset=[True]), 400, ("offset",)),
    ("string-for-float", "checked", vec_offset(vec=["1", "2", "3"]), 400, ("vec",)),
    ("fp32-out-of-range", "checked", vec_offset(vec=[1e39, 0.0, 0.0]), 400, ("vec",)),
    ("id-not-a-string", "checked", j({"id": 5, **json.loads(vec_offset())}), 400, ("id",)),
    ("parameters-not-an-object", "checked", j({"parameters": [1], **json.loads(vec_offset())}), 400, ("parameters",)),
    ("second-input-wrong-shape", "checked", vec_offset(offset=[[1, 2]], offset_shape=[1, 2]), 400, ("offset", "shape")),
    ("non-utf8-in-bytes-data", "text", b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["ok\xff\xfe"]}]}', 400, ("utf|0xff",)),
    ("non-utf8-in-name", "text", b'{"inputs":[{"name":"te\xc3xt","datatype":"BYTES","shape":[1],"data":["ok"]}]}', 400, ()),
    ("lone-surrogate-escape", "text", b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["\\ud800"]}]}', 400, ()),
    ("bytes-data-not-strings", "text", j({"inputs": [tensor("text", "BYTES", [2], [1, 2])]}), 400, ("text",)),
]


@pytest.mark.parametrize(
    "model,body,status,words", [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_is_a_clear_4xx(
    server: BerthServer, marks: Path, model: str, body: bytes, status: int | tuple[int, ...], words: tuple[str, ...]
) -> None:
    calls = predict_calls(marks)
    resp = server.post(f"/v2/models/{model}/infer", body)
    assert_error(resp, status, *words)
    assert predict_calls(marks) == calls, "an invalid request reached the model's predict()"
    still_serving(server)


def test_good_request_to_the_checked_model(server: BerthServer, marks: Path) -> None:
    """The control for the bad requests above: a valid one does reach the model."""
    calls = predict_calls(marks)
    doc = server.infer_ok("checked", vec_offset())
    assert outputs_by_name(doc)["total"]["data"] == [10.0]
    assert predict_calls(marks) == calls + 1


def test_good_request_to_the_text_model(server: BerthServer) -> None:
    doc = server.infer_ok("text", infer_body([tensor("text", "BYTES", [2], ["h\u00e9llo", ""])]))
    assert outputs_by_name(doc)["length"]["data"] == [6, 0]


# ------------------------------------------------------------ routing errors


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/v2/models/ghost", None),
        ("GET", "/v2/models/ghost/ready", None),
        ("POST", "/v2/models/ghost/infer", GOOD_IRIS),
        ("GET", "/v2/models/ghost/versions/1", None),
    ],
)
def test_unknown_model_is_404(server: BerthServer, method: str, path: str, body: bytes | None) -> None:
    resp = http_call(server.port, method, path, body, {"Content-Type": "application/json"})
    # Triton's wording, which Triton's own client examples look for
    msg = assert_error(resp, 404, "ghost")
    assert msg.startswith("Request for unknown model: 'ghost' is not found"), msg
    still_serving(server)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("GET", "/v2/models/iris/versions/7", None),
        ("GET", "/v2/models/iris/versions/7/ready", None),
        ("POST", "/v2/models/iris/versions/7/infer", GOOD_IRIS),
    ],
)
def test_unknown_version_is_404(server: BerthServer, method: str, path: str, body: bytes | None) -> None:
    resp = http_call(server.port, method, path, body, {"Content-Type": "application/json"})
    assert_error(resp, 404, "7")
    still_serving(server)


def test_a_version_that_is_no_number_gets_tritons_text(server: BerthServer) -> None:
    resp = http_call(server.port, "POST", "/v2/models/iris/versions/wrong_specification/infer",
                     GOOD_IRIS, {"Content-Type": "application/json"})
    msg = assert_error(resp, 400, "wrong_specification")
    assert msg.startswith(
        "failed to get model version from specified version string 'wrong_specification'"
    ), msg
    still_serving(server)


@pytest.mark.parametrize("path", ["/v2/nothing-here", "/v3/models/iris", "/v2/models/iris/explain", "/v2/"])
def test_unknown_endpoint_is_404(server: BerthServer, path: str) -> None:
    assert_error(server.get(path), 404)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/v2/models/iris/infer"),
        ("POST", "/v2/health/live"),
        ("POST", "/v2/health/ready"),
        ("PUT", "/v2/models/iris"),
        ("DELETE", "/v2/models/iris"),
        ("POST", "/v2/models/iris/ready"),
        ("PATCH", "/v2"),
    ],
)
def test_wrong_method_is_405(server: BerthServer, method: str, path: str) -> None:
    body = GOOD_IRIS if method in ("POST", "PUT", "PATCH") else None
    resp = http_call(server.port, method, path, body, {"Content-Type": "application/json"})
    assert_error(resp, 405)
    still_serving(server)


# ------------------------------------------------------------------ body limit


def raw_exchange(port: int, data: bytes, timeout: float = 20.0) -> Response:
    """Sends raw bytes on a new connection and reads one HTTP response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        buf = b""
        head_end = -1
        length = None
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if head_end < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    for line in buf[:head_end].split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            length = int(v.strip())
            if head_end >= 0 and length is not None and len(buf) >= head_end + 4 + length:
                break
    assert head_end >= 0, f"no HTTP response came back: {buf[:300]!r}"
    lines = buf[:head_end].split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode()] = v.strip().decode()
    body = buf[head_end + 4 :]
    if length is not None:
        body = body[:length]
    return Response(status, headers, body)


def padded_iris_body(size: int) -> bytes:
    body = GOOD_IRIS
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


def test_body_at_the_limit_is_accepted(server: BerthServer) -> None:
    body = padded_iris_body(MAX_BODY)
    assert len(body) == MAX_BODY
    resp = server.post("/v2/models/iris/infer", body)
    assert resp.status == 200, resp.body[:300]


def test_body_over_the_limit_is_413(server: BerthServer) -> None:
    body = padded_iris_body(MAX_BODY + 1)
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert_error(raw_exchange(server.port, request), 413)
    still_serving(server)


def test_large_body_far_over_the_limit_is_413(server: BerthServer) -> None:
    body = padded_iris_body(MAX_BODY * 16)
    resp = server.post("/v2/models/iris/infer", body)
    assert_error(resp, 413)
    still_serving(server)


def test_chunked_body_over_the_limit_is_413(server: BerthServer) -> None:
    body = padded_iris_body(MAX_BODY + 4096)
    chunks = b""
    for i in range(0, len(body), 8192):
        piece = body[i : i + 8192]
        chunks += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    chunks += b"0\r\n\r\n"
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    assert_error(raw_exchange(server.port, request), 413)
    still_serving(server)


def test_chunked_body_within_the_limit_is_served(server: BerthServer) -> None:
    body = GOOD_IRIS
    half = len(body) // 2
    chunks = (
        f"{half:x}\r\n".encode() + body[:half] + b"\r\n"
        + f"{len(body) - half:x}\r\n".encode() + body[half:] + b"\r\n0\r\n\r\n"
    )
    request = (
        b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    )
    resp = raw_exchange(server.port, request)
    assert resp.status == 200, resp.body[:300]
    assert outputs_by_name(resp.json())["predict"]["data"] == [0]


def test_http2_body_over_the_limit_is_413(server: BerthServer, tmp_path: Path) -> None:
    body_file = tmp_path / "big.json"
    body_file.write_bytes(padded_iris_body(MAX_BODY * 2))
    proc = subprocess.run(
        [
            "curl", "-sS", "--http2-prior-knowledge", "--max-time", "60",
            "-w", "\n%{http_version} %{response_code}",
            "-X", "POST", "-H", "Content-Type: application/json",
            "--data-binary", f"@{body_file}",
            f"{server.url}/v2/models/iris/infer",
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    text = proc.stdout.decode()
    body, _, tail = text.rpartition("\n")
    assert tail.split() == ["2", "413"], text[-500:]
    assert isinstance(json.loads(body)["error"], str)
    still_serving(server)


def test_garbage_request_line_is_4xx(server: BerthServer) -> None:
    resp = raw_exchange(server.port, b"THIS IS NOT HTTP\r\n\r\n")
    assert 400 <= resp.status < 500, resp
    still_serving(server)


# --------------------------------------------------------------- model errors


def test_model_exception_is_500_with_its_message(server: BerthServer) -> None:
    before = server.worker_pids().get("raiser/1/0")
    body = infer_body([tensor("x", "FP32", [2], [1.0, -1.0])])
    msg = assert_error(server.infer("raiser", body), 500, "boom: the model exploded on a negative value")
    assert "raiser" in msg
    # The worker survives a Python exception and serves the next request.
    doc = server.infer_ok("raiser", infer_body([tensor("x", "FP32", [2], [1.0, 2.0])]))
    assert outputs_by_name(doc)["y"]["data"] == [1.0, 2.0]
    assert server.worker_pids().get("raiser/1/0") == before
    still_serving(server)


def test_invalid_input_from_the_model_is_400(server: BerthServer) -> None:
    body = infer_body([tensor("temperature", "FP64", [2], [300.0, -4.0])])
    assert_error(server.infer("rejecter", body), 400, "temperature must be positive")
    doc = server.infer_ok("rejecter", infer_body([tensor("temperature", "FP64", [2], [4.0, 9.0])]))
    assert outputs_by_name(doc)["y"]["data"] == [2.0, 3.0]
    still_serving(server)


# --------------------------------------------------------------------- after


def test_server_still_healthy_after_every_error(server: BerthServer) -> None:
    """Runs last in this module: after every bad request above, the server
    is live and ready, answers, and no worker was replaced."""
    assert server.running()
    assert server.get("/v2/health/live").status == 200
    assert server.get("/v2/health/ready").status == 200
    still_serving(server)
    assert server.worker_pids() == server.initial_workers  # type: ignore[attr-defined]
