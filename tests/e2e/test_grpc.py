"""Open Inference Protocol v2 over gRPC (inference.GRPCInferenceService):
Triton's gRPC client for health, metadata, configuration, statistics,
repository index, inference in every datatype and stream inference; raw
grpcio calls with hand-built protobuf bytes for the error paths (status
codes, deadlines, message limits); curl for the HTTP/2 framing itself."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

grpc = pytest.importorskip("grpc", reason="grpcio is in the test extra (tritonclient[grpc])")
grpcclient = pytest.importorskip("tritonclient.grpc")
from berth_e2e import (  # noqa: E402
    ALL_DATATYPES,
    ALL_TYPES_SOURCE,
    BROKEN_LOAD_SOURCE,
    PARAMS_SOURCE,
    RAISER_SOURCE,
    SLOW_SOURCE,
    BerthServer,
    ModelZoo,
    add_python_model,
    copy_into,
    fill,
    http_call,
    wait_until,
)
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

SERVICE = "/inference.GRPCInferenceService/"
TIMEOUT = 60.0


# ------------------------------------------------------------------ servers


@pytest.fixture(scope="module")
def repo(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("grpc-repo")
    copy_into(zoo.sklearn_classifier(), root / "iris" / "1", "model.joblib")
    add_python_model(root, "alltypes", ALL_TYPES_SOURCE, "AllTypes")
    add_python_model(root, "params", PARAMS_SOURCE, "Params")
    add_python_model(root, "raiser", RAISER_SOURCE, "Raiser")
    marks = root.parent / "slow-marks.txt"
    add_python_model(root, "slow", fill(SLOW_SOURCE, MARKS=str(marks), DELAY=1.5), "Slow",
                     yaml_extra="max_queue_size: 1\nmax_batch_size: 0\n")
    return root


@pytest.fixture(scope="module")
def server(module_server: Any, repo: Path) -> BerthServer:
    return module_server(str(repo))


@pytest.fixture
def client(server: BerthServer) -> Iterator[Any]:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def channel(server: BerthServer) -> Iterator[Any]:
    ch = grpc.insecure_channel(server.grpc_url)
    try:
        yield ch
    finally:
        ch.close()


def raw_call(channel: Any, method: str, body: bytes, timeout: float = TIMEOUT) -> bytes:
    """One unary call with hand-built message bytes; the answer's bytes."""
    return channel.unary_unary(SERVICE + method)(body, timeout=timeout)


def call_error(channel: Any, method: str, body: bytes, timeout: float = TIMEOUT) -> Any:
    with pytest.raises(grpc.RpcError) as info:
        raw_call(channel, method, body, timeout)
    return info.value


def infer_request(model: str, inputs: list[tuple[str, str, list[int], bytes]], **kw: Any) -> bytes:
    r = pb.ModelInferRequest(model_name=model, **kw)
    for name, dt, shape, raw in inputs:
        r.inputs.add(name=name, datatype=dt, shape=shape)
        r.raw_input_contents.append(raw)
    return r.SerializeToString()


# ------------------------------------------------------------ health, metadata


