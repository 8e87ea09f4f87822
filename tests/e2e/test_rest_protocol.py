"""Open Inference Protocol v2 over REST: health, metadata, infer (JSON
tensors in every datatype), request ids, output selection, parameters,
HTTP/1.1 keep-alive and HTTP/2 cleartext with prior knowledge."""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from berth_e2e import (
    ALL_DATATYPES,
    ALL_TYPES_SOURCE,
    PARAMS_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    copy_into,
    h2_exchange,
    infer_body,
    outputs_by_name,
    read_response,
    tensor,
)

IRIS_ROWS = slice(None, None, 10)  # 15 rows, every class


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("protocol-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "alltypes", ALL_TYPES_SOURCE, "AllTypes")
    add_python_model(root, "params", PARAMS_SOURCE, "Params")
    return root


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> BerthServer:
    return module_server(str(repo))


@pytest.fixture(scope="module")
def iris_clf(zoo: ModelZoo) -> Any:
    return zoo.trained(zoo.sklearn_classifier())


@pytest.fixture
def triton(server: BerthServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=60.0)
    try:
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------- health


def test_health_live_and_ready(server: BerthServer) -> None:
    assert server.get("/v2/health/live").status == 200
    assert server.get("/v2/health/ready").status == 200


def test_health_through_tritonclient(triton: httpclient.InferenceServerClient) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "1")
    assert triton.is_model_ready("alltypes")


# ----------------------------------------------------------------- metadata


def test_server_metadata(server: BerthServer, triton: httpclient.InferenceServerClient) -> None:
    resp = server.get("/v2")
    assert resp.status == 200
    assert "application/json" in (resp.header("content-type") or "")
    doc = resp.json()
    assert isinstance(doc.get("name"), str) and doc["name"]
    assert isinstance(doc.get("version"), str) and doc["version"]
    assert isinstance(doc.get("extensions"), list)
    assert all(isinstance(x, str) for x in doc["extensions"])
    assert triton.get_server_metadata()["name"] == doc["name"]


@pytest.mark.parametrize("path", ["/v2/models/iris", "/v2/models/iris/versions/1"])
def test_sklearn_model_metadata(server: BerthServer, path: str) -> None:
    resp = server.get(path)
    assert resp.status == 200, resp.body
    doc = resp.json()
    assert doc["name"] == "iris"
    assert "1" in doc["versions"]
    assert doc["platform"] == "sklearn_sklearn"
    assert doc["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    outs = {o["name"]: o for o in doc["outputs"]}
    assert set(outs) == {"predict", "predict_proba"}
    assert outs["predict"]["datatype"] == "INT64"
    assert outs["predict"]["shape"] == [-1]
    assert outs["predict_proba"]["datatype"] == "FP64"
    assert outs["predict_proba"]["shape"] == [-1, 3]


def test_custom_model_metadata_comes_from_class_attributes(server: BerthServer) -> None:
    doc = server.get("/v2/models/alltypes").json()
    assert doc["name"] == "alltypes"
    assert doc["platform"] == "berth_python"
    assert doc["inputs"] == [
        {"name": "in_" + t.lower(), "datatype": t, "shape": [-1, -1]} for t in ALL_DATATYPES
    ]
    outs = {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]}
    for t in ALL_DATATYPES:
        assert outs["out_" + t.lower()] == (t, [-1, -1])
    assert outs["seen"] == ("BYTES", [-1])


@pytest.mark.parametrize(
    "path", ["/v2/models/iris/ready", "/v2/models/iris/versions/1/ready", "/v2/models/params/ready"]
)
def test_model_ready(server: BerthServer, path: str) -> None:
    assert server.get(path).status == 200


def test_metadata_through_tritonclient(triton: httpclient.InferenceServerClient) -> None:
    meta = triton.get_model_metadata("iris")
    assert meta["name"] == "iris"
    assert meta["platform"] == "sklearn_sklearn"
    assert meta["inputs"][0]["name"] == "input"
    versioned = triton.get_model_metadata("iris", model_version="1")
    assert versioned["inputs"] == meta["inputs"]
    assert versioned["outputs"] == meta["outputs"]


# -------------------------------------------------------------------- infer


