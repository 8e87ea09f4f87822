"""Decoupled models (docs/decoupled.md): a generator ``predict`` answers one
request with zero or many responses, streamed over gRPC ModelStreamInfer
with tritonclient (Triton's final-response flag), refused on unary
ModelInfer and REST infer, and over REST's OIP generate extension
(``generate``: one JSON object; ``generate_stream``: server-sent events over
HTTP/1.1 chunked transfer coding); a client that leaves mid-stream stops
the model (counted in a file the model appends to, never timed)."""

from __future__ import annotations

import http.client
import json
import queue
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc")
from berth_e2e import BerthServer, add_python_model, fill, http_call  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

TIMEOUT = 60.0

COUNTER_SOURCE = '''
import time

import numpy as np
import berth


class Counter(berth.Model):
    """Yields n responses {"i": [k]}; raises after FAIL_AFTER of them when
    FAIL_AFTER >= 0. Appends each k to MARKS before yielding it."""

    inputs = [berth.TensorSpec("n", "INT32", [1])]
    outputs = [berth.TensorSpec("i", "INT32", [1])]

    def predict(self, inputs):
        n = int(inputs["n"][0])
        for k in range(n):
            if k == @FAIL_AFTER@:
                raise RuntimeError(f"gave up after {k} responses")
            with open(@MARKS@, "a") as f:
                f.write(f"{k}\\n")
            yield {"i": np.array([k], dtype=np.int32)}
            time.sleep(@DELAY@)
'''

PLAIN_SOURCE = '''
import numpy as np
import berth


class Plain(berth.Model):
    inputs = [berth.TensorSpec("n", "INT32", [1])]
    outputs = [berth.TensorSpec("i", "INT32", [1])]

    def predict(self, inputs):
        return {"i": inputs["n"] * 2}
'''


@pytest.fixture(scope="module")
def marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("decoupled-marks")


@pytest.fixture(scope="module")
def server(module_server: Any, tmp_path_factory: pytest.TempPathFactory, marks: Path) -> BerthServer:
    root = tmp_path_factory.mktemp("decoupled-repo")
    one = "instances: 1\n"
    add_python_model(root, "counter", fill(COUNTER_SOURCE, MARKS=str(marks / "counter"),
                                           FAIL_AFTER=-1, DELAY=0.0), "Counter", yaml_extra=one)
    add_python_model(root, "failer", fill(COUNTER_SOURCE, MARKS=str(marks / "failer"),
                                          FAIL_AFTER=2, DELAY=0.0), "Counter",
                     yaml_extra=one)
    add_python_model(root, "slowcount", fill(COUNTER_SOURCE, MARKS=str(marks / "slow"),
                                             FAIL_AFTER=-1, DELAY=0.02), "Counter",
                     yaml_extra=one)
    add_python_model(root, "slowsse", fill(COUNTER_SOURCE, MARKS=str(marks / "slowsse"),
                                           FAIL_AFTER=-1, DELAY=0.02), "Counter",
                     yaml_extra=one)
    add_python_model(root, "plain", PLAIN_SOURCE, "Plain")
    server = module_server(str(root))
    server.repo_root = root  # type: ignore[attr-defined]
    return server


def n_input(n: int) -> Any:
    inp = grpcclient.InferInput("n", [1], "INT32")
    inp.set_data_from_numpy(np.array([n], dtype=np.int32))
    return inp


def stream(server: BerthServer, model: str, n: int, *, final: bool = True) -> list[tuple[Any, Any]]:
    """Streams one request; returns (result, error) pairs up to the final
    flag (final=True) or until nothing comes for a while (final=False)."""
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        client.async_stream_infer(model, [n_input(n)], request_id="r1",
                                  enable_empty_final_response=final)
        out = []
        while True:
            result, error = got.get(timeout=TIMEOUT if final else 3.0)
            out.append((result, error))
            if error is not None:
                if not final:
                    break
                continue
            params = result.get_response().parameters
            if final and params["triton_final_response"].bool_param:
                break
        return out
    except queue.Empty:
        return out
    finally:
        client.stop_stream()
        client.close()


def test_streams_n_responses_in_order_then_final(server: BerthServer) -> None:
    got = stream(server, "counter", 5)
    assert all(e is None for _, e in got), [e for _, e in got]
    *responses, last = got
    assert [int(r.as_numpy("i")[0]) for r, _ in responses] == [0, 1, 2, 3, 4]
    for r, _ in responses:
        assert r.get_response().parameters["triton_final_response"].bool_param is False
        assert r.get_response().id == "r1"
    final = last[0].get_response()
    assert final.parameters["triton_final_response"].bool_param is True
    assert len(final.outputs) == 0 and final.model_name == "counter"


def test_zero_responses_gives_only_the_final(server: BerthServer) -> None:
    got = stream(server, "counter", 0)
    assert len(got) == 1
    assert got[0][1] is None
    assert got[0][0].get_response().parameters["triton_final_response"].bool_param is True


