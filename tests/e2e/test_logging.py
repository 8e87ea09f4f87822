"""Structured logs: the access log of every frontend (REST over HTTP/1.1 and
HTTP/2, KServe v1, gRPC) with request ids echoed to the client, worker
stdout/stderr forwarded line by line with the worker's identity, and the
level and format chosen by flag or environment (docs/logging.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import (
    BerthServer,
    add_python_model,
    h2_exchange,
    infer_body,
    tensor,
    wait_until,
)
from tritonclient.utils import InferenceServerException

grpcclient = pytest.importorskip("tritonclient.grpc")

PRINTER_SOURCE = """
import logging
import os
import sys
import numpy as np
import berth


class Printer(berth.Model):
    \"\"\"y = 2x; prints to stdout and stderr. x[0] == 7 prints a line longer
    than the engine's line limit; x[0] == 13 writes a line without its
    newline and exits on the spot.\"\"\"

    inputs = [berth.TensorSpec("x", "FP32", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1])]

    def load(self):
        print("printer says hello on stdout")
        print("printer says hello on stderr", file=sys.stderr)
        logging.getLogger("printer").warning("printer warns through logging")

    def predict(self, inputs):
        x = inputs["x"]
        first = float(x[0]) if x.size else 0.0
        if first == 7:
            print("L" * 40000)
        if first == 13:
            sys.stdout.write("last words without a newline")
            sys.stdout.flush()
            os._exit(3)
        print("predict saw %g" % first)
        return {"y": x * 2}