def test_health(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("iris", "7")


def test_server_metadata(server: BerthServer, client: Any) -> None:
    meta = client.get_server_metadata(as_json=True)
    rest = server.get("/v2").json()
    assert meta["name"] == rest["name"] == "berth"
    assert meta["version"] == rest["version"]
    assert "statistics" in meta["extensions"]


def test_model_metadata(server: BerthServer, client: Any) -> None:
    meta = client.get_model_metadata("alltypes", as_json=True)
    rest = server.get("/v2/models/alltypes").json()
    assert meta["name"] == "alltypes"
    assert meta["versions"] == ["1"]
    assert meta["platform"] == rest["platform"] == "berth_python"
    got = [(i["name"], i["datatype"], [int(d) for d in i["shape"]]) for i in meta["inputs"]]
    assert got == [(i["name"], i["datatype"], i["shape"]) for i in rest["inputs"]]
    assert {o["name"] for o in meta["outputs"]} == {o["name"] for o in rest["outputs"]}
    iris = client.get_model_metadata("iris", "1")
    assert iris.inputs[0].name == "input" and list(iris.inputs[0].shape) == [-1, 4]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_metadata("no-such-model")
    assert "NOT_FOUND" in str(info.value.status())
    # Triton's wording: its examples check the message starts with it
    assert info.value.message().startswith("Request for unknown model: 'no-such-model' is not found")


def test_model_config(server: BerthServer, client: Any) -> None:
    for name in ("iris", "alltypes", "slow"):
        cfg = client.get_model_config(name, as_json=True)["config"]
        rest = server.get(f"/v2/models/{name}/config").json()
        assert cfg["name"] == name
        assert cfg.get("platform", "") == rest["platform"]
        assert cfg.get("backend", "") == rest["backend"]
        assert int(cfg.get("max_batch_size", 0)) == rest["max_batch_size"]
        for key in ("input", "output"):
            got = [(t["name"], t["data_type"], [int(d) for d in t.get("dims", [])]) for t in cfg[key]]
            want = [(t["name"], t["data_type"], t["dims"]) for t in rest[key]]
            assert got == want, (name, key)
        group = cfg["instance_group"][0]
        assert group["kind"] == "KIND_CPU" and group["count"] >= 1
        assert ("dynamic_batching" in cfg) == ("dynamic_batching" in rest)
    iris = client.get_model_config("iris", as_json=True)["config"]
    if int(iris.get("max_batch_size", 0)) > 0:  # Triton leaves the batch dim out
        assert [int(d) for d in iris["input"][0]["dims"]] == [4]
    with pytest.raises(InferenceServerException) as info:
        client.get_model_config("nope")
    assert "NOT_FOUND" in str(info.value.status())


def test_repository_index(client: Any) -> None:
    index = client.get_model_repository_index(as_json=True)["models"]
    states = {(m["name"], m["version"]): m["state"] for m in index}
    assert states[("iris", "1")] == "READY"
    assert states[("alltypes", "1")] == "READY"
    assert ("slow", "1") in states


def test_repository_load_and_unload(berth_server: Any, repo: Path) -> None:
    """Unload, load back, add a version from a config, over gRPC (the
    repository API shared with REST)."""
    # explicit mode turns the repository API on; a python entry from a
    # request needs an admin token (docs/security.md)
    env = {"MC_ADMIN": "grpc-admin-token"}
    server = berth_server(str(repo / "params"), "--name", "params", "--model-control-mode",
                          "explicit", "--admin-tokens-env", "MC_ADMIN", env=env)
    h = {"authorization": "Bearer grpc-admin-token"}
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    inp = grpcclient.InferInput("x", [1], "FP64")
    inp.set_data_from_numpy(np.array([2.0]))
    try:
        assert c.infer("params", [inp], headers=h).as_numpy("y")[0] == 2.0
        c.unload_model("params", headers=h)
        assert not c.is_model_ready("params", headers=h)
        index = {m["name"]: m for m in c.get_model_repository_index(as_json=True, headers=h)["models"]}
        assert index["params"]["state"] == "UNAVAILABLE"
        with pytest.raises(InferenceServerException) as info:
            c.infer("params", [inp], headers=h)
        assert "UNAVAILABLE" in str(info.value.status())
        c.load_model("params", headers=h)
        assert c.is_model_ready("params", headers=h)
        assert c.infer("params", [inp], headers=h).as_numpy("y")[0] == 2.0
        # a new model from its entry
        entry = {"name": "params2", "version": "1", "runtime": "python",
                 "path": str(repo / "params" / "1" / "model.py"), "class": "Params"}
        c.load_model("params2", config=json.dumps(entry), headers=h)
        assert c.is_model_ready("params2", headers=h)
        assert c.infer("params2", [inp], parameters={"scale": 3}, headers=h).as_numpy("y")[0] == 6.0
        with pytest.raises(InferenceServerException) as info:
            c.load_model("ghost", headers=h)
        assert "NOT_FOUND" in str(info.value.status())
        assert "failed to load 'ghost'" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            c.load_model("params", files={"file:1/model.py": b"x"}, headers=h)
        assert "INVALID_ARGUMENT" in str(info.value.status())
        with pytest.raises(InferenceServerException) as info:
            c.load_model("params3", config="{not yaml: [", headers=h)
        assert "INVALID_ARGUMENT" in str(info.value.status())
    finally:
        c.close()


# ---------------------------------------------------------------- inference


def _typed_values() -> dict[str, np.ndarray]:
    out = {}
    rng = np.random.default_rng(5)
    for t, np_name in ALL_DATATYPES.items():
        if t == "BYTES":
            out[t] = np.array([[b"hello", b"", "\u00fcn\u00efcode \u2713".encode()],
                               [b"\x00\xffraw", b"tab\tnew\nline", b"x" * 300]], dtype=object)
        elif t == "BOOL":
            out[t] = np.array([[True, False, True], [False, False, True]])
        elif t.startswith(("INT", "UINT")):
            info = np.iinfo(np_name)
            out[t] = np.array([[info.min, info.max, 0], [1, info.max - 1, 7]], dtype=np_name)
        else:
            out[t] = (rng.normal(size=(2, 3)) * 100).astype(np_name)
            out[t][0, 0] = np.finfo(np_name).max
    return out


TYPED = _typed_values()


def test_every_datatype_through_tritonclient(client: Any) -> None:
    inputs = []
    for t, arr in TYPED.items():
        inp = grpcclient.InferInput("in_" + t.lower(), [2, 3], t)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput("out_" + t.lower()) for t in ALL_DATATYPES]
    outputs.append(grpcclient.InferRequestedOutput("seen"))
    result = client.infer("alltypes", inputs, outputs=outputs, request_id="all-1")
    response = result.get_response()
    assert response.model_name == "alltypes"
    assert response.model_version == "1"
    assert response.id == "all-1"
    # answered with raw_output_contents, in the requested order
    assert [o.name for o in response.outputs] == [o.name() for o in outputs]
    assert len(response.raw_output_contents) == len(outputs)
    for t, arr in TYPED.items():
        got = result.as_numpy("out_" + t.lower())
        assert got is not None and got.shape == (2, 3), t
        if t == "BYTES":
            assert got.reshape(-1).tolist() == arr.reshape(-1).tolist()
        else:
            assert got.dtype == arr.dtype, t
            np.testing.assert_array_equal(got, arr, err_msg=t)
    seen = [s.decode() for s in result.as_numpy("seen").reshape(-1)]
    assert seen == [f"{t}={'object:bytes' if t == 'BYTES' else n}" for t, n in ALL_DATATYPES.items()]