def test_without_final_flag_no_extra_message(server: BerthServer) -> None:
    got = stream(server, "counter", 3, final=False)
    assert [int(r.as_numpy("i")[0]) for r, _ in got] == [0, 1, 2]
    assert all("triton_final_response" not in r.get_response().parameters for r, _ in got)


def test_error_after_two_responses_then_server_keeps_serving(server: BerthServer) -> None:
    got = stream(server, "failer", 5, final=False)
    assert [int(r.as_numpy("i")[0]) for r, e in got if e is None] == [0, 1]
    errors = [e for _, e in got if e is not None]
    assert len(errors) == 1 and "gave up after 2 responses" in str(errors[0])
    assert [int(r.as_numpy("i")[0]) for r, _ in stream(server, "counter", 2)[:-1]] == [0, 1]


def test_unary_infer_on_decoupled_model_refused(server: BerthServer) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as exc:
            client.infer("counter", [n_input(2)])
        assert "doesn't support models with decoupled transaction policy" in str(exc.value)
        assert int(client.infer("plain", [n_input(4)]).as_numpy("i")[0]) == 8
    finally:
        client.close()
    body = {"inputs": [{"name": "n", "datatype": "INT32", "shape": [1], "data": [2]}]}
    resp = http_call(server.port, "POST", "/v2/models/counter/infer", body)
    assert resp.status == 400, resp.body
    assert "decoupled transaction policy" in resp.json()["error"]


def test_model_config_says_decoupled(server: BerthServer) -> None:
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        cfg = client.get_model_config("counter", as_json=True)["config"]
        assert cfg["model_transaction_policy"]["decoupled"] is True
        plain = client.get_model_config("plain", as_json=True)["config"]
        assert plain.get("model_transaction_policy", {}).get("decoupled", False) is False
    finally:
        client.close()
    doc = http_call(server.port, "GET", "/v2/models/counter/config").json()
    assert doc["model_transaction_policy"] == {"decoupled": True}


def test_client_leaving_mid_stream_stops_the_model(server: BerthServer, marks: Path) -> None:
    n = 100000
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    client.async_stream_infer("slowcount", [n_input(n)])
    for _ in range(3):
        result, error = got.get(timeout=TIMEOUT)
        assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    # One worker: this request runs only once the cancelled one has ended.
    after = stream(server, "slowcount", 1)
    assert int(after[0][0].as_numpy("i")[0]) == 0
    count = len((marks / "slow").read_text().splitlines())
    assert 3 <= count < 1000, count


# ------------------------------------------------- REST generate extension


def sse_post(port: int, path: str, body: Any,
             headers: dict[str, str] | None = None) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
    return conn.getresponse(), conn


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """The data of each server-sent event, parsed."""
    text = raw.decode()
    assert text == "" or text.endswith("\n\n"), text
    events = []
    for block in filter(None, text.split("\n\n")):
        assert block.startswith("data: ") and "\n" not in block, block
        events.append(json.loads(block[len("data: "):]))
    return events


def generate_stream(port: int, model: str, body: Any) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
    resp, conn = sse_post(port, f"/v2/models/{model}/generate_stream", body)
    try:
        raw = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if resp.status != 200:
            return resp.status, headers, [json.loads(raw)]
        return resp.status, headers, sse_events(raw)
    finally:
        conn.close()


def test_generate_stream_n_events_in_order(server: BerthServer) -> None:
    status, headers, events = generate_stream(server.port, "counter", {"n": 5, "id": "g1"})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert [e["i"] for e in events] == [0, 1, 2, 3, 4]
    assert all(e["model_name"] == "counter" and "model_version" in e for e in events)


