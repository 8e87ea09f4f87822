"""OpenTelemetry tracing, end to end: a real OTLP/HTTP receiver in the test
process (``http.server`` decoding each POST /v1/traces body with the official
``opentelemetry-proto`` messages) gets the engine's spans; the tests check the
W3C traceparent propagation, the parent/child structure, the attributes, the
batch size of a batched request, sampling, and that tracing never fails a
request (off, or a receiver that is down).
"""

from __future__ import annotations

import http.server
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from berth_e2e import (
    BerthServer,
    berth_executable,
    free_port,
    outputs_by_name,
    server_env,
    tensor,
    wait_until,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ECHO = '''
import time
import numpy as np
import berth

class Echo(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 2])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 2]),
               berth.TensorSpec("rows", "INT64", [-1])]

    def predict(self, inputs):
        x = inputs["x"]
        delay = float(x[:, 1].max()) if x.size else 0.0
        if delay > 0:
            time.sleep(min(delay, 5.0))
        n = x.shape[0]
        return {"y": x.copy(), "rows": np.full(n, n, dtype=np.int64)}
'''

GEN = '''
import numpy as np
import berth

class Gen(berth.Model):
    # three responses, reporting tokens as a generative model does
    # (docs/openai.md)
    inputs = [berth.TensorSpec("text_input", "BYTES", [1])]
    outputs = [berth.TensorSpec("text_output", "BYTES", [1]),
               berth.TensorSpec("completion_tokens", "INT32", [1])]

    def predict(self, inputs):
        for k in range(3):
            yield {"text_output": np.array([b" t"], dtype=object),
                   "completion_tokens": np.array([k + 1], dtype=np.int32)}
'''

SERVER = trace_pb2.Span.SpanKind.SPAN_KIND_SERVER
INTERNAL = trace_pb2.Span.SpanKind.SPAN_KIND_INTERNAL


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (protobuf bodies)."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], trace_pb2.Span]] = []
        self.posts: list[tuple[str, str]] = []  # (path, content-type)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                req = trace_service_pb2.ExportTraceServiceRequest()
                req.ParseFromString(body)
                with receiver.lock:
                    receiver.posts.append((self.path, self.headers.get("Content-Type", "")))
                    for rs in req.resource_spans:
                        res = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
                        for ss in rs.scope_spans:
                            for span in ss.spans:
                                receiver.spans.append((res, span))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def trace(self, trace_id: bytes, count: int, timeout: float = 15.0) -> list[trace_pb2.Span]:
        """The spans of one trace, once at least ``count`` have arrived."""

        def got() -> list[trace_pb2.Span] | None:
            with self.lock:
                spans = [s for _, s in self.spans if s.trace_id == trace_id]
            return spans if len(spans) >= count else None

        return wait_until(got, timeout, f"{count} spans of trace {trace_id.hex()}")

    def all_spans(self) -> list[trace_pb2.Span]:
        with self.lock:
            return [s for _, s in self.spans]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attrs(span: trace_pb2.Span) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in span.attributes}


def traceparent(trace_id: bytes, span_id: bytes, flags: str = "01") -> str:
    return f"00-{trace_id.hex()}-{span_id.hex()}-{flags}"


def body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [tensor("x", "FP32", [len(rows), 2], rows)]}


def tree(spans: list[trace_pb2.Span]) -> tuple[trace_pb2.Span, trace_pb2.Span, trace_pb2.Span]:
    """The SERVER span and its queue and worker children (exactly one each)."""
    servers = [s for s in spans if s.kind == SERVER]
    assert len(servers) == 1, spans
    server = servers[0]
    queue = [s for s in spans if s.name == "queue"]
    worker = [s for s in spans if s.name == "worker"]
    assert len(queue) == 1 and len(worker) == 1, spans
    for child in (queue[0], worker[0]):
        assert child.parent_span_id == server.span_id
        assert child.kind == INTERNAL
        assert server.start_time_unix_nano <= child.start_time_unix_nano
        assert child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= server.end_time_unix_nano
    assert queue[0].end_time_unix_nano <= worker[0].start_time_unix_nano
    return server, queue[0], worker[0]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tracing-repo")
    for name, yaml in (
        ("echo", "max_batch_size: 0\ninstances: 1\n"),
        # batches of up to 8 rows, gathered for at most 1 s
        ("batched", "max_batch_size: 8\nmax_queue_delay_us: 1000000\ninstances: 1\n"),
    ):
        d = repo / name / "1"
        d.mkdir(parents=True)
        (d / "model.py").write_text(ECHO)
        (repo / name / "berth.yaml").write_text(yaml)
    d = repo / "gen" / "1"
    d.mkdir(parents=True)
    (d / "model.py").write_text(GEN)
    (repo / "gen" / "berth.yaml").write_text("instances: 1\n")
    return repo


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path, receiver: Receiver) -> BerthServer:
    return module_server(str(repo), "--otlp-endpoint", receiver.url)