def test_typed_contents_in_every_datatype(channel: Any) -> None:
    """KServe-style requests: data in InferTensorContents, not raw."""
    member = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
              "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
              "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
              "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}
    r = pb.ModelInferRequest(model_name="alltypes", id="typed")
    raw_fp16 = None
    for t, arr in TYPED.items():
        tensor = r.inputs.add(name="in_" + t.lower(), datatype=t, shape=[2, 3])
        if t == "FP16":
            raw_fp16 = tensor  # no typed member: must go raw, which needs all raw
            continue
        getattr(tensor.contents, member[t]).extend(arr.reshape(-1).tolist())
    assert raw_fp16 is not None
    r.inputs.remove(raw_fp16)
    r.inputs.add(name="in_fp16", datatype="FP16", shape=[2, 3])
    err = call_error(channel, "ModelInfer", r.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # FP16 has no typed member
    assert "in_fp16" in err.details()
    # FP16 given as FP32 data is refused too: the datatype decides the member
    r.inputs[-1].contents.fp32_contents.extend([0.0] * 6)
    err = call_error(channel, "ModelInfer", r.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_typed_contents_answer(channel: Any) -> None:
    r = pb.ModelInferRequest(model_name="params", id="t2")
    x = r.inputs.add(name="x", datatype="FP64", shape=[3])
    x.contents.fp64_contents.extend([1.0, -2.0, 0.5])
    r.parameters["scale"].double_param = 3.0
    r.parameters["tag"].string_param = "blue"
    r.parameters["flag"].bool_param = True
    r.parameters["count"].int64_param = -4
    r.outputs.add(name="y")
    answer = pb.ModelInferResponse.FromString(raw_call(channel, "ModelInfer", r.SerializeToString()))
    assert answer.id == "t2"
    assert [o.name for o in answer.outputs] == ["y"]
    assert answer.outputs[0].datatype == "FP64" and list(answer.outputs[0].shape) == [3]
    y = np.frombuffer(answer.raw_output_contents[0], dtype=np.float64)
    np.testing.assert_array_equal(y, [3.0, -6.0, 1.5])


def test_parameters_reach_the_model(client: Any) -> None:
    inp = grpcclient.InferInput("x", [2], "FP64")
    inp.set_data_from_numpy(np.array([2.0, 4.0]))
    params = {"scale": 0.5, "tag": "blue", "flag": True, "count": 7}
    result = client.infer("params", [inp], parameters=params)
    np.testing.assert_array_equal(result.as_numpy("y"), [1.0, 2.0])
    echoed = json.loads(result.as_numpy("echo")[0])
    assert echoed == params


def test_sklearn_model(client: Any, zoo: ModelZoo) -> None:
    X, _ = zoo.iris
    clf = zoo.trained(zoo.sklearn_classifier())
    rows = np.ascontiguousarray(X[::10])
    inp = grpcclient.InferInput("input", list(rows.shape), "FP64")
    inp.set_data_from_numpy(rows)
    result = client.infer("iris", [inp])
    np.testing.assert_array_equal(result.as_numpy("predict"), clf.predict(rows))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), clf.predict_proba(rows), rtol=1e-12)
    only = client.infer("iris", [inp], outputs=[grpcclient.InferRequestedOutput("predict")])
    assert [o.name for o in only.get_response().outputs] == ["predict"]
    assert only.as_numpy("predict_proba") is None


