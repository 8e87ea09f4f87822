"""The payload log: sampled requests and answers as JSON lines, rotated by
size, written off the request path; a sink that cannot keep up drops
records (counted) and never slows or fails requests (docs/logging.md)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth_e2e import BerthServer, add_python_model, infer_body, tensor, wait_until

grpcclient = pytest.importorskip("tritonclient.grpc")

ECHO_SOURCE = """
import numpy as np
import berth


class Echo(berth.Model):
    \"\"\"y = 2x, s_out = s; a negative x[0] makes predict raise.\"\"\"

    inputs = [berth.TensorSpec("x", "FP32", [-1]), berth.TensorSpec("s", "BYTES", [-1])]
    outputs = [berth.TensorSpec("y", "FP32", [-1]), berth.TensorSpec("s_out", "BYTES", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        if x.size and x[0] < 0:
            raise RuntimeError("negative input refused")
        return {"y": x * 2, "s_out": np.array(inputs["s"], copy=True)}
"""


def echo_body(x: list[float], s: list[str], **kw: Any) -> dict[str, Any]:
    return infer_body(
        [tensor("x", "FP32", [len(x)], x), tensor("s", "BYTES", [len(s)], s)], **kw
    )


def metric(server: BerthServer, name: str, model: str) -> float:
    text = server.get("/metrics").body.decode()
    prefix = f'{name}{{model="{model}",version="1"}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError(f"{prefix!r} not in /metrics")


def written(server: BerthServer, model: str) -> float:
    return metric(server, "berth_payload_records_written_total", model)


def dropped(server: BerthServer, model: str) -> float:
    return metric(server, "berth_payload_records_dropped_total", model)


def read_records(*paths: Path) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        for line in p.read_text().splitlines():
            rec = json.loads(line)  # every line is one whole JSON document
            assert isinstance(rec, dict)
            out.append(rec)
    return out


def app_config(tmp: Path, **log: Any) -> str:
    path = tmp / "app.yaml"
    path.write_text(json.dumps({"log": log}))
    return str(path)


def keepalive_infer(server: BerthServer, model: str, bodies: list[dict[str, Any]]) -> list[int]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    statuses = []
    try:
        for b in bodies:
            conn.request(
                "POST",
                f"/v2/models/{model}/infer",
                body=json.dumps(b).encode(),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payload") / "payload.jsonl"


@pytest.fixture(scope="module")
def server(
    module_server: Callable[..., BerthServer], tmp_path_factory: pytest.TempPathFactory, sink: Path
) -> BerthServer:
    repo = tmp_path_factory.mktemp("payrepo")
    add_python_model(repo, "echo", ECHO_SOURCE, "Echo", yaml_extra="payload_log:\n  rate: 1.0\n")
    add_python_model(repo, "half", ECHO_SOURCE, "Echo", yaml_extra="payload_log:\n  rate: 0.5\n")
    add_python_model(repo, "quiet", ECHO_SOURCE, "Echo")
    cfg = app_config(repo.parent, payload_log_path=str(sink))
    return module_server(str(repo), "--config", cfg, wait_for=["echo", "half", "quiet"])


def test_rate_one_logs_every_request_with_its_tensors(server: BerthServer, sink: Path) -> None:
    for k in range(3):
        resp = server.post(
            "/v2/models/echo/infer",
            echo_body([1.5, -0.25 + k], ["héllo", f"n{k}"], id=f"pl-{k}"),
            headers={"X-Request-ID": f"hdr-{k}"} if k == 2 else None,
        )
        assert resp.status == 200, resp.body
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        x = grpcclient.InferInput("x", [1], "FP32")
        x.set_data_from_numpy(np.array([3.0], dtype=np.float32))
        s = grpcclient.InferInput("s", [2], "BYTES")
        s.set_data_from_numpy(np.array([b"\xff\x00raw", b"text"], dtype=np.object_))
        c.infer("echo", [x, s], request_id="grpc-pl")
    finally:
        c.close()
    assert server.infer("echo", echo_body([-1.0], ["x"], id="pl-fail")).status == 500
    assert server.infer("quiet", echo_body([1.0], ["x"], id="pl-quiet")).status == 200
    wait_until(lambda: written(server, "echo") == 5, 15, "5 payload records written")
    assert dropped(server, "echo") == 0
    recs = {r["request_id"]: r for r in read_records(sink) if r["model"] == "echo"}
    assert set(recs) == {"pl-0", "pl-1", "hdr-2", "grpc-pl", "pl-fail"}
    assert not [r for r in read_records(sink) if r["model"] == "quiet"]  # rate 0: off

    r = recs["pl-1"]
    assert r["id"] == "pl-1" and r["version"] == "1" and r["protocol"] == "rest"
    assert r["status"] == "ok" and "error" not in r
    assert r["received"] <= r["answered"] and r["received"].endswith("Z")
    assert r["latency_ms"] >= 0
    assert r["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [2], "data": [1.5, 0.75]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["héllo", "n1"]},
    ]
    outs = {o["name"]: o for o in r["outputs"]}
    assert outs["y"]["data"] == [3.0, 1.5] and outs["y"]["shape"] == [2]
    assert outs["s_out"]["data"] == ["héllo", "n1"]
    assert recs["hdr-2"]["id"] == "pl-2"  # the header is the request id, "id" the OIP id

    g = recs["grpc-pl"]
    assert g["protocol"] == "grpc"
    s_in = next(t for t in g["inputs"] if t["name"] == "s")
    assert s_in["encoding"] == "base64"  # not UTF-8: every element base64
    assert [base64.b64decode(v) for v in s_in["data"]] == [b"\xff\x00raw", b"text"]
    assert {o["name"]: o for o in g["outputs"]}["y"]["data"] == [6.0]

    f = recs["pl-fail"]
    assert f["status"] != "ok"
    assert "negative input refused" in f["error"]
    assert "outputs" not in f


def test_rate_half_samples_about_half(server: BerthServer, sink: Path) -> None:
    n = 400
    statuses = keepalive_infer(
        server, "half", [echo_body([float(i)], ["s"], id=f"half-{i}") for i in range(n)]
    )
    assert statuses == [200] * n
    # every answered request was sampled or not before its answer went out;
    # wait until the writer has caught up with what was sampled
    def settled() -> float | None:
        w = written(server, "half")
        lines = [r for r in read_records(sink) if r["model"] == "half"]
        return w if len(lines) == w else None

    w = wait_until(settled, 15, "the half-rate records written")
    # Binomial(400, 0.5): sd 10; 140..260 is six standard deviations.
    assert 140 <= w <= 260, w
    assert dropped(server, "half") == 0
    ids = [r["request_id"] for r in read_records(sink) if r["model"] == "half"]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("half-") for i in ids)


def test_rotation_at_the_size_limit_keeps_n_files(
    berth_server: Callable[..., BerthServer], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    add_python_model(repo, "echo", ECHO_SOURCE, "Echo", yaml_extra="payload_log:\n  rate: 1\n")
    path = tmp_path / "rot.jsonl"
    cfg = app_config(tmp_path, payload_log_path=str(path), payload_log_max_bytes=4096,
                     payload_log_backups=2)
    srv = berth_server(str(repo), "--config", cfg, wait_for=["echo"])
    n = 80
    statuses = keepalive_infer(
        srv, "echo", [echo_body([float(i)], ["s"], id=f"rot-{i:03d}") for i in range(n)]
    )
    assert statuses == [200] * n
    wait_until(lambda: written(srv, "echo") == n, 15, f"{n} records written")
    kept = [Path(f"{path}.2"), Path(f"{path}.1"), path]  # oldest first
    for p in kept:
        assert p.exists(), p
        assert 0 < p.stat().st_size <= 4096, (p, p.stat().st_size)
    assert not Path(f"{path}.3").exists()
    ids = [r["request_id"] for r in read_records(*kept)]
    # 80 records of ~300 bytes do not fit in 3 x 4 KiB: the oldest went, and
    # what is left is the newest ones, in order, none missing
    assert len(ids) < n
    assert ids == [f"rot-{i:03d}" for i in range(n - len(ids), n)]


def test_a_sink_that_cannot_keep_up_drops_and_counts(
    berth_server: Callable[..., BerthServer], tmp_path: Path
) -> None:
    # The sink is a FIFO whose reader does not read: once its 64 KiB buffer
    # is full the writer thread blocks, as on a stalled disk.
    repo = tmp_path / "repo"
    add_python_model(repo, "echo", ECHO_SOURCE, "Echo", yaml_extra="payload_log:\n  rate: 1\n")
    fifo = tmp_path / "sink.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    drained = bytearray()
    try:
        cfg = app_config(tmp_path, payload_log_path=str(fifo), payload_log_queue_bytes=8192)
        srv = berth_server(str(repo), "--config", cfg, wait_for=["echo"])
        n = 600
        big = ["p" * 200]
        statuses = keepalive_infer(
            srv, "echo", [echo_body([float(i)], big, id=f"d-{i}") for i in range(n)]
        )
        assert statuses == [200] * n  # requests never wait for the sink
        assert dropped(srv, "echo") > 0
        # Now read: the writer unblocks and every record is accounted for.
        stop = threading.Event()

        def drain() -> None:
            while not stop.is_set():
                try:
                    chunk = os.read(reader, 65536)
                except BlockingIOError:
                    stop.wait(0.01)
                    continue
                if not chunk:
                    stop.wait(0.01)
                    continue
                drained.extend(chunk)

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        try:
            wait_until(
                lambda: written(srv, "echo") + dropped(srv, "echo") == n,
                20,
                "every sampled record written or dropped",
            )
            w = written(srv, "echo")
            wait_until(lambda: drained.count(b"\n") == w, 10, "the written lines read")
        finally:
            stop.set()
            t.join(5)
        lines = drained.decode().splitlines()
        assert len(lines) == int(written(srv, "echo"))
        for line in lines:
            assert json.loads(line)["model"] == "echo"
        srv.close()
    finally:
        os.close(reader)