def test_infer_sklearn_through_tritonclient(
    zoo: ModelZoo, iris_clf: Any, triton: httpclient.InferenceServerClient
) -> None:
    X, _ = zoo.iris
    rows = np.ascontiguousarray(X[IRIS_ROWS])
    inp = httpclient.InferInput("input", list(rows.shape), "FP64")
    inp.set_data_from_numpy(rows, binary_data=False)
    outputs = [
        httpclient.InferRequestedOutput("predict", binary_data=False),
        httpclient.InferRequestedOutput("predict_proba", binary_data=False),
    ]
    result = triton.infer("iris", [inp], outputs=outputs, request_id="sk-1")

    np.testing.assert_array_equal(result.as_numpy("predict"), iris_clf.predict(rows))
    np.testing.assert_allclose(
        result.as_numpy("predict_proba"), iris_clf.predict_proba(rows), rtol=1e-12, atol=1e-15
    )
    response = result.get_response()
    assert response["model_name"] == "iris"
    assert response["id"] == "sk-1"
    assert result.get_output("predict")["datatype"] == "INT64"
    assert result.get_output("predict")["shape"] == [len(rows)]
    assert result.get_output("predict_proba")["datatype"] == "FP64"
    assert result.get_output("predict_proba")["shape"] == [len(rows), 3]


def test_infer_sklearn_versioned_path(zoo: ModelZoo, iris_clf: Any, server: BerthServer) -> None:
    X, _ = zoo.iris
    rows = X[:3]
    doc = server.infer_ok(
        "iris", infer_body([tensor("input", "FP64", rows.shape, rows.ravel().tolist())]), version="1"
    )
    outs = outputs_by_name(doc)
    np.testing.assert_array_equal(outs["predict"]["data"], iris_clf.predict(rows))
    assert doc.get("model_version") in (None, "1")


def _typed_values() -> dict[str, tuple[list[list[Any]], np.ndarray]]:
    """Per datatype: nested [2][3] JSON data and the NumPy array it means,
    including each type's extremes (UINT64 beyond INT64 has its own test)."""
    raw: dict[str, list[list[Any]]] = {
        "BOOL": [[True, False, True], [False, False, True]],
        "UINT8": [[0, 1, 255], [7, 128, 254]],
        "UINT16": [[0, 65535, 1], [300, 40000, 2]],
        "UINT32": [[0, 4294967295, 1], [70000, 3000000000, 5]],
        "UINT64": [[0, 1, 9223372036854775807], [2**40, 12345678901234567, 3]],
        "INT8": [[-128, 127, 0], [-1, 1, 100]],
        "INT16": [[-32768, 32767, 0], [-300, 300, -1]],
        "INT32": [[-2147483648, 2147483647, 0], [-70000, 70000, 1]],
        "INT64": [[-9223372036854775808, 9223372036854775807, 0], [-(2**40), 2**53 + 1, -1]],
        "FP16": [[0.5, -2.0, 65504.0], [1.0009765625, 6.103515625e-05, 0.0]],
        "FP32": [[0.1, -1.5, 3.4028234663852886e38], [1.401298464324817e-45, 123456.78125, 0.0]],
        "FP64": [[0.1, -2.5, 1e308], [5e-324, 3.141592653589793, -0.0]],
        "BYTES": [
            ["hello", "", "ünïcode ✓"],
            ['with "quotes" and \\ backslash', "tab\tnew\nline", "日本語"],
        ],
    }
    out: dict[str, tuple[list[list[Any]], np.ndarray]] = {}
    for t, data in raw.items():
        if t == "BYTES":
            arr = np.array([[s.encode() for s in row] for row in data], dtype=object)
        else:
            arr = np.array(data, dtype=np.dtype(ALL_DATATYPES[t]))
        out[t] = (data, arr)
    return out


TYPED = _typed_values()