def test_large_tensor_round_trip(client: Any) -> None:
    """Several MiB each way: many DATA frames, flow control both ways."""
    arr = np.arange(3 * 1024 * 1024, dtype=np.float32).reshape(1024, -1)
    inputs = []
    for t in ALL_DATATYPES:
        data = arr if t == "FP32" else TYPED[t]
        inp = grpcclient.InferInput("in_" + t.lower(), list(data.shape), t)
        inp.set_data_from_numpy(data)
        inputs.append(inp)
    result = client.infer("alltypes", inputs, outputs=[grpcclient.InferRequestedOutput("out_fp32")])
    np.testing.assert_array_equal(result.as_numpy("out_fp32"), arr)


def test_concurrent_calls_on_one_channel(server: BerthServer) -> None:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    try:
        def one(i: int) -> float:
            inp = grpcclient.InferInput("x", [1], "FP64")
            inp.set_data_from_numpy(np.array([float(i)]))
            return float(c.infer("params", [inp], parameters={"scale": 2}).as_numpy("y")[0])

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(one, range(40))) == [2.0 * i for i in range(40)]
    finally:
        c.close()


def test_statistics(client: Any) -> None:
    before = client.get_inference_statistics("params", as_json=True)["model_stats"][0]
    inp = grpcclient.InferInput("x", [1], "FP64")
    inp.set_data_from_numpy(np.array([1.0]))
    for _ in range(3):
        client.infer("params", [inp])
    stats = client.get_inference_statistics("params", as_json=True)["model_stats"]
    assert len(stats) == 1 and stats[0]["name"] == "params" and stats[0]["version"] == "1"
    after = stats[0]
    count = lambda s, k: int(s.get(k, 0))  # noqa: E731  (proto3 JSON drops zeros)
    assert count(after, "inference_count") >= count(before, "inference_count") + 3
    success = after["inference_stats"]["success"]
    assert int(success["count"]) >= 3 and int(success["ns"]) > 0
    assert int(after["last_inference"]) > 0
    everything = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in everything} >= {"iris", "alltypes", "params", "slow"}
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nope")
    assert "NOT_FOUND" in str(info.value.status())


# ------------------------------------------------------------------ streams


