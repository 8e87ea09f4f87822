"""Triton's and KServe's clients against Berth, unchanged: the binary tensor
data extension (tritonclient's default), Triton's model configuration and
statistics extensions, and KServe's v1 protocol.

KServe v1 is exercised with raw HTTP, not KServe's own Python package: that
package (``kserve``) is a whole model server whose install pulls in about 30
distributions (FastAPI, uvicorn, the Kubernetes client, pandas, pillow,
grpcio-tools, cryptography, ...) and pins protobuf, which is unreasonable
for a test client. Its v1 client sends exactly the documents used here:
``{"instances": [...]}`` to ``POST /v1/models/{m}:predict``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from berth_e2e import (
    ALL_DATATYPES,
    ALL_TYPES_SOURCE,
    CHECKED_SOURCE,
    PARAMS_SOURCE,
    TEXT_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    assert_error,
    copy_into,
    fill,
    http_call,
    outputs_by_name,
)

BATCHED_SOURCE = '''
import numpy as np
import berth


class Doubler(berth.Model):
    """y = 2x, batched along the first dimension."""

    inputs = [berth.TensorSpec("x", "FP32", [-1, 3])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 3])]

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
'''


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("binary-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "alltypes", ALL_TYPES_SOURCE, "AllTypes")
    add_python_model(root, "params", PARAMS_SOURCE, "Params")
    add_python_model(root, "text", TEXT_SOURCE, "Text", yaml_extra="max_batch_size: 0\n")
    marks = root.parent / "checked-marks.txt"
    add_python_model(root, "checked", fill(CHECKED_SOURCE, MARKS=str(marks)), "Checked")
    add_python_model(
        root,
        "doubler",
        BATCHED_SOURCE,
        "Doubler",
        yaml_extra="max_batch_size: 8\nmax_queue_delay_us: 500\npreferred_batch_sizes: [4, 8]\ninstances: 2\n",
    )
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


def binary_body(head: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A request body with the binary extension and its headers."""
    text = json.dumps(head).encode()
    return text + b"".join(chunks), {
        "Inference-Header-Content-Length": str(len(text)),
        "Content-Type": "application/octet-stream",
    }