def _check_alltypes_outputs(doc: dict[str, Any]) -> None:
    outs = outputs_by_name(doc)
    for t, (_, expected) in TYPED.items():
        out = outs["out_" + t.lower()]
        assert out["datatype"] == t, out
        assert out["shape"] == [2, 3], out
        data = np.array(out["data"], dtype=object).reshape(-1).tolist()
        if t == "BYTES":
            assert data == [b.decode() for b in expected.reshape(-1)], (t, data)
        elif t == "BOOL":
            assert all(isinstance(v, bool) for v in data), f"BOOL data must be JSON booleans: {data}"
            assert data == expected.reshape(-1).tolist(), (t, data)
        elif t.startswith(("INT", "UINT")):
            assert all(isinstance(v, int) and not isinstance(v, bool) for v in data), (t, data)
            assert data == expected.reshape(-1).tolist(), (t, data)
        else:
            got = np.array(data, dtype=np.float64).astype(expected.dtype)
            np.testing.assert_array_equal(got, expected.reshape(-1), err_msg=t)
    seen = outs["seen"]["data"]
    expected_seen = [
        f"{t}={'object:bytes' if t == 'BYTES' else ALL_DATATYPES[t]}" for t in ALL_DATATYPES
    ]
    assert seen == expected_seen, "the model received the wrong NumPy types"


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_every_datatype_raw_json(server: BerthServer, layout: str) -> None:
    inputs = []
    for t, (nested, _) in TYPED.items():
        data = nested if layout == "nested" else [v for row in nested for v in row]
        inputs.append(tensor("in_" + t.lower(), t, [2, 3], data))
    doc = server.infer_ok("alltypes", infer_body(inputs))
    _check_alltypes_outputs(doc)


def test_uint64_full_range(server: BerthServer) -> None:
    """UINT64 values above INT64's maximum survive JSON both ways."""
    values = [18446744073709551615, 9223372036854775808, 0]
    inputs = []
    for t, (nested, _) in TYPED.items():
        data = [values, values] if t == "UINT64" else nested
        inputs.append(tensor("in_" + t.lower(), t, [2, 3], data))
    doc = server.infer_ok("alltypes", infer_body(inputs))
    assert outputs_by_name(doc)["out_uint64"]["data"] == values + values


def test_every_datatype_through_tritonclient(triton: httpclient.InferenceServerClient) -> None:
    inputs = []
    for t, (_, arr) in TYPED.items():
        inp = httpclient.InferInput("in_" + t.lower(), [2, 3], t)
        inp.set_data_from_numpy(arr, binary_data=False)
        inputs.append(inp)
    outputs = [
        httpclient.InferRequestedOutput("out_" + t.lower(), binary_data=False) for t in ALL_DATATYPES
    ]
    result = triton.infer("alltypes", inputs, outputs=outputs)
    for t, (_, arr) in TYPED.items():
        got = result.as_numpy("out_" + t.lower())
        assert got is not None, f"no output for {t}"
        assert got.shape == (2, 3)
        if t == "BYTES":
            assert [str(v) for v in got.reshape(-1)] == [b.decode() for b in arr.reshape(-1)]
        else:
            assert got.dtype == arr.dtype, t
            np.testing.assert_array_equal(got, arr, err_msg=t)


def test_nested_and_flat_data_agree(server: BerthServer, zoo: ModelZoo) -> None:
    X, _ = zoo.iris
    rows = X[40:46]
    flat = server.infer_ok("iris", infer_body([tensor("input", "FP64", [6, 4], rows.ravel().tolist())]))
    nested = server.infer_ok("iris", infer_body([tensor("input", "FP64", [6, 4], rows.tolist())]))
    assert outputs_by_name(flat) == outputs_by_name(nested)


def test_request_id_is_echoed(server: BerthServer, zoo: ModelZoo) -> None:
    X, _ = zoo.iris
    body = infer_body([tensor("input", "FP64", [1, 4], X[0].tolist())], id="req-42 ✓")
    doc = server.infer_ok("iris", body)
    assert doc["id"] == "req-42 ✓"
    assert doc["model_name"] == "iris"


def test_requested_outputs_subset(server: BerthServer, zoo: ModelZoo, iris_clf: Any) -> None:
    X, _ = zoo.iris
    rows = X[100:104]
    for wanted in (["predict_proba"], ["predict"], ["predict", "predict_proba"]):
        body = infer_body([tensor("input", "FP64", [4, 4], rows.tolist())], outputs=wanted)
        doc = server.infer_ok("iris", body)
        outs = outputs_by_name(doc)
        assert set(outs) == set(wanted)
    np.testing.assert_allclose(
        np.array(outs["predict_proba"]["data"]).reshape(4, 3), iris_clf.predict_proba(rows), rtol=1e-12
    )