"""

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def body(x: float, **kw: Any) -> dict[str, Any]:
    return infer_body([tensor("x", "FP32", [1], [x])], **kw)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("logrepo")
    add_python_model(root, "printer", PRINTER_SOURCE, "Printer")
    return root


@pytest.fixture(scope="module")
def server(module_server: Callable[..., BerthServer], repo: Path) -> BerthServer:
    return module_server(str(repo), "--access-log", "--log-format", "json", wait_for=["printer"])


def records_where(server: BerthServer, **match: Any) -> list[dict[str, Any]]:
    return [
        r for r in server.log_records() if all(r.get(k) == v for k, v in match.items())
    ]


def wait_record(server: BerthServer, timeout: float = 15.0, **match: Any) -> dict[str, Any]:
    found = wait_until(
        lambda: records_where(server, **match) or None,
        timeout,
        f"a log record with {match}",
        on_timeout=server.log_tail,
    )
    return found[-1]


# ------------------------------------------------------------------ access log


def test_rest_access_record_has_every_field(server: BerthServer) -> None:
    payload = json.dumps(body(1.5)).encode()
    resp = server.post("/v2/models/printer/infer", payload, headers={"X-Request-ID": "req-rest-1"})
    assert resp.status == 200
    assert resp.header("x-request-id") == "req-rest-1"
    rec = wait_record(server, msg="access", request_id="req-rest-1")
    assert rec["level"] == "info"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", rec["ts"]), rec
    assert rec["protocol"] == "http/1.1"
    assert rec["method"] == "POST"
    assert rec["path"] == "/v2/models/printer/infer"
    assert rec["model"] == "printer"
    assert rec["version"] == "1"
    assert rec["status"] == 200
    assert isinstance(rec["latency_ms"], float) and rec["latency_ms"] >= 0
    assert rec["bytes_in"] == len(payload)
    assert rec["bytes_out"] == len(resp.body)
    assert rec["peer"].startswith("127.0.0.1:")


def test_oip_id_becomes_the_request_id(server: BerthServer) -> None:
    resp = server.infer("printer", body(2.0, id="oip-id-42"))
    assert resp.status == 200
    assert resp.json()["id"] == "oip-id-42"
    assert resp.header("x-request-id") == "oip-id-42"
    wait_record(server, msg="access", request_id="oip-id-42", status=200)


def test_header_wins_over_oip_id(server: BerthServer) -> None:
    resp = server.post(
        "/v2/models/printer/infer", body(2.0, id="body-id"), headers={"X-Request-ID": "header-id"}
    )
    assert resp.status == 200 and resp.header("x-request-id") == "header-id"
    wait_record(server, msg="access", request_id="header-id")
    assert not records_where(server, msg="access", request_id="body-id")


def test_generated_request_id_is_echoed_and_logged(server: BerthServer) -> None:
    resp = server.infer("printer", body(3.0))
    assert resp.status == 200
    rid = resp.header("x-request-id")
    assert rid is not None and HEX32.match(rid), rid
    rec = wait_record(server, msg="access", request_id=rid)
    assert rec["status"] == 200 and rec["model"] == "printer"


def test_unusable_client_id_is_replaced(server: BerthServer) -> None:
    resp = server.post(
        "/v2/models/printer/infer", body(1.0), headers={"X-Request-ID": "has space"}
    )
    assert resp.status == 200
    rid = resp.header("x-request-id")
    assert rid is not None and HEX32.match(rid), rid


def test_errors_and_non_infer_routes_are_logged(server: BerthServer) -> None:
    resp = server.post(
        "/v2/models/nope/infer", body(1.0), headers={"X-Request-ID": "err-404"}
    )
    assert resp.status == 404 and resp.header("x-request-id") == "err-404"
    rec = wait_record(server, msg="access", request_id="err-404")
    assert rec["status"] == 404 and rec["model"] is None and rec["version"] is None
    resp = server.post(
        "/v2/models/printer/infer",
        infer_body([tensor("x", "FP64", [1], [1.0])]),
        headers={"X-Request-ID": "err-400"},
    )
    assert resp.status == 400
    rec = wait_record(server, msg="access", request_id="err-400")
    assert rec["status"] == 400 and rec["model"] == "printer"
    resp = server.get("/v2/health/ready")
    rid = resp.header("x-request-id")
    rec = wait_record(server, msg="access", request_id=rid)
    assert rec["path"] == "/v2/health/ready" and rec["method"] == "GET"


def test_http2_access_record(server: BerthServer) -> None:
    answers = h2_exchange(
        server.port,
        [("POST", "/v2/models/printer/infer", json.dumps(body(4.0, id="h2-req-1")).encode())],
    )
    assert answers[0].status == 200
    rec = wait_record(server, msg="access", request_id="h2-req-1")
    assert rec["protocol"] == "http/2"
    assert rec["status"] == 200 and rec["model"] == "printer"


def test_kserve_v1_access_record(server: BerthServer) -> None:
    resp = server.post(
        "/v1/models/printer:predict", {"instances": [1.0, 2.0]}, headers={"X-Request-ID": "v1-req"}
    )
    assert resp.status == 200, resp.body
    assert resp.header("x-request-id") == "v1-req"
    rec = wait_record(server, msg="access", request_id="v1-req")
    assert rec["path"] == "/v1/models/printer:predict"
    assert rec["model"] == "printer" and rec["status"] == 200


def _grpc_input(x: float) -> Any:
    inp = grpcclient.InferInput("x", [1], "FP32")
    inp.set_data_from_numpy(np.array([x], dtype=np.float32))
    return inp


def test_grpc_access_record_uses_the_request_id(server: BerthServer) -> None:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        res = c.infer("printer", [_grpc_input(5.0)], request_id="grpc-req-1")
        assert res.as_numpy("y").tolist() == [10.0]
        c.infer(
            "printer",
            [_grpc_input(5.0)],
            request_id="ignored",
            headers={"x-request-id": "grpc-meta-1"},
        )
        with pytest.raises(InferenceServerException):
            c.infer("nope", [_grpc_input(5.0)], request_id="grpc-missing")
    finally:
        c.close()
    rec = wait_record(server, msg="access", request_id="grpc-req-1")
    assert rec["protocol"] == "grpc"
    assert rec["method"] == "ModelInfer"
    assert rec["model"] == "printer" and rec["version"] == "1"
    assert rec["status"] == 0
    assert rec["bytes_in"] > 0 and rec["bytes_out"] > 0
    assert isinstance(rec["latency_ms"], float)
    assert "path" not in rec
    wait_record(server, msg="access", request_id="grpc-meta-1", status=0)
    missing = wait_record(server, msg="access", request_id="grpc-missing")
    assert missing["status"] == 5  # NOT_FOUND


# ----------------------------------------------------------- worker output


def test_worker_stdout_and_stderr_are_forwarded_with_identity(server: BerthServer) -> None:
    pid = server.worker_pids()["printer/1/0"]
    out = wait_record(server, msg="printer says hello on stdout")
    err = wait_record(server, msg="printer says hello on stderr")
    for rec, stream in ((out, "stdout"), (err, "stderr")):
        assert rec["source"] == "worker"
        assert rec["model"] == "printer" and rec["version"] == "1"
        assert rec["instance"] == 0
        assert rec["stream"] == stream
        assert rec["level"] == "info"
        assert rec["pid"] == pid
    # the worker's own log records keep their level
    warn = wait_record(server, msg="printer warns through logging")
    assert warn["level"] == "warning" and warn["stream"] == "stderr"
    assert server.infer("printer", body(8.5)).status == 200
    rec = wait_record(server, msg="predict saw 8.5")
    assert rec["pid"] == pid and rec["stream"] == "stdout"


def test_long_lines_are_cut_and_marked(server: BerthServer) -> None:
    assert server.infer("printer", body(7.0)).status == 200
    rec = wait_record(server, truncated=True, source="worker")
    assert set(rec["msg"]) == {"L"}
    assert 1000 < len(rec["msg"]) < 40000
    # the rest of the long line is dropped, the next line is whole
    wait_record(server, msg="predict saw 7")
    assert not any(
        set(r.get("msg", "")) == {"L"} and not r.get("truncated") for r in server.log_records()
    )


def test_unfinished_line_of_a_dying_worker_is_flushed(server: BerthServer) -> None:
    pid = server.worker_pids()["printer/1/0"]
    resp = server.infer("printer", body(13.0))
    assert resp.status >= 500
    rec = wait_record(server, msg="last words without a newline")
    assert rec["pid"] == pid and rec["stream"] == "stdout"
    server.wait_worker("printer/1/0", not_pid=pid)
    wait_until(
        lambda: server.get("/v2/models/printer/ready").status == 200, 30, "printer ready again"
    )


# -------------------------------------------------------------- level/format


def test_access_log_is_off_by_default(berth_server: Callable[..., BerthServer], repo: Path) -> None:
    srv = berth_server(str(repo), wait_for=["printer"])
    resp = srv.infer("printer", body(1.0))
    assert resp.status == 200 and resp.header("x-request-id")
    wait_record(srv, msg="printer says hello on stdout")
    assert not records_where(srv, msg="access")


def test_level_flag_filters_engine_and_worker_lines(
    berth_server: Callable[..., BerthServer], repo: Path
) -> None:
    srv = berth_server(str(repo), "--log-level", "warning", "--access-log", wait_for=["printer"])
    assert srv.infer("printer", body(1.0)).status == 200
    warn = wait_record(srv, msg="printer warns through logging")
    assert warn["level"] == "warning"
    levels = {r["level"] for r in srv.log_records()}
    assert levels <= {"warning", "error"}, levels


def test_level_from_environment(berth_server: Callable[..., BerthServer], repo: Path) -> None:
    srv = berth_server(
        str(repo), "--access-log", env={"BERTH_LOG_LEVEL": "debug"}, wait_for=["printer"]
    )
    assert srv.infer("printer", body(1.0)).status == 200
    # the worker logs each batch at debug; it reaches the engine's log
    rec = wait_record(srv, level="debug", source="worker")
    assert rec["model"] == "printer"


def test_text_format_by_environment(berth_server: Callable[..., BerthServer], repo: Path) -> None:
    srv = berth_server(
        str(repo),
        "--access-log",
        env={"BERTH_LOG_FORMAT": "text"},
        wait_for=["printer"],
    )
    resp = srv.post("/v2/models/printer/infer", body(1.0), headers={"X-Request-ID": "text-1"})
    assert resp.status == 200
    line = wait_until(
        lambda: next((ln for ln in srv.log_text().splitlines() if "request_id=text-1" in ln), None),
        15,
        "a text access line",
        on_timeout=srv.log_tail,
    )
    assert " info " in line and "berthd: access" in line
    assert "status=200" in line and "model=printer" in line and "latency_ms=" in line
    hello = next(ln for ln in srv.log_text().splitlines() if "printer says hello on stdout" in ln)
    assert "stream=stdout" in hello and "model=printer" in hello
    assert not srv.log_records()  # no JSON lines at all


def test_grpc_answers_carry_the_request_id(server: BerthServer) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        _, call = stub.ModelReady.with_call(
            pb.ModelReadyRequest(name="printer"), metadata=[("x-request-id", "ready-1")]
        )
        assert dict(call.initial_metadata())["x-request-id"] == "ready-1"
        req = pb.ModelInferRequest(model_name="printer", id="pb-infer-1")
        inp = req.inputs.add()
        inp.name, inp.datatype = "x", "FP32"
        inp.shape.append(1)
        req.raw_input_contents.append(np.array([2.0], dtype=np.float32).tobytes())
        _, call = stub.ModelInfer.with_call(req)
        assert dict(call.initial_metadata())["x-request-id"] == "pb-infer-1"
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope", id="pb-missing"))
        err = info.value
        assert err.code() == grpc.StatusCode.NOT_FOUND
        md = dict(err.initial_metadata()) | dict(err.trailing_metadata())
        assert md["x-request-id"] == "pb-missing"
    wait_record(server, msg="access", request_id="ready-1", method="ModelReady", status=0)
    wait_record(server, msg="access", request_id="pb-infer-1", model="printer")