def test_rest_request_continues_the_callers_trace(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    resp = server.post("/v2/models/echo/infer", body([[1.0, 0.0]]),
                       headers={"traceparent": traceparent(trace_id, parent)})
    assert resp.status == 200, resp.body
    # the answer names the request's span in the same trace
    answered = resp.header("traceparent")
    assert answered is not None and answered.startswith(f"00-{trace_id.hex()}-")
    assert answered.endswith("-01") and parent.hex() not in answered

    server_span, queue, worker = tree(receiver.trace(trace_id, 3))
    assert server_span.parent_span_id == parent
    assert answered == traceparent(trace_id, server_span.span_id)
    assert server_span.name == "POST /v2/models/{model_name}/infer"
    a = attrs(server_span)
    assert a["berth.model"] == "echo" and a["berth.model_version"] == "1"
    assert a["berth.protocol"] == "rest" and a["berth.status"] == "OK"
    assert a["berth.batch_size"] == 1
    for child in (queue, worker):
        assert attrs(child)["berth.model"] == "echo"
        assert attrs(child)["berth.model_version"] == "1"
        assert attrs(child)["berth.batch_size"] == 1
    assert server_span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_UNSET
    with receiver.lock:
        res = next(r for r, s in receiver.spans if s.trace_id == trace_id)
        assert ("/v1/traces", "application/x-protobuf") in receiver.posts
    assert res["service.name"] == "berth"


def test_rest_request_without_traceparent_starts_a_trace(
    server: BerthServer, receiver: Receiver
) -> None:
    resp = server.post("/v2/models/echo/infer", body([[2.0, 0.0]]))
    assert resp.status == 200
    answered = resp.header("traceparent")
    assert answered is not None
    trace_id = bytes.fromhex(answered.split("-")[1])
    server_span, _, _ = tree(receiver.trace(trace_id, 3))
    assert server_span.parent_span_id == b""


@pytest.mark.parametrize(
    "bad",
    [
        "00-" + "AB" * 16 + "-" + "cd" * 8 + "-01",  # upper-case hex
        "00-" + "00" * 16 + "-" + "cd" * 8 + "-01",  # zero trace id
        "00-" + "ab" * 16 + "-" + "00" * 8 + "-01",  # zero span id
        "ff-" + "ab" * 16 + "-" + "cd" * 8 + "-01",  # forbidden version
        "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01-extra",  # 00 has no more fields
        "00-" + "ab" * 15 + "-" + "cd" * 8 + "-01",  # short trace id
        "garbage",
    ],
)
def test_invalid_traceparent_starts_a_fresh_trace(
    server: BerthServer, receiver: Receiver, bad: str
) -> None:
    resp = server.post("/v2/models/echo/infer", body([[3.0, 0.0]]), headers={"traceparent": bad})
    assert resp.status == 200
    answered = resp.header("traceparent")
    assert answered is not None
    trace_id = bytes.fromhex(answered.split("-")[1])
    assert trace_id.hex() not in bad.lower()
    server_span, _, _ = tree(receiver.trace(trace_id, 3))
    assert server_span.parent_span_id == b""


def test_unsampled_caller_is_not_recorded(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    resp = server.post("/v2/models/echo/infer", body([[4.0, 0.0]]),
                       headers={"traceparent": traceparent(trace_id, parent, "00")})
    assert resp.status == 200
    assert resp.header("traceparent") is None
    # a sampled request sent after it arrives, and the unsampled one never did
    marker = secrets.token_bytes(16)
    server.post("/v2/models/echo/infer", body([[4.0, 0.0]]),
                headers={"traceparent": traceparent(marker, secrets.token_bytes(8))})
    receiver.trace(marker, 3)
    assert not [s for s in receiver.all_spans() if s.trace_id == trace_id]


def test_grpc_metadata_traceparent(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(np.array([[5.0, 0.0]], dtype=np.float32))
    result = client.infer("echo", [inp], headers={"traceparent": traceparent(trace_id, parent)})
    assert result.as_numpy("y").tolist() == [[5.0, 0.0]]
    client.close()
    server_span, queue, worker = tree(receiver.trace(trace_id, 3))
    assert server_span.parent_span_id == parent
    assert server_span.name == "inference.GRPCInferenceService/ModelInfer"
    a = attrs(server_span)
    assert a["berth.protocol"] == "grpc" and a["rpc.system"] == "grpc"
    assert a["berth.model"] == "echo" and a["berth.model_version"] == "1"


def test_grpc_stream_requests_each_get_a_span(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    answers: list[Any] = []
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    client.start_stream(lambda result, error: answers.append((result, error)),
                        headers={"traceparent": traceparent(trace_id, parent)})
    for i in range(2):
        inp = grpcclient.InferInput("x", [1, 2], "FP32")
        inp.set_data_from_numpy(np.array([[float(i), 0.0]], dtype=np.float32))
        client.async_stream_infer("echo", [inp])
    wait_until(lambda: len(answers) == 2, 30, "two stream answers")
    client.stop_stream()
    client.close()
    assert all(error is None for _, error in answers), answers
    spans = receiver.trace(trace_id, 6)
    servers = [s for s in spans if s.kind == SERVER]
    assert len(servers) == 2
    for s in servers:
        assert s.name == "inference.GRPCInferenceService/ModelStreamInfer"
        assert s.parent_span_id == parent
        children = [c for c in spans if c.parent_span_id == s.span_id]
        assert sorted(c.name for c in children) == ["queue", "worker"]


def test_pipeline_requests_are_traced_with_their_outcome(
    berth_server: Any, repo: Path, receiver: Receiver, tmp_path: Path
) -> None:
    """A pipeline's request span ends with the pipeline's answer (OK, not
    "the client left") over REST and gRPC, like a model's."""
    app = tmp_path / "app.yaml"
    app.write_text("pipelines:\n  - name: chain\n    steps:\n      - {name: first, model: echo}\n")
    server = berth_server(str(repo), "--config", str(app), "--otlp-endpoint", receiver.url)
    rest_id = secrets.token_bytes(16)
    resp = server.post("/v2/models/chain/infer", body([[2.0, 0.0]]),
                       headers={"traceparent": traceparent(rest_id, secrets.token_bytes(8))})
    assert resp.status == 200, resp.body
    grpc_id = secrets.token_bytes(16)
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 2], "FP32")
    inp.set_data_from_numpy(np.array([[3.0, 0.0]], dtype=np.float32))
    result = client.infer("chain", [inp],
                          headers={"traceparent": traceparent(grpc_id, secrets.token_bytes(8))})
    assert result.as_numpy("y").tolist() == [[3.0, 0.0]]
    client.close()
    for trace_id, protocol in ((rest_id, "rest"), (grpc_id, "grpc")):
        server_span = next(s for s in receiver.trace(trace_id, 1) if s.kind == SERVER)
        a = attrs(server_span)
        assert a["berth.model"] == "chain" and a["berth.protocol"] == protocol
        assert a["berth.status"] == "OK", a
        assert server_span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_UNSET


def test_kserve_v1_predict_is_traced(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    resp = server.post("/v1/models/echo:predict", {"instances": [[1.0, 0.0]]},
                       headers={"traceparent": traceparent(trace_id, parent)})
    assert resp.status == 200, resp.body
    server_span, _, _ = tree(receiver.trace(trace_id, 3))
    assert server_span.name == "POST /v1/models/{model_name}:predict"
    assert server_span.parent_span_id == parent


def test_generative_request_counts_responses_and_tokens(
    server: BerthServer, receiver: Receiver
) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    resp = server.post("/v2/models/gen/generate_stream", {"text_input": "hi"},
                       headers={"traceparent": traceparent(trace_id, parent)})
    assert resp.status == 200, resp.body
    server_span, _, _ = tree(receiver.trace(trace_id, 3))
    assert server_span.name == "POST /v2/models/{model_name}/generate_stream"
    a = attrs(server_span)
    assert a["berth.responses"] == 3 and a["berth.generated_tokens"] == 3
    took_us = (server_span.end_time_unix_nano - server_span.start_time_unix_nano) // 1000
    assert 0 <= a["berth.time_to_first_response_us"] <= took_us


def test_batched_requests_show_the_batch_size(server: BerthServer, receiver: Receiver) -> None:
    ids = [secrets.token_bytes(16) for _ in range(4)]

    def send(i: int) -> dict[str, Any]:
        # the first one holds the worker for 1 s; the rest queue meanwhile
        rows = [[float(i), 1.0 if i == 0 else 0.0]]
        resp = server.post("/v2/models/batched/infer", body(rows),
                           headers={"traceparent": traceparent(ids[i], secrets.token_bytes(8))})
        assert resp.status == 200, resp.body
        return outputs_by_name(resp.json())

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(send, 0)
        server.wait_queue("batched", inflight=1, queued=0)  # on the worker
        rest = list(pool.map(send, [1, 2, 3]))
    answers = [first.result(), *rest]
    rows_seen = [int(a["rows"]["data"][0]) for a in answers]
    assert max(rows_seen) > 1, f"the batcher formed no batch: {rows_seen}"
    for i, trace_id in enumerate(ids):
        server_span, queue, worker = tree(receiver.trace(trace_id, 3))
        for span in (server_span, queue, worker):
            assert attrs(span)["berth.batch_size"] == rows_seen[i]
            assert attrs(span)["berth.model"] == "batched"
    # requests that ran together share the worker span's times
    together = [i for i in range(4) if rows_seen[i] > 1]
    workers = [tree(receiver.trace(ids[i], 3))[2] for i in together]
    assert len({(w.start_time_unix_nano, w.end_time_unix_nano) for w in workers}) == 1
    assert len({w.span_id for w in workers}) == len(workers)


def test_failed_request_span_has_error_status(server: BerthServer, receiver: Receiver) -> None:
    trace_id = secrets.token_bytes(16)
    resp = server.post("/v2/models/echo/infer",
                       {"inputs": [tensor("x", "FP32", [1, 2], [[1.0, 0.0]])],
                        "parameters": {"timeout": 1}},
                       headers={"traceparent": traceparent(trace_id, secrets.token_bytes(8))})
    # a 1 µs timeout cannot be met: the request times out (or, if the machine
    # is very fast, succeeds); either way the span's status says which
    spans = receiver.trace(trace_id, 1)
    server_span = next(s for s in spans if s.kind == SERVER)
    if resp.status == 200:
        assert server_span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_UNSET
    else:
        assert server_span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
        assert attrs(server_span)["berth.status"] == "TIMEOUT"


def test_refused_request_has_a_lone_error_span(server: BerthServer, receiver: Receiver) -> None:
    trace_id, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    resp = server.post("/v2/models/echo/infer",
                       {"inputs": [tensor("x", "FP32", [1, 2], [[1.0, 0.0]])],
                        "parameters": {"priority": 7}},
                       headers={"traceparent": traceparent(trace_id, parent)})
    assert resp.status == 400
    receiver.trace(trace_id, 1)
    # a request's spans travel together, in one export
    spans = [s for s in receiver.all_spans() if s.trace_id == trace_id]
    assert len(spans) == 1, spans
    (span,) = spans
    assert span.kind == SERVER and span.parent_span_id == parent
    assert span.status.code == trace_pb2.Status.StatusCode.STATUS_CODE_ERROR
    assert attrs(span)["berth.status"] == "INVALID"
    assert attrs(span)["berth.model"] == "echo"


def test_metrics_count_exported_spans(server: BerthServer, receiver: Receiver) -> None:
    server.post("/v2/models/echo/infer", body([[6.0, 0.0]]))

    def exported() -> float | None:
        text = server.get("/metrics").body.decode()
        for line in text.splitlines():
            if line.startswith("berth_trace_spans_exported_total "):
                value = float(line.split()[1])
                return value if value > 0 else None
        return None

    assert wait_until(exported, 15, "berth_trace_spans_exported_total > 0")


def test_tracing_off_sends_nothing(berth_server: Any, repo: Path) -> None:
    quiet = Receiver()
    try:
        env = {k: "" for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")}
        srv = berth_server(str(repo), env=env)
        trace_id = secrets.token_bytes(16)
        for _ in range(3):
            resp = srv.post("/v2/models/echo/infer", body([[7.0, 0.0]]),
                            headers={"traceparent": traceparent(trace_id, secrets.token_bytes(8))})
            assert resp.status == 200
            assert resp.header("traceparent") is None
        metrics = srv.get("/metrics").body.decode()
        assert "berth_trace_spans_exported_total 0\n" in metrics
        assert "berth_trace_spans_dropped_total 0\n" in metrics
        time.sleep(1.5)  # more than a flush interval: nothing may arrive
        assert quiet.all_spans() == [] and quiet.posts == []
    finally:
        quiet.close()


def test_otel_environment_variable_turns_tracing_on(berth_server: Any, repo: Path) -> None:
    r = Receiver()
    try:
        srv = berth_server(str(repo), env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{r.port}",
                                           "OTEL_SERVICE_NAME": "berth-env-test"})
        trace_id = secrets.token_bytes(16)
        resp = srv.post("/v2/models/echo/infer", body([[8.0, 0.0]]),
                        headers={"traceparent": traceparent(trace_id, secrets.token_bytes(8))})
        assert resp.status == 200
        tree(r.trace(trace_id, 3))
        with r.lock:
            res = next(res for res, s in r.spans if s.trace_id == trace_id)
        assert res["service.name"] == "berth-env-test"
    finally:
        r.close()


def test_spans_are_sent_on_shutdown(berth_server: Any, repo: Path, tmp_path: Path) -> None:
    """A request answered just before SIGTERM still reaches the receiver:
    the engine sends what it buffered before it exits (the flush interval
    here is an hour)."""
    r = Receiver()
    try:
        cfg = tmp_path / "app.yaml"
        cfg.write_text(f"tracing:\n  endpoint: {r.url}\n  flush_interval_ms: 3600000\n")
        srv = berth_server(str(repo), "--config", str(cfg))
        trace_id = secrets.token_bytes(16)
        resp = srv.post("/v2/models/echo/infer", body([[1.0, 0.0]]),
                        headers={"traceparent": traceparent(trace_id, secrets.token_bytes(8))})
        assert resp.status == 200
        assert r.all_spans() == []
        srv.signal(signal.SIGTERM)
        assert srv.wait(30) == 0
        tree(r.trace(trace_id, 3, timeout=1))
    finally:
        r.close()


def test_receiver_down_never_fails_requests(berth_server: Any, repo: Path) -> None:
    dead = free_port()  # nothing listens there
    srv = berth_server(str(repo), "--otlp-endpoint", f"http://127.0.0.1:{dead}/v1/traces")
    for i in range(5):
        resp = srv.post("/v2/models/echo/infer", body([[float(i), 0.0]]))
        assert resp.status == 200
        assert resp.header("traceparent") is not None

    def dropped() -> float | None:
        for line in srv.get("/metrics").body.decode().splitlines():
            if line.startswith("berth_trace_spans_dropped_total "):
                value = float(line.split()[1])
                return value if value >= 15 else None
        return None

    assert wait_until(dropped, 15, "berth_trace_spans_dropped_total >= 15")
    assert srv.post("/v2/models/echo/infer", body([[9.0, 0.0]])).status == 200
    assert "could not export spans" in srv.log_text()


def test_bad_endpoint_is_a_config_error(repo: Path, tmp_path: Path) -> None:
    for args, env in (
        (["--otlp-endpoint", "https://collector:4318"], {}),
        ([], {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "grpc://collector:4317"}),
    ):
        out = subprocess.run(
            [berth_executable(), "serve", str(repo), "--print-config", *args],
            capture_output=True, text=True, env=server_env(env), timeout=60, cwd=tmp_path,
        )
        assert out.returncode != 0, out.stdout
        assert "http://" in out.stderr, out.stderr


def test_engine_refuses_a_bad_endpoint_url(repo: Path, tmp_path: Path) -> None:
    """berthd checks the URL itself (a config written by hand)."""
    cfg = tmp_path / "app.yaml"
    cfg.write_text("tracing:\n  endpoint: http://127.0.0.1:99999/v1/traces\n")
    out = subprocess.run(
        [berth_executable(), "serve", str(repo), "--config", str(cfg)],
        capture_output=True, text=True, env=server_env(), timeout=60, cwd=tmp_path,
    )
    assert out.returncode != 0
    assert "tracing.endpoint" in out.stderr and "port" in out.stderr, out.stderr