def test_requested_outputs_subset_through_tritonclient(
    zoo: ModelZoo, triton: httpclient.InferenceServerClient
) -> None:
    X, _ = zoo.iris
    rows = np.ascontiguousarray(X[:2])
    inp = httpclient.InferInput("input", [2, 4], "FP64")
    inp.set_data_from_numpy(rows, binary_data=False)
    result = triton.infer(
        "iris", [inp], outputs=[httpclient.InferRequestedOutput("predict", binary_data=False)]
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predict"]
    assert result.as_numpy("predict_proba") is None


def test_parameters_reach_the_model(server: BerthServer) -> None:
    params = {"scale": 3, "tag": "blue", "nested": {"a": [1, 2]}}
    body = infer_body(
        [
            {
                "name": "x",
                "datatype": "FP64",
                "shape": [3],
                "data": [1.0, -2.0, 0.5],
                "parameters": {"content_type": "np"},
            }
        ],
        parameters=params,
    )
    doc = server.infer_ok("params", body)
    outs = outputs_by_name(doc)
    assert outs["y"]["data"] == [3.0, -6.0, 1.5]
    echoed = json.loads(outs["echo"]["data"][0])
    for key, value in params.items():
        assert echoed.get(key) == value, f"parameter {key!r} did not reach the model: {echoed}"


def test_parameters_through_tritonclient(triton: httpclient.InferenceServerClient) -> None:
    inp = httpclient.InferInput("x", [2], "FP64")
    inp.set_data_from_numpy(np.array([2.0, 4.0]), binary_data=False)
    result = triton.infer(
        "params",
        [inp],
        outputs=[httpclient.InferRequestedOutput("y", binary_data=False)],
        parameters={"scale": 0.5},
    )
    np.testing.assert_array_equal(result.as_numpy("y"), [1.0, 2.0])


# ------------------------------------------------------------- connections


def test_http11_keep_alive(server: BerthServer, zoo: ModelZoo) -> None:
    """Several requests, good and bad, on one connection: the server keeps it."""
    X, _ = zoo.iris
    good = json.dumps(infer_body([tensor("input", "FP64", [1, 4], X[0].tolist())])).encode()
    bad = json.dumps(infer_body([tensor("input", "FP32", [1, 4], X[0].tolist())])).encode()
    steps = [
        ("GET", "/v2/health/live", None, 200),
        ("POST", "/v2/models/iris/infer", good, 200),
        ("GET", "/v2/models/iris", None, 200),
        ("POST", "/v2/models/iris/infer", bad, 400),
        ("GET", "/v2/models/nope", None, 404),
        ("POST", "/v2/models/iris/infer", good, 200),
        ("GET", "/v2/health/ready", None, 200),
    ]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.connect()
        sock = conn.sock
        for method, path, body, status in steps:
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            resp = read_response(conn.getresponse())
            assert resp.status == status, (method, path, resp.status, resp.body[:300])
            assert (resp.header("connection") or "").lower() != "close", (method, path, resp.headers)
            assert conn.sock is sock, f"the connection was closed after {method} {path}"
            if status == 200 and path.endswith("/infer"):
                assert outputs_by_name(resp.json())["predict"]["data"] == [0]
    finally:
        conn.close()


def _curl_h2(url: str, *args: str) -> tuple[str, int, str]:
    """curl with HTTP/2 prior knowledge: (http version, status, body)."""
    proc = subprocess.run(
        [
            "curl",
            "-sS",
            "--http2-prior-knowledge",
            "--max-time",
            "60",
            "-w",
            "\n%{http_version} %{response_code}",
            *args,
            url,
        ],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, f"curl failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
    text = proc.stdout.decode()
    body, _, tail = text.rpartition("\n")
    version, code = tail.split()
    return version, int(code), body


def test_http2_prior_knowledge(server: BerthServer, zoo: ModelZoo, iris_clf: Any) -> None:
    version, code, body = _curl_h2(f"{server.url}/v2/health/ready")
    assert (version, code) == ("2", 200), body

    version, code, body = _curl_h2(f"{server.url}/v2/models/iris")
    assert (version, code) == ("2", 200)
    assert json.loads(body)["platform"] == "sklearn_sklearn"

    X, _ = zoo.iris
    rows = X[::30]
    payload = json.dumps(
        infer_body([tensor("input", "FP64", list(rows.shape), rows.tolist())], id="h2-1")
    )
    version, code, body = _curl_h2(
        f"{server.url}/v2/models/iris/infer",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        payload,
    )
    assert (version, code) == ("2", 200), body
    doc = json.loads(body)
    assert doc["id"] == "h2-1"
    assert outputs_by_name(doc)["predict"]["data"] == iris_clf.predict(rows).tolist()


def test_http2_error_is_json(server: BerthServer) -> None:
    version, code, body = _curl_h2(f"{server.url}/v2/models/no-such-model")
    assert (version, code) == ("2", 404)
    assert "no-such-model" in json.loads(body)["error"]


def test_http2_large_request_body(
    server: BerthServer, zoo: ModelZoo, iris_clf: Any, tmp_path: Path
) -> None:
    """A body well past HTTP/2's initial 64 KiB flow-control window."""
    X, _ = zoo.iris
    rows = np.tile(X, (80, 1))  # 12000 rows, ~260 KB of JSON
    body_file = tmp_path / "big.json"
    body_file.write_text(json.dumps(infer_body([tensor("input", "FP64", list(rows.shape), rows.tolist())])))
    assert body_file.stat().st_size > 200_000
    version, code, body = _curl_h2(
        f"{server.url}/v2/models/iris/infer",
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        f"@{body_file}",
    )
    assert (version, code) == ("2", 200), body[:500]
    got = outputs_by_name(json.loads(body))["predict"]["data"]
    assert got == iris_clf.predict(rows).tolist()


def test_http2_and_http11_share_the_port(server: BerthServer) -> None:
    version, code, _ = _curl_h2(f"{server.url}/v2/health/live")
    assert (version, code) == ("2", 200)
    proc = subprocess.run(
        ["curl", "-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_version} %{response_code}",
         f"{server.url}/v2/health/live"],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.decode().split() == ["1.1", "200"]


def test_concurrent_clients_get_their_own_answers(server: BerthServer, zoo: ModelZoo, iris_clf: Any) -> None:
    """Many clients at once, each with different rows and ids: no answer is
    mixed up with another's."""
    X, _ = zoo.iris

    def one(k: int) -> tuple[int, dict[str, Any]]:
        rows = X[k : k + 1 + k % 5]
        body = infer_body([tensor("input", "FP64", list(rows.shape), rows.tolist())], id=f"c{k}")
        return k, server.infer_ok("iris", body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(40)))
    for k, doc in results:
        rows = X[k : k + 1 + k % 5]
        assert doc["id"] == f"c{k}"
        outs = outputs_by_name(doc)
        assert outs["predict"]["data"] == iris_clf.predict(rows).tolist()
        assert outs["predict_proba"]["shape"] == [len(rows), 3]


def test_http2_concurrent_streams_on_one_connection(
    server: BerthServer, zoo: ModelZoo, iris_clf: Any
) -> None:
    """Several requests multiplexed as interleaved streams on one h2c
    connection, each answered with its own result."""
    X, _ = zoo.iris
    n = 8
    requests: list[tuple[str, str, bytes | None]] = [("GET", "/v2/models/iris", None)]
    for k in range(n):
        rows = X[k * 15 : k * 15 + 1 + k]
        body = infer_body([tensor("input", "FP64", list(rows.shape), rows.tolist())], id=f"s{k}")
        requests.append(("POST", "/v2/models/iris/infer", json.dumps(body).encode()))
    requests.append(("GET", "/v2/models/no-such-model", None))
    answers = h2_exchange(server.port, requests)

    assert answers[0].status == 200 and json.loads(answers[0].body)["name"] == "iris"
    for k in range(n):
        rows = X[k * 15 : k * 15 + 1 + k]
        ans = answers[1 + k]
        assert ans.reset is None, f"stream {k} was reset ({ans.reset})"
        assert ans.status == 200, (k, ans)
        doc = json.loads(ans.body)
        assert doc["id"] == f"s{k}"
        assert outputs_by_name(doc)["predict"]["data"] == iris_clf.predict(rows).tolist()
    assert answers[-1].status == 404
    assert "no-such-model" in json.loads(answers[-1].body)["error"]


def test_engine_logs_are_json_lines(server: BerthServer) -> None:
    records = server.log_records()
    msgs = [r.get("msg") for r in records]
    assert "listening (REST: HTTP/1.1 and h2c)" in msgs, server.log_tail()
    ready = {r.get("model") for r in records if r.get("msg") == "model ready"}
    assert {"iris", "alltypes", "params"} <= ready, ready
    for r in records:
        assert isinstance(r.get("msg"), str) and r.get("level"), r
