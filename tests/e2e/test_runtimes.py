"""Every runtime, served from a file with `berth serve PATH`, answers what
the framework itself computes in-process; metadata names the right platform
and signature. A model repository serves every model and version."""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import yaml
from berth_e2e import (
    BerthServer,
    ModelZoo,
    assert_error,
    berth_executable,
    copy_into,
    fill,
    infer_body,
    outputs_by_name,
    server_env,
    tensor,
)

Arrays = dict[str, np.ndarray]


@dataclass
class Case:
    id: str
    build: Callable[[ModelZoo], Path]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: dict[str, tuple[str, list[int]]]
    make_inputs: Callable[[ModelZoo], Arrays]
    reference: Callable[[ModelZoo, Path, Arrays], Arrays]
    cls: str | None = None
    rtol: float = 1e-9
    atol: float = 0.0

    def name(self, path: Path) -> str:
        return path.stem


# ------------------------------------------------------------- references


def _iris_rows(zoo: ModelZoo) -> Arrays:
    X, _ = zoo.iris
    return {"input": np.ascontiguousarray(X[::7])}


def _iris_rows32(zoo: ModelZoo) -> Arrays:
    X, _ = zoo.iris
    return {"input": np.ascontiguousarray(X[::7], dtype=np.float32)}


def _reg_rows(zoo: ModelZoo) -> Arrays:
    X, _ = zoo.regression
    return {"input": np.ascontiguousarray(X[:25])}


def _reg_rows32(zoo: ModelZoo) -> Arrays:
    X, _ = zoo.regression
    return {"input": np.ascontiguousarray(X[:25], dtype=np.float32)}


def _sk_classifier_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    est = zoo.trained(path)
    return {"predict": est.predict(inputs["input"]), "predict_proba": est.predict_proba(inputs["input"])}


def _sk_regressor_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    return {"predict": zoo.trained(path).predict(inputs["input"])}


def _xgb_booster_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    import xgboost as xgb

    return {"predict": zoo.trained(path).predict(xgb.DMatrix(inputs["input"]))}


def _xgb_classifier_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    clf = zoo.trained(path)
    return {"predict": clf.predict(inputs["input"]), "predict_proba": clf.predict_proba(inputs["input"])}


def _lgbm_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    return {"predict": zoo.trained(path).predict(inputs["input"])}


def _onnx_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {
        k: (np.array([b.decode() for b in v.reshape(-1)], dtype=object).reshape(v.shape) if v.dtype == object else v)
        for k, v in inputs.items()
    }
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed)))