def test_stream_infer(server: BerthServer) -> None:
    c = grpcclient.InferenceServerClient(url=server.grpc_url)
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(6):
            inp = grpcclient.InferInput("x", [2], "FP64")
            inp.set_data_from_numpy(np.array([float(i), 1.0]))
            c.async_stream_infer("params", [inp], request_id=f"s{i}", parameters={"scale": 10})
        bad = grpcclient.InferInput("x", [2, 2], "FP64")  # wrong rank
        bad.set_data_from_numpy(np.zeros((2, 2)))
        c.async_stream_infer("params", [bad], request_id="bad")
        c.async_stream_infer("no-such-model", [bad], request_id="lost")
        got: dict[str, Any] = {}
        errors = []
        for _ in range(8):
            result, error = answers.get(timeout=TIMEOUT)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("y")
        assert sorted(got) == [f"s{i}" for i in range(6)]
        for i in range(6):
            np.testing.assert_array_equal(got[f"s{i}"], [10.0 * i, 10.0])
        assert len(errors) == 2
        messages = " | ".join(str(e) for e in errors)
        assert "shape" in messages and "no-such-model" in messages
    finally:
        c.stop_stream()
        c.close()


def test_stream_raw_half_close_waits_for_answers(channel: Any) -> None:
    """The client sends everything and half-closes at once; every answer
    still comes, then the OK trailers."""
    call = channel.stream_stream(SERVICE + "ModelStreamInfer")
    reqs = [
        infer_request("params", [("x", "FP64", [1], np.array([float(i)]).tobytes())], id=str(i))
        for i in range(5)
    ]
    answers = [pb.ModelStreamInferResponse.FromString(b) for b in call(iter(reqs), timeout=TIMEOUT)]
    assert sorted(a.infer_response.id for a in answers) == [str(i) for i in range(5)]
    assert all(a.error_message == "" for a in answers)
    # an empty stream ends at once, OK
    assert list(call(iter([]), timeout=TIMEOUT)) == []


# ------------------------------------------------------------- error paths