def split_binary(resp: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(JSON head, {output name: its raw bytes}) of a binary answer."""
    n = int(resp.header("inference-header-content-length"))
    head = json.loads(resp.body[:n])
    raw: dict[str, bytes] = {}
    off = n
    for out in head["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw[out["name"]] = resp.body[off : off + size]
            off += size
    assert off == len(resp.body), "binary sizes do not add up to the body"
    return head, raw


def bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


# ------------------------------------------------------------ binary tensors


def test_server_metadata_lists_the_extensions(server: BerthServer) -> None:
    ext = server.get("/v2").json()["extensions"]
    for name in ("binary_tensor_data", "model_configuration", "statistics"):
        assert name in ext


@pytest.mark.smoke
def test_tritonclient_default_binary_round_trip(
    triton: httpclient.InferenceServerClient, zoo: ModelZoo, iris_clf: Any
) -> None:
    X, _ = zoo.iris
    rows = X[::10]
    inp = httpclient.InferInput("input", list(rows.shape), "FP64")
    inp.set_data_from_numpy(rows)  # binary_data=True is tritonclient's default
    result = triton.infer("iris", [inp])  # no outputs: binary_data_output
    for out in result.get_response()["outputs"]:
        assert "data" not in out
        assert out["parameters"]["binary_data_size"] > 0
    np.testing.assert_array_equal(result.as_numpy("predict"), iris_clf.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), iris_clf.predict_proba(rows))


def test_tritonclient_every_datatype_binary(triton: httpclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(3)
    inputs, sent = [], {}
    for t, np_name in ALL_DATATYPES.items():
        if t == "BOOL":
            a = rng.integers(0, 2, size=(2, 3)).astype(bool)
        elif t == "BYTES":
            a = np.array([[b"a", b"\xff\x00raw", b""], [b"xyz", "é".encode(), b"\x01"]], dtype=object)
        elif t.startswith("FP"):
            a = rng.normal(size=(2, 3)).astype(np_name)
        else:
            info = np.iinfo(np_name)
            a = np.array([[info.min, info.max, 0], [1, 2, 3]], dtype=np_name)
        name = "in_" + t.lower()
        x = httpclient.InferInput(name, list(a.shape), t)
        # every other input as JSON: one request mixes both kinds
        x.set_data_from_numpy(a, binary_data=(t == "BYTES" or len(inputs) % 2 == 0))
        inputs.append(x)
        sent[t] = a
    outs = [httpclient.InferRequestedOutput("out_" + t.lower(), binary_data=True) for t in ALL_DATATYPES]
    outs.append(httpclient.InferRequestedOutput("seen", binary_data=False))
    result = triton.infer("alltypes", inputs, outputs=outs)
    for t, a in sent.items():
        got = result.as_numpy("out_" + t.lower())
        assert got.shape == a.shape, t
        if t == "BYTES":
            assert got.tolist() == a.tolist()
        else:
            np.testing.assert_array_equal(got, a)
    seen = result.get_output("seen")
    assert "data" in seen  # a JSON output in a binary answer
    assert "FP16=float16" in seen["data"]


def test_raw_binary_request_and_answer(server: BerthServer) -> None:
    x = np.array([[1.5, -2.0, 0.25]], dtype=np.float64)
    head = {
        "id": "bin-1",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 24}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "echo"}],
        "parameters": {"scale": 2},
    }
    body, headers = binary_body(head, x.tobytes())
    resp = server.post("/v2/models/params/infer", body, headers=headers)
    assert resp.status == 200, resp.body[:500]
    assert resp.header("content-type") == "application/octet-stream"
    doc, raw = split_binary(resp)
    assert doc["id"] == "bin-1"
    assert doc["model_name"] == "params"
    outs = outputs_by_name(doc)
    assert outs["y"]["shape"] == [3] and outs["y"]["datatype"] == "FP64"
    np.testing.assert_array_equal(np.frombuffer(raw["y"], dtype="<f8"), x.ravel() * 2)
    # the protocol's own parameters never reach the model
    assert json.loads(outs["echo"]["data"][0]) == {"scale": 2}


def test_binary_data_output_is_not_a_model_parameter(server: BerthServer) -> None:
    head = {
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}],
        "parameters": {"binary_data_output": True},
    }
    resp = server.post("/v2/models/params/infer", head)
    assert resp.status == 200, resp.body[:500]
    _, raw = split_binary(resp)
    echo = raw["echo"][4:].decode()
    assert json.loads(echo) == {}


def test_json_request_keeps_json_answer(server: BerthServer) -> None:
    head = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [3.0]}]}
    resp = server.post("/v2/models/params/infer", head)
    assert resp.status == 200
    assert resp.header("inference-header-content-length") is None
    assert "application/json" in resp.header("content-type")


def test_bytes_and_bool_binary_inputs(server: BerthServer) -> None:
    texts = [b"hello", "wörld".encode(), b""]
    head = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3],
                        "parameters": {"binary_data_size": len(bytes_tensor(texts))}}]}
    body, headers = binary_body(head, bytes_tensor(texts))
    resp = server.post("/v2/models/text/infer", body, headers=headers)
    assert resp.status == 200, resp.body[:500]
    assert outputs_by_name(resp.json())["length"]["data"] == [5, 6, 0]


@pytest.mark.parametrize(
    ("head", "binary", "words"),
    [
        # sizes must add up to the binary section exactly
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": 8}}]},
         b"\0" * 12, ("binary", "8")),
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "parameters": {"binary_data_size": 16}}]},
         b"\0" * 8, ("'x'", "16")),
        # a binary input's size must match its shape and datatype
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "parameters": {"binary_data_size": 16}}]},
         b"\0" * 16, ("'x'", "24 bytes")),
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2], "data": [1, 2],
                      "parameters": {"binary_data_size": 16}}]},
         b"\0" * 16, ("both data",)),
        ({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": -1}}]},
         b"", ("binary_data_size",)),
    ],
)
def test_binary_validation(server: BerthServer, head: dict[str, Any], binary: bytes, words: tuple[str, ...]) -> None:
    body, headers = binary_body(head, binary)
    resp = server.post("/v2/models/params/infer", body, headers=headers)
    assert_error(resp, 400, *words)


def test_bad_head_length_header(server: BerthServer) -> None:
    body = b'{"inputs":[]}'
    for value, words in (("999", ("Inference-Header-Content-Length", "body")), ("abc", ("decimal",)),
                         ("5", ("JSON",))):
        resp = server.post("/v2/models/params/infer", body,
                           headers={"Inference-Header-Content-Length": value})
        assert_error(resp, 400, *words)


def test_binary_input_checked_against_signature(server: BerthServer) -> None:
    head = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}
    body, headers = binary_body(head, b"\0" * 4)
    resp = server.post("/v2/models/params/infer", body, headers=headers)
    assert_error(resp, 400, "'x'", "FP64")


def test_non_utf8_bytes_need_binary_output(server: BerthServer, triton: httpclient.InferenceServerClient) -> None:
    raw = np.array([[b"\xff\xfe"]], dtype=object)
    x = httpclient.InferInput("in_bytes", [1, 1], "BYTES")
    x.set_data_from_numpy(raw)
    others = []
    for t in ALL_DATATYPES:
        if t == "BYTES":
            continue
        a = np.zeros((1, 1), dtype=np.dtype(ALL_DATATYPES[t]))
        i = httpclient.InferInput("in_" + t.lower(), [1, 1], t)
        i.set_data_from_numpy(a)
        others.append(i)
    out = httpclient.InferRequestedOutput("out_bytes", binary_data=True)
    result = triton.infer("alltypes", [x, *others], outputs=[out])
    assert result.as_numpy("out_bytes").tolist() == [[b"\xff\xfe"]]
    # the same output asked for as JSON cannot be written: the client's call
    as_json = httpclient.InferRequestedOutput("out_bytes", binary_data=False)
    with pytest.raises(Exception, match="binary"):
        triton.infer("alltypes", [x, *others], outputs=[as_json])


# --------------------------------------------------- configuration, statistics


def test_model_config_of_an_unbatched_model(server: BerthServer, triton: httpclient.InferenceServerClient) -> None:
    for path in ("/v2/models/text/config", "/v2/models/text/versions/1/config"):
        doc = server.get(path).json()
        assert doc["name"] == "text"
        assert doc["platform"] == "berth_python"
        assert doc["backend"] == "python"
        assert doc["max_batch_size"] == 0
        # no batch dimension: dims are the whole shape
        assert doc["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
        assert doc["output"] == [{"name": "length", "data_type": "TYPE_INT64", "dims": [-1]}]
        assert doc["instance_group"][0]["kind"] == "KIND_CPU"
        assert doc["instance_group"][0]["count"] >= 1
        assert "dynamic_batching" not in doc
    assert triton.get_model_config("text")["name"] == "text"


def test_model_config_follows_the_effective_batch_size(server: BerthServer) -> None:
    # the scikit-learn runtime suggests a batch size when berth.yaml has none
    doc = server.get("/v2/models/iris/config").json()
    assert doc["platform"] == "sklearn_sklearn"
    assert doc["backend"] == "sklearn"
    dims = [4] if doc["max_batch_size"] > 0 else [-1, 4]
    assert doc["input"] == [{"name": "input", "data_type": "TYPE_FP64", "dims": dims}]
    assert {o["name"]: o["data_type"] for o in doc["output"]} == {
        "predict": "TYPE_INT64",
        "predict_proba": "TYPE_FP64",
    }


def test_model_config_of_a_batching_model(server: BerthServer) -> None:
    doc = server.get("/v2/models/doubler/config").json()
    assert doc["max_batch_size"] == 8
    assert doc["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}]
    assert doc["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}]
    assert doc["instance_group"][0]["count"] == 2
    assert doc["dynamic_batching"] == {"max_queue_delay_microseconds": 500, "preferred_batch_size": [4, 8]}


def test_statistics(server: BerthServer, triton: httpclient.InferenceServerClient) -> None:
    before = server.get("/v2/models/doubler/stats").json()["model_stats"][0]
    for i in range(3):
        x = np.full((2, 3), i, dtype=np.float32)
        inp = httpclient.InferInput("x", [2, 3], "FP32")
        inp.set_data_from_numpy(x)
        np.testing.assert_array_equal(triton.infer("doubler", [inp]).as_numpy("y"), x * 2)
    bad = server.infer("doubler", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]})
    assert bad.status == 400
    doc = server.get("/v2/models/doubler/versions/1/stats").json()
    assert len(doc["model_stats"]) == 1
    st = doc["model_stats"][0]
    assert st["name"] == "doubler" and st["version"] == "1"
    assert st["inference_count"] >= before["inference_count"] + 3
    assert st["last_inference"] > 0
    inf = st["inference_stats"]
    assert inf["success"]["count"] >= before["inference_stats"]["success"]["count"] + 3
    assert inf["success"]["ns"] > 0
    assert inf["fail"]["count"] >= before["inference_stats"]["fail"]["count"] + 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss"):
        assert set(inf[key]) == {"count", "ns"}
    assert st["batch_stats"] == []
    every = server.get("/v2/models/stats").json()["model_stats"]
    assert {m["name"] for m in every} >= {"iris", "doubler", "alltypes", "params", "text", "checked"}
    client_view = triton.get_inference_statistics("doubler")
    assert client_view["model_stats"][0]["name"] == "doubler"


def test_config_and_stats_errors(server: BerthServer) -> None:
    assert_error(server.get("/v2/models/nope/config"), 404, "nope")
    assert_error(server.get("/v2/models/iris/versions/9/stats"), 404, "version")
    assert_error(server.post("/v2/models/iris/config", {}), 405)


# ----------------------------------------------------------------- KServe v1


def test_v1_model_status(server: BerthServer) -> None:
    resp = server.get("/v1/models/iris")
    assert resp.status == 200
    doc = resp.json()
    # KServe v1's keys, and OpenAI's model object in the same document
    # (docs/openai.md)
    created = doc.pop("created")
    assert isinstance(created, int) and created > 0
    assert doc == {"name": "iris", "ready": True, "id": "iris", "object": "model",
                   "owned_by": "berth"}
    assert "iris" in server.get("/v1/models").json()["models"]
    assert_error(server.get("/v1/models/nope"), 404, "nope")


def test_v1_predict_matches_the_model(server: BerthServer, zoo: ModelZoo, iris_clf: Any) -> None:
    X, _ = zoo.iris
    rows = X[::15]
    resp = server.post("/v1/models/iris:predict", {"instances": rows.tolist()})
    assert resp.status == 200, resp.body[:500]
    assert resp.json() == {"predictions": iris_clf.predict(rows).tolist()}
    alias = server.post("/v1/models/iris:predict", {"inputs": rows.tolist()})
    assert alias.json() == resp.json()


def test_v1_predict_nested_outputs_and_strings(server: BerthServer) -> None:
    resp = server.post("/v1/models/doubler:predict", {"instances": [[1, 2, 3], [0.5, 0, -1]]})
    assert resp.status == 200, resp.body[:500]
    assert resp.json() == {"predictions": [[2.0, 4.0, 6.0], [1.0, 0.0, -2.0]]}
    text = server.post("/v1/models/text:predict", {"instances": ["hi", "wörld"]})
    assert text.json() == {"predictions": [2, 6]}


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/models/checked:predict", {"instances": [[1, 2, 3]]}, 400, ("2 inputs", "single input", "/v2/models/checked/infer")),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3, 4], [1, 2]]}, 400, ("rectangular",)),
        ("/v1/models/iris:predict", {"rows": []}, 400, ("instances",)),
        ("/v1/models/iris:predict", "not json", 400, ("JSON",)),
        ("/v1/models/iris:predict", {"instances": [[1, 2, 3]]}, 400, ("shape",)),
        ("/v1/models/iris:predict", {"instances": [["a", "b", "c", "d"]]}, 400, ("number",)),
        ("/v1/models/iris:explain", {"instances": [[1, 2, 3, 4]]}, 404, ("predict",)),
        ("/v1/models/nope:predict", {"instances": [[1]]}, 404, ("nope",)),
    ],
)
def test_v1_errors(server: BerthServer, path: str, body: Any, status: int, words: tuple[str, ...]) -> None:
    assert_error(server.post(path, body), status, *words)


def test_v1_wrong_method(server: BerthServer) -> None:
    assert_error(http_call(server.port, "GET", "/v1/models/iris:predict"), 405)
    assert_error(server.post("/v1/models/iris", {}), 405)