def _python_ref(zoo: ModelZoo, path: Path, inputs: Arrays) -> Arrays:
    import berth

    spec = importlib.util.spec_from_file_location(f"_ref_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Scaler()
    model.context = berth.ModelContext(name=path.stem, path=path.parent)
    model.load()
    return dict(model.predict(dict(inputs)))


IRIS_IN = [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
IRIS_IN32 = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
REG_IN = [{"name": "input", "datatype": "FP64", "shape": [-1, 5]}]
REG_IN32 = [{"name": "input", "datatype": "FP32", "shape": [-1, 5]}]
CLASSIFIER_OUT = {"predict": ("INT64", [-1]), "predict_proba": ("FP64", [-1, 3])}

CASES = [
    Case(
        "sklearn-classifier-joblib",
        lambda z: z.sklearn_classifier("iris.joblib"),
        "sklearn_sklearn",
        IRIS_IN,
        CLASSIFIER_OUT,
        _iris_rows,
        _sk_classifier_ref,
    ),
    Case(
        "sklearn-classifier-pkl",
        lambda z: z.sklearn_classifier("iris_pickle.pkl"),
        "sklearn_sklearn",
        IRIS_IN,
        CLASSIFIER_OUT,
        _iris_rows,
        _sk_classifier_ref,
    ),
    Case(
        "sklearn-string-labels",
        lambda z: z.sklearn_string_labels(),
        "sklearn_sklearn",
        IRIS_IN,
        {"predict": ("BYTES", [-1]), "predict_proba": ("FP64", [-1, 3])},
        _iris_rows,
        _sk_classifier_ref,
    ),
    Case(
        "sklearn-regressor",
        lambda z: z.sklearn_regressor(),
        "sklearn_sklearn",
        REG_IN,
        {"predict": ("FP64", [-1])},
        _reg_rows,
        _sk_regressor_ref,
    ),
    Case(
        "sklearn-pipeline",
        lambda z: z.sklearn_pipeline(),
        "sklearn_sklearn",
        IRIS_IN,
        CLASSIFIER_OUT,
        _iris_rows,
        _sk_classifier_ref,
    ),
    Case(
        "xgboost-booster-json",
        lambda z: z.xgboost_booster(".json"),
        "xgboost_xgboost",
        REG_IN32,
        {"predict": ("FP32", [-1])},
        _reg_rows32,
        _xgb_booster_ref,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "xgboost-booster-ubj",
        lambda z: z.xgboost_booster(".ubj"),
        "xgboost_xgboost",
        REG_IN32,
        {"predict": ("FP32", [-1])},
        _reg_rows32,
        _xgb_booster_ref,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "xgboost-classifier",
        lambda z: z.xgboost_classifier(),
        "xgboost_xgboost",
        IRIS_IN32,
        {"predict": ("INT64", [-1]), "predict_proba": ("FP32", [-1, 3])},
        _iris_rows32,
        _xgb_classifier_ref,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "lightgbm",
        lambda z: z.lightgbm_booster(),
        "lightgbm_lightgbm",
        REG_IN,
        {"predict": ("FP64", [-1])},
        _reg_rows,
        _lgbm_ref,
    ),
    Case(
        "onnx-matmul-add",
        lambda z: z.onnx_linear(),
        "onnx_onnxv1",
        [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        {"y": ("FP32", [-1, 3])},
        lambda z: {"x": np.ascontiguousarray(z.iris[0][::9], dtype=np.float32)},
        _onnx_ref,
        rtol=1e-6,
        atol=1e-6,
    ),
    Case(
        "onnx-int64",
        lambda z: z.onnx_int64(),
        "onnx_onnxv1",
        [{"name": "ids", "datatype": "INT64", "shape": [-1, 2]}],
        {"doubled": ("INT64", [-1, 2]), "total": ("FP64", [-1])},
        lambda z: {"ids": np.array([[1, -2], [3_000_000_000, 4], [-(2**40), 7]], dtype=np.int64)},
        _onnx_ref,
    ),
    Case(
        "onnx-string",
        lambda z: z.onnx_string(),
        "onnx_onnxv1",
        [
            {"name": "words", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
        ],
        {"words_out": ("BYTES", [-1]), "score_out": ("FP32", [-1])},
        lambda z: {
            "words": np.array([b"apple", b"", "caf\u00e9".encode()], dtype=object),
            "score": np.array([0.25, -1.5, 3.0], dtype=np.float32),
        },
        _onnx_ref,
    ),
    Case(
        "python-custom",
        lambda z: z.python_scaler(),
        "berth_python",
        [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        {"y": ("FP32", [-1, 2]), "norm": ("FP64", [-1])},
        lambda z: {"x": np.array([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0], [3.5, 1.25, -0.75]], dtype=np.float32)},
        _python_ref,
        cls="Scaler",
        rtol=1e-6,
        atol=1e-6,
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: c.id)
def served(
    request: pytest.FixtureRequest, zoo: ModelZoo, module_server: Any
) -> Iterator[tuple[Case, Path, BerthServer]]:
    case: Case = request.param
    path = case.build(zoo)
    target = f"{path}:{case.cls}" if case.cls else str(path)
    server = module_server(target)
    try:
        yield case, path, server
    finally:
        server.close()


def test_metadata_platform_and_signature(served: tuple[Case, Path, BerthServer]) -> None:
    case, path, server = served
    name = case.name(path)
    resp = server.get(f"/v2/models/{name}")
    assert resp.status == 200, f"{case.id}: model served as {name!r}? {resp.body[:300]!r}"
    doc = resp.json()
    assert doc["name"] == name
    assert "1" in doc["versions"]
    assert doc["platform"] == case.platform
    assert doc["inputs"] == case.inputs
    outs = {o["name"]: (o["datatype"], o["shape"]) for o in doc["outputs"]}
    assert set(outs) == set(case.outputs), outs
    for out_name, (datatype, shape) in case.outputs.items():
        got_type, got_shape = outs[out_name]
        if datatype:
            assert got_type == datatype, (out_name, got_type)
        assert got_shape == shape, (out_name, got_shape)
    assert server.get(f"/v2/models/{name}/ready").status == 200


def test_served_output_equals_framework_output(
    served: tuple[Case, Path, BerthServer], zoo: ModelZoo
) -> None:
    case, path, server = served
    name = case.name(path)
    inputs = case.make_inputs(zoo)
    expected = case.reference(zoo, path, inputs)

    client = httpclient.InferenceServerClient(url=server.triton_url, network_timeout=60.0)
    try:
        infer_inputs = []
        for spec in case.inputs:
            arr = inputs[spec["name"]]
            inp = httpclient.InferInput(spec["name"], list(arr.shape), spec["datatype"])
            inp.set_data_from_numpy(arr, binary_data=False)
            infer_inputs.append(inp)
        requested = [httpclient.InferRequestedOutput(n, binary_data=False) for n in case.outputs]
        result = client.infer(name, infer_inputs, outputs=requested)
    finally:
        client.close()

    for out_name in case.outputs:
        got = result.as_numpy(out_name)
        want = np.asarray(expected[out_name])
        assert got is not None, f"{case.id}: no output {out_name!r} in {result.get_response()}"
        if got.dtype == object or want.dtype == object or want.dtype.kind in "US":
            got_list = [v.decode() if isinstance(v, bytes) else str(v) for v in got.reshape(-1)]
            want_list = [v.decode() if isinstance(v, bytes) else str(v) for v in want.reshape(-1)]
            assert got_list == want_list, (case.id, out_name)
            assert got.shape == want.shape
        elif want.dtype.kind in "iub":
            np.testing.assert_array_equal(got, want, err_msg=f"{case.id}: {out_name}")
        else:
            np.testing.assert_allclose(
                got, want, rtol=case.rtol, atol=case.atol, err_msg=f"{case.id}: {out_name}"
            )
        datatype = case.outputs[out_name][0]
        if datatype:
            assert result.get_output(out_name)["datatype"] == datatype


# ------------------------------------------------------------- flags


def test_name_flag_overrides_the_stem(zoo: ModelZoo, berth_server: Any) -> None:
    path = zoo.sklearn_classifier("iris.joblib")
    server = berth_server(str(path), "--name", "flowers")
    assert server.get("/v2/models/flowers").status == 200
    assert_error(server.get("/v2/models/iris"), 404, "iris")
    X, _ = zoo.iris
    doc = server.infer_ok("flowers", infer_body([tensor("input", "FP64", [1, 4], X[0].tolist())]))
    assert doc["model_name"] == "flowers"
    assert outputs_by_name(doc)["predict"]["data"] == [0]


def test_default_host_is_loopback(zoo: ModelZoo, tmp_path: Path) -> None:
    """Without --host the engine document says 127.0.0.1 (checked with
    --print-config, so no server binds another address)."""
    path = zoo.sklearn_classifier("iris.joblib")
    proc = subprocess.run(
        [berth_executable(), "serve", str(path), "--print-config"],
        capture_output=True,
        timeout=60,
        env=server_env(),
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    doc = yaml.safe_load(proc.stdout)
    assert doc["server"]["host"] == "127.0.0.1"
    assert doc["server"]["http_port"] == 8080
    (model,) = doc["models"]
    assert model["name"] == "iris"
    assert model["runtime"] == "sklearn"


# --------------------------------------------------------- model repository


@pytest.fixture(scope="module")
def repository(zoo: ModelZoo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<repo>/iris/{1,2}/model.joblib with berth.yaml (two instances, batches
    of at most 8; version 2 overrides instances to 1), <repo>/linear/1/model.onnx."""
    import joblib

    root = tmp_path_factory.mktemp("repository")
    v1, v2 = zoo.sklearn_versions()
    (root / "iris" / "1").mkdir(parents=True)
    (root / "iris" / "2").mkdir(parents=True)
    joblib.dump(v1, root / "iris" / "1" / "model.joblib")
    joblib.dump(v2, root / "iris" / "2" / "model.joblib")
    (root / "iris" / "berth.yaml").write_text("runtime: sklearn\ninstances: 2\nmax_batch_size: 8\n")
    (root / "iris" / "2" / "berth.yaml").write_text("instances: 1\n")
    copy_into(zoo.onnx_linear(), root / "linear" / "1", "model.onnx")
    return root


@pytest.fixture(scope="module")
def repo_server(module_server: Any, repository: Path) -> Iterator[BerthServer]:
    server = module_server(str(repository))
    try:
        yield server
    finally:
        server.close()


def test_repository_metadata_lists_every_version(repo_server: BerthServer) -> None:
    doc = repo_server.get("/v2/models/iris").json()
    assert doc["name"] == "iris"
    assert sorted(doc["versions"]) == ["1", "2"]
    for v in ("1", "2"):
        resp = repo_server.get(f"/v2/models/iris/versions/{v}")
        assert resp.status == 200
        assert resp.json()["name"] == "iris"
        assert repo_server.get(f"/v2/models/iris/versions/{v}/ready").status == 200
    linear = repo_server.get("/v2/models/linear").json()
    assert linear["platform"] == "onnx_onnxv1"
    assert linear["versions"] == ["1"]


def test_repository_versions_answer_and_newest_is_default(
    repo_server: BerthServer, zoo: ModelZoo
) -> None:
    v1, v2 = zoo.sklearn_versions()
    X, _ = zoo.iris
    rows = X[::19]  # 8 rows
    body = infer_body([tensor("input", "FP64", list(rows.shape), rows.tolist())])
    p1 = v1.predict(rows).tolist()
    p2 = v2.predict(rows).tolist()
    assert p1 != p2, "the two versions must differ for this test to mean anything"

    doc1 = repo_server.infer_ok("iris", body, version="1")
    doc2 = repo_server.infer_ok("iris", body, version="2")
    newest = repo_server.infer_ok("iris", body)
    assert outputs_by_name(doc1)["predict"]["data"] == p1
    assert outputs_by_name(doc2)["predict"]["data"] == p2
    assert outputs_by_name(newest)["predict"]["data"] == p2
    assert doc1.get("model_version", "1") == "1"
    assert doc2.get("model_version", "2") == "2"
    assert newest.get("model_version", "2") == "2"


def test_repository_second_model_answers(repo_server: BerthServer, zoo: ModelZoo) -> None:
    import onnxruntime as ort

    x = np.ascontiguousarray(zoo.iris[0][:5], dtype=np.float32)
    sess = ort.InferenceSession(str(zoo.onnx_linear()), providers=["CPUExecutionProvider"])
    (want,) = sess.run(["y"], {"x": x})
    doc = repo_server.infer_ok("linear", infer_body([tensor("x", "FP32", [5, 4], x.tolist())]))
    got = np.array(outputs_by_name(doc)["y"]["data"], dtype=np.float32).reshape(5, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_repository_berth_yaml_is_applied(repo_server: BerthServer, zoo: ModelZoo) -> None:
    workers = repo_server.worker_pids()
    iris_workers = sorted(w for w in workers if w.startswith("iris/"))
    assert iris_workers == ["iris/1/0", "iris/1/1", "iris/2/0"], workers
    assert "linear/1/0" in workers

    X, _ = zoo.iris
    nine = X[:9]
    resp = repo_server.infer("iris", infer_body([tensor("input", "FP64", [9, 4], nine.tolist())]))
    assert_error(resp, 400, "input", "8")


def test_repository_unknown_version(repo_server: BerthServer) -> None:
    assert_error(repo_server.get("/v2/models/iris/versions/3"), 404, "3")
    assert_error(repo_server.get("/v2/models/linear/versions/2/ready"), 404)



TWO_CLASSES_SOURCE = """
import os
import numpy as np
import berth

LOADS = @LOADS@


class Plus1(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def predict(self, inputs):
        return {"y": inputs["x"] + 1}


class Times2(berth.Model):
    inputs = [berth.TensorSpec("x", "FP64", [-1])]
    outputs = [berth.TensorSpec("y", "FP64", [-1])]

    def load(self):
        with open(LOADS, "a") as f:
            f.write("%d\\n" % os.getpid())

    def predict(self, inputs):
        return {"y": inputs["x"] * 2}
"""


def test_python_file_colon_class_selects_the_class_and_loads_once(
    berth_server: Any, tmp_path: Path
) -> None:
    loads = tmp_path / "loads.log"
    path = tmp_path / "two_models.py"
    path.write_text(fill(TWO_CLASSES_SOURCE, LOADS=str(loads)))
    server = berth_server(f"{path}:Times2")
    doc = server.get("/v2/models/two_models").json()
    assert doc["platform"] == "berth_python"
    for x in ([1.0, 2.5], [-3.0], [0.0, 1.0, 2.0]):
        out = server.infer_ok("two_models", infer_body([tensor("x", "FP64", [len(x)], x)]))
        assert outputs_by_name(out)["y"]["data"] == [v * 2 for v in x]
    worker = server.wait_worker("two_models/1/0")
    assert loads.read_text().split() == [str(worker)], "load() must run once per worker"