def test_generate_stream_keeps_the_connection_for_the_next_request(server: BerthServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        for n in (2, 3):
            conn.request("POST", "/v2/models/counter/generate_stream", body=json.dumps({"n": n}),
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert [e["i"] for e in sse_events(resp.read())] == list(range(n))
        conn.request("GET", "/v2/health/ready")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_generate_stream_zero_responses_is_an_empty_stream(server: BerthServer) -> None:
    status, _, events = generate_stream(server.port, "counter", {"n": 0})
    assert status == 200 and events == []


def test_generate_stream_error_after_two_is_an_error_event(server: BerthServer) -> None:
    status, _, events = generate_stream(server.port, "failer", {"n": 5})
    assert status == 200
    assert [e["i"] for e in events[:-1]] == [0, 1]
    assert set(events[-1]) == {"error"} and "gave up after 2 responses" in events[-1]["error"]
    assert [e["i"] for e in generate_stream(server.port, "counter", {"n": 2})[2]] == [0, 1]


def test_generate_stream_client_leaving_stops_the_model(server: BerthServer, marks: Path) -> None:
    resp, conn = sse_post(server.port, "/v2/models/slowsse/generate_stream", {"n": 100000})
    assert resp.status == 200
    seen = 0
    while seen < 3:
        line = resp.readline()
        assert line, "the stream ended early"
        if line.startswith(b"data: "):
            assert json.loads(line[6:])["i"] == seen
            seen += 1
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    # One worker: this request runs only once the abandoned one has ended.
    status, _, events = generate_stream(server.port, "slowsse", {"n": 1})
    assert status == 200 and [e["i"] for e in events] == [0]
    count = len((marks / "slowsse").read_text().splitlines())
    assert 4 <= count < 1000, count


def test_generate_on_a_plain_model(server: BerthServer) -> None:
    for path in ("/v2/models/plain/generate", "/v2/models/plain/versions/1/generate"):
        resp = http_call(server.port, "POST", path, {"n": 4, "parameters": {"x": 1}})
        assert resp.status == 200, resp.body
        doc = resp.json()
        assert doc["model_name"] == "plain" and doc["i"] == 8
        assert resp.headers["content-type"].startswith("application/json")
    status, _, events = generate_stream(server.port, "plain", {"n": 21})
    assert status == 200 and [e["i"] for e in events] == [42]


def test_generate_on_a_decoupled_model_takes_exactly_one_response(server: BerthServer) -> None:
    resp = http_call(server.port, "POST", "/v2/models/counter/generate", {"n": 1})
    assert resp.status == 200 and resp.json()["i"] == 0
    for n in (0, 3):
        resp = http_call(server.port, "POST", "/v2/models/counter/generate", {"n": n})
        assert resp.status == 400, resp.body
        assert "generate_stream" in resp.json()["error"]


@pytest.mark.parametrize("body,needle", [
    (b"{not json", "invalid JSON"),
    (b"[1, 2]", "one JSON object"),
    (b'{"nope": 1}', "no input"),
    (b'{"n": {"a": 1}}', "field 'n'"),
    (b"{}", "missing input 'n'"),
])
def test_generate_bad_input_is_400(server: BerthServer, body: bytes, needle: str) -> None:
    for path in ("/v2/models/counter/generate", "/v2/models/counter/generate_stream"):
        resp = http_call(server.port, "POST", path, body, {"Content-Type": "application/json"})
        assert resp.status == 400, resp.body
        assert needle in resp.json()["error"], resp.json()


def test_generate_attacks_refused(server: BerthServer, marks: Path) -> None:
    before = (marks / "counter").read_text() if (marks / "counter").exists() else ""
    body = json.dumps({"n": 2}).encode()
    for path in ("/v2/models/counter/generate", "/v2/models/counter/generate_stream"):
        resp = http_call(server.port, "POST", path, body, {"Content-Type": "text/plain"})
        assert resp.status == 415, resp.body
        resp = http_call(server.port, "POST", path, body,
                         {"Content-Type": "application/json", "Origin": "http://evil.example"})
        assert resp.status == 403, resp.body
        resp = http_call(server.port, "POST", path, body,
                         {"Content-Type": "application/json", "Host": "evil.example"})
        assert resp.status == 403, resp.body
        resp = http_call(server.port, "GET", path)
        assert resp.status == 405
        resp = http_call(server.port, "POST", "/v2/models/ghost/generate_stream", {"n": 1})
        assert resp.status == 404 and "Request for unknown model" in resp.json()["error"]
    after = (marks / "counter").read_text() if (marks / "counter").exists() else ""
    assert after == before  # the model never ran


def test_generate_needs_a_token_when_tokens_are_set(berth_server: Any, server: BerthServer) -> None:
    tokened = berth_server(str(server.repo_root), "--auth-tokens-env", "BERTH_GEN_TOKENS",
                           env={"BERTH_GEN_TOKENS": "gen-token-1"})
    for path in ("/v2/models/plain/generate", "/v2/models/plain/generate_stream"):
        for token in (None, "wrong"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            resp = http_call(tokened.port, "POST", path, {"n": 1}, headers)
            assert resp.status == 401, resp.body
    resp = http_call(tokened.port, "POST", "/v2/models/plain/generate", {"n": 1},
                     {"Authorization": "Bearer gen-token-1"})
    assert resp.status == 200 and resp.json()["i"] == 2


def test_generate_stream_over_http2(server: BerthServer) -> None:
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", "--http2-prior-knowledge", "-X", "POST", "-H", "Content-Type: application/json",
         "-d", json.dumps({"n": 4}), "-w", "\n%{http_version} %{http_code}",
         f"http://127.0.0.1:{server.port}/v2/models/counter/generate_stream"],
        capture_output=True, timeout=TIMEOUT, check=True).stdout.decode()
    body, _, meta = out.rpartition("\n")
    assert meta == "2 200", out
    assert [e["i"] for e in sse_events(body.encode())] == [0, 1, 2, 3]