def test_unknown_model_is_not_found(channel: Any) -> None:
    err = call_error(channel, "ModelInfer", infer_request("ghost", [("x", "FP64", [1], b"\0" * 8)]))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().startswith("Request for unknown model: 'ghost' is not found"), err.details()
    err = call_error(channel, "ModelInfer",
                     infer_request("params", [("x", "FP64", [1], b"\0" * 8)], model_version="9"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details().startswith("Request for unknown model: 'params' version 9 is not found"), \
        err.details()
    # a version string that is no number, as Triton's explicit-content examples send
    err = call_error(channel, "ModelInfer",
                     infer_request("params", [("x", "FP64", [1], b"\0" * 8)],
                                   model_version="wrong_specification"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("failed to get model version from specified version string "
            "'wrong_specification'") in err.details(), err.details()


def test_typed_contents_with_raw_contents_use_tritons_words(channel: Any) -> None:
    """Typed contents beside raw_input_contents are refused with the text
    Triton's grpc_explicit_*_content_client examples look for."""
    r = pb.ModelInferRequest(model_name="params")
    r.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.extend([1.0])
    r.raw_input_contents.append(b"\0" * 8)
    err = call_error(channel, "ModelInfer", r.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("contents field must not be specified when using raw_input_contents "
            "for 'x' for model 'params'") in err.details(), err.details()


def test_typed_contents_are_named_before_the_raw_count(channel: Any) -> None:
    """Two inputs with typed contents and one raw entry (what Triton's
    grpc_explicit_int_content_client sends): the typed contents are the
    error named, as Triton names it, not the count of raw entries."""
    r = pb.ModelInferRequest(model_name="params")
    r.inputs.add(name="x", datatype="FP64", shape=[1]).contents.fp64_contents.extend([1.0])
    r.inputs.add(name="z", datatype="FP64", shape=[1]).contents.fp64_contents.extend([2.0])
    r.raw_input_contents.append(b"\0" * 8)
    err = call_error(channel, "ModelInfer", r.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith(
        "contents field must not be specified when using raw_input_contents for 'x'"
    ), err.details()


def test_classification_is_refused_as_over_rest(channel: Any) -> None:
    """An output asking for classification (class_count) is refused, as
    over REST, instead of answered with the plain tensor."""
    r = pb.ModelInferRequest(model_name="params")
    r.inputs.add(name="x", datatype="FP64", shape=[1])
    r.raw_input_contents.append(b"\0" * 8)
    r.outputs.add(name="y").parameters["classification"].int64_param = 3
    err = call_error(channel, "ModelInfer", r.SerializeToString())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "classification extension is not supported" in err.details(), err.details()


def test_bad_shape_and_datatype_are_invalid_argument(channel: Any) -> None:
    cases = [
        (infer_request("params", [("x", "FP64", [2, 2], b"\0" * 32)]), "shape"),
        (infer_request("params", [("x", "FP32", [2], b"\0" * 8)]), "datatype"),
        (infer_request("params", [("x", "FP64", [3], b"\0" * 8)]), "raw_input_contents"),
        (infer_request("params", [("x", "FLOAT64", [1], b"\0" * 8)]), "datatype"),
        (infer_request("params", [("y", "FP64", [1], b"\0" * 8)]), "'y'"),
    ]
    for body, word in cases:
        err = call_error(channel, "ModelInfer", body)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert word in err.details(), err.details()


def test_malformed_protobuf_is_invalid_argument(channel: Any) -> None:
    for junk in (b"\x0f\x01\x02", b"\x0a\x50m", b"\xff" * 20):
        err = call_error(channel, "ModelInfer", junk)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ModelInferRequest" in err.details()
    err = call_error(channel, "ModelMetadata", b"\x0a\x50m")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unknown_method_is_unimplemented(channel: Any) -> None:
    for method in ("NoSuchMethod", "TraceSetting"):
        err = call_error(channel, method, b"")
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    err = channel.unary_unary("/other.Service/ModelInfer")
    with pytest.raises(grpc.RpcError) as info:
        err(b"", timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_model_exception_is_internal(channel: Any) -> None:
    err = call_error(channel, "ModelInfer",
                     infer_request("raiser", [("x", "FP32", [2], np.array([1, -1], np.float32).tobytes())]))
    assert err.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
    assert "boom" in err.details()
    ok = raw_call(channel, "ModelInfer",
                  infer_request("raiser", [("x", "FP32", [1], np.array([1], np.float32).tobytes())]))
    assert pb.ModelInferResponse.FromString(ok).outputs[0].name == "y"


def test_deadline_exceeded(channel: Any) -> None:
    body = infer_request("slow", [("x", "FP32", [1], np.array([1], np.float32).tobytes())])
    started = time.monotonic()
    err = call_error(channel, "ModelInfer", body, timeout=0.3)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.4
    time.sleep(1.6)  # the slow model finishes; the server stays healthy
    assert pb.ModelInferResponse.FromString(raw_call(channel, "ModelInfer", body)).outputs


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_deadline_is_enforced_by_the_server(server: BerthServer, tmp_path: Path) -> None:
    """A client that does not cancel (curl) still gets DEADLINE_EXCEEDED in
    the trailers when grpc-timeout passes."""
    body = infer_request("slow", [("x", "FP32", [1], np.array([2], np.float32).tobytes())])
    framed = tmp_path / "msg.bin"
    framed.write_bytes(b"\0" + len(body).to_bytes(4, "big") + body)
    time.sleep(1.6)  # let an earlier slow call finish
    out = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-", "-X", "POST",
         "-H", "content-type: application/grpc", "-H", "te: trailers", "-H", "grpc-timeout: 200m",
         "--data-binary", f"@{framed}", f"http://{server.grpc_url}{SERVICE}ModelInfer"],
        capture_output=True, timeout=30, text=True,
    )
    headers = out.stdout.lower()
    assert "grpc-status: 4" in headers, out.stdout + out.stderr
    time.sleep(1.6)


def test_queue_full_is_resource_exhausted(server: BerthServer, repo: Path) -> None:
    """slow has max_queue_size 1 and one worker: of several calls at once
    while it runs one, some are refused with RESOURCE_EXHAUSTED."""
    marks = repo.parent / "slow-marks.txt"

    def started_3() -> int:
        lines = marks.read_text().splitlines() if marks.exists() else []
        return sum(1 for line in lines if line.endswith(" 3.0"))

    before = started_3()
    body = infer_request("slow", [("x", "FP32", [1], np.array([3], np.float32).tobytes())])
    codes = []
    lock = threading.Lock()

    def one() -> None:
        ch = grpc.insecure_channel(server.grpc_url)
        try:
            raw_call(ch, "ModelInfer", body, timeout=TIMEOUT)
            code = grpc.StatusCode.OK
        except grpc.RpcError as e:
            code = e.code()
        finally:
            ch.close()
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    threads[0].start()
    # the first call runs on the worker (its predict has started) before the
    # others are sent, so they meet a busy worker and a queue of one
    wait_until(lambda: started_3() > before, TIMEOUT, "the first call to reach the worker",
               on_timeout=server.log_tail)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    assert grpc.StatusCode.OK in codes, codes


def test_http1_on_the_grpc_port_is_refused(server: BerthServer) -> None:
    resp = http_call(server.grpc_port, "GET", "/v2/health/live")
    assert resp.status == 505
    assert "HTTP/2" in resp.json()["error"]


# ------------------------------------------------------- limits, readiness


@pytest.fixture(scope="module")
def limited(module_server: Any, zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> BerthServer:
    root = tmp_path_factory.mktemp("grpc-limited")
    add_python_model(root / "models", "params", PARAMS_SOURCE, "Params")
    add_python_model(root / "models", "broken", BROKEN_LOAD_SOURCE, "Broken")
    config = root / "app.yaml"
    config.write_text("server:\n  grpc_max_message_bytes: 4096\n")
    # --no-exit-on-error: broken fails to load at start, and the server stays up
    return module_server(str(root / "models"), "--config", str(config), "--no-exit-on-error",
                         wait_for=["params"])


def test_message_over_the_limit_is_resource_exhausted(limited: BerthServer) -> None:
    ch = grpc.insecure_channel(limited.grpc_url)
    try:
        small = infer_request("params", [("x", "FP64", [10], b"\0" * 80)])
        assert pb.ModelInferResponse.FromString(raw_call(ch, "ModelInfer", small)).outputs
        big = infer_request("params", [("x", "FP64", [1000], b"\0" * 8000)])
        err = call_error(ch, "ModelInfer", big)
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "4096" in err.details()
        # the channel and the server carry on
        assert pb.ModelInferResponse.FromString(raw_call(ch, "ModelInfer", small)).outputs
    finally:
        ch.close()


def test_model_not_ready_is_unavailable(limited: BerthServer) -> None:
    def failed() -> bool:
        return limited.get("/v2/models/broken/ready").status == 503 and "weights" in limited.get(
            "/v2/models/broken/ready").body.decode()

    wait_until(failed, TIMEOUT, "broken's load error on /v2/models/broken/ready", interval=0.2,
               on_timeout=limited.log_tail)
    ch = grpc.insecure_channel(limited.grpc_url)
    try:
        err = call_error(ch, "ModelInfer", infer_request("broken", [("x", "FP32", [1], b"\0" * 4)]))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert "not ready" in err.details()
        ready = pb.ServerReadyResponse.FromString(raw_call(ch, "ServerReady", b""))
        assert not ready.ready
        index = pb.RepositoryIndexResponse.FromString(raw_call(ch, "RepositoryIndex", b""))
        broken = [m for m in index.models if m.name == "broken"][0]
        assert broken.state == "UNAVAILABLE" and "weights" in broken.reason
        only_ready = pb.RepositoryIndexResponse.FromString(
            raw_call(ch, "RepositoryIndex", pb.RepositoryIndexRequest(ready=True).SerializeToString()))
        assert [m.name for m in only_ready.models] == ["params"]
    finally:
        ch.close()


def test_grpc_port_flag_and_free_port(berth_server: Any, repo: Path) -> None:
    """--grpc-port 0 picks a free port, which the engine logs."""
    server = berth_server(str(repo), "--grpc-port", "0", wait_for=["params"])
    records = [r for r in server.log_records() if "grpc_port" in r]
    assert records, server.log_tail()
    port = int(records[0]["grpc_port"])
    assert port > 0
    c = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        assert c.is_server_live()
    finally:
        c.close()


# KServe's own client (v1 and v2 over REST, v2 over gRPC) is tested in
# test_kserve_client.py, from its own virtual environment.
