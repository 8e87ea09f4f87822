"""Each runtime loads a model built here and predicts what the framework itself predicts."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth.errors import ConfigError, InvalidInput, MissingExtraError, ModelLoadError
from berth.runtimes import Runtime, get_runtime
from berth.tensors import decode_tensor_set, encode_tensor_set

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4))
Y3 = (X[:, 0] > 0.5).astype(int) + (X[:, 1] > 0).astype(int)  # 3 classes


def entry(runtime: str, path: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "m", "version": "1", "runtime": runtime, "path": str(path), **extra}


def load(runtime: str, path: Path, **extra: Any) -> Runtime:
    rt = get_runtime(runtime)
    rt.load(entry(runtime, path, **extra))
    return rt


def wire(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs as a worker receives them: through the tensor-set encoding."""
    tensors, _ = decode_tensor_set(bytearray(encode_tensor_set(inputs)))
    return tensors


def spec(rt: Runtime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    inputs, outputs = rt.signature()
    return [s.to_dict() for s in inputs], [s.to_dict() for s in outputs]


# ------------------------------------------------------------------ sklearn


def test_sklearn_classifier(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500).fit(X, Y3)
    joblib.dump(model, tmp_path / "clf.joblib")
    rt = load("sklearn", tmp_path / "clf.joblib")
    assert rt.platform == "sklearn_sklearn"
    assert spec(rt) == (
        [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]},
        ],
    )
    out = rt.predict(wire({"input": X[:7]}))
    assert out["predict"].dtype == np.int64
    np.testing.assert_array_equal(out["predict"], model.predict(X[:7]))
    np.testing.assert_array_equal(out["predict_proba"], model.predict_proba(X[:7]))


def test_sklearn_regressor_takes_other_numeric_dtypes(tmp_path: Path) -> None:
    import joblib
    from sklearn.linear_model import Ridge

    model = Ridge().fit(X, X @ [1.0, 2.0, 0.0, -1.0])
    joblib.dump(model, tmp_path / "reg.pkl")
    rt = load("sklearn", tmp_path / "reg.pkl")
    assert spec(rt)[1] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    x32 = X[:5].astype(np.float32)
    out = rt.predict(wire({"input": x32}))
    np.testing.assert_allclose(out["predict"], model.predict(x32.astype(np.float64)))


def test_sklearn_pipeline_with_string_labels_and_no_proba(tmp_path: Path) -> None:
    import joblib
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    labels = np.array(["low", "mid", "high"])[Y3]
    model = make_pipeline(StandardScaler(), SVC()).fit(X, labels)
    joblib.dump(model, tmp_path / "pipe.joblib")
    rt = load("sklearn", tmp_path / "pipe.joblib")
    assert spec(rt) == (
        [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        [{"name": "predict", "datatype": "BYTES", "shape": [-1]}],
    )
    out = rt.predict(wire({"input": X[:9]}))
    assert list(out) == ["predict"]
    assert out["predict"].tolist() == model.predict(X[:9]).tolist()
    echoed, _ = decode_tensor_set(encode_tensor_set(out))
    assert echoed["predict"].tolist() == [s.encode() for s in model.predict(X[:9])]


def test_sklearn_text_pipeline_with_declared_bytes_input(tmp_path: Path) -> None:
    import joblib
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["good movie", "great film", "bad movie", "awful film", "good fun", "bad day"]
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 1, 0, 0, 1, 0])
    joblib.dump(model, tmp_path / "text.joblib")
    declared = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    rt = load("sklearn", tmp_path / "text.joblib", inputs=declared)
    queries = ["great movie", "awful day"]
    out = rt.predict(wire({"text": np.array([q.encode() for q in queries], dtype=object)}))
    np.testing.assert_array_equal(out["predict"], model.predict(queries))


def test_sklearn_folder_path_and_bad_files(tmp_path: Path) -> None:
    import joblib
    from sklearn.tree import DecisionTreeClassifier

    (tmp_path / "v1").mkdir()
    joblib.dump(DecisionTreeClassifier().fit(X, Y3), tmp_path / "v1" / "model.joblib")
    rt = load("sklearn", tmp_path / "v1")
    assert rt.predict({"input": X[:2]})["predict"].shape == (2,)

    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="joblib could not load it"):
        load("sklearn", tmp_path / "junk.joblib")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load("sklearn", tmp_path / "missing.joblib")


# ------------------------------------------------------------------ xgboost


@pytest.mark.parametrize("ext", ["json", "ubj"])
def test_xgboost_classifier(tmp_path: Path, ext: str) -> None:
    import xgboost as xgb

    model = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, Y3)
    path = tmp_path / f"clf.{ext}"
    model.save_model(path)
    rt = load("xgboost", path)
    assert rt.platform == "xgboost_xgboost"
    assert spec(rt) == (
        [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP32", "shape": [-1, 3]},
        ],
    )
    x = X[:8].astype(np.float32)
    out = rt.predict(wire({"input": x}))
    assert out["predict"].dtype == np.int64 and out["predict_proba"].dtype == np.float32
    np.testing.assert_array_equal(out["predict"], model.predict(x))
    np.testing.assert_array_equal(out["predict_proba"], model.predict_proba(x))


def test_xgboost_regressor(tmp_path: Path) -> None:
    import xgboost as xgb

    model = xgb.XGBRegressor(n_estimators=5).fit(X, X[:, 0] * 3)
    model.save_model(tmp_path / "reg.json")
    rt = load("xgboost", tmp_path / "reg.json")
    assert spec(rt)[1] == [{"name": "predict", "datatype": "FP32", "shape": [-1]}]
    out = rt.predict(wire({"input": X[:6]}))  # FP64 in: accepted as is
    np.testing.assert_array_equal(out["predict"], model.predict(X[:6]))


@pytest.mark.parametrize(
    ("params", "tail"),
    [
        ({"objective": "binary:logistic"}, []),
        ({"objective": "multi:softprob", "num_class": 3}, [3]),
    ],
)
def test_xgboost_booster(tmp_path: Path, params: dict[str, Any], tail: list[int]) -> None:
    import xgboost as xgb

    label = (Y3 > 0).astype(int) if "num_class" not in params else Y3
    booster = xgb.train(params, xgb.DMatrix(X, label=label), num_boost_round=4)
    booster.save_model(tmp_path / "b.json")
    rt = load("xgboost", tmp_path / "b.json")
    assert spec(rt)[1] == [{"name": "predict", "datatype": "FP32", "shape": [-1, *tail]}]
    x = X[:5].astype(np.float32)
    out = rt.predict(wire({"input": x}))
    np.testing.assert_array_equal(out["predict"], booster.predict(xgb.DMatrix(x)))


# ------------------------------------------------------------------ lightgbm


@pytest.mark.parametrize(
    ("params", "tail"),
    [({"objective": "binary"}, []), ({"objective": "multiclass", "num_class": 3}, [3])],
)
def test_lightgbm_booster(tmp_path: Path, params: dict[str, Any], tail: list[int]) -> None:
    import lightgbm as lgb

    label = (Y3 > 0).astype(int) if "num_class" not in params else Y3
    data = lgb.Dataset(X, label=label, params={"min_data_in_leaf": 5, "verbose": -1})
    booster = lgb.train({**params, "verbose": -1, "min_data_in_leaf": 5}, data, num_boost_round=5)
    booster.save_model(tmp_path / "model.txt")
    rt = load("lightgbm", tmp_path / "model.txt")
    assert rt.platform == "lightgbm_lightgbm"
    assert spec(rt) == (
        [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        [{"name": "predict", "datatype": "FP64", "shape": [-1, *tail]}],
    )
    out = rt.predict(wire({"input": X[:6]}))
    np.testing.assert_array_equal(out["predict"], booster.predict(X[:6]))


# ------------------------------------------------------------------ onnx


def _save(model: Any, path: Path) -> Path:
    import onnx

    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _linear_onnx(path: Path, w: np.ndarray, b: np.ndarray) -> Path:
    import onnx.helper as h
    from onnx import TensorProto, numpy_helper

    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["xw"]), h.make_node("Add", ["xw", "B"], ["y"])],
        "linear",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    return _save(model, path)


def test_onnx_matmul_add(tmp_path: Path) -> None:
    import onnxruntime as ort

    w = RNG.normal(size=(4, 2)).astype(np.float32)
    b = np.array([0.5, -1.0], dtype=np.float32)
    path = _linear_onnx(tmp_path / "linear.onnx", w, b)
    rt = load("onnx", path, parameters={"intra_op_threads": 1})
    assert rt.platform == "onnx_onnxv1"
    assert spec(rt) == (
        [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    )
    x = X[:3].astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    np.testing.assert_array_equal(rt.predict(wire({"x": x}))["y"], expected)
    # FP64 in (a declared signature may say so): cast to the graph's float32
    np.testing.assert_array_equal(rt.predict({"x": x.astype(np.float64)})["y"], expected)
    with pytest.raises(InvalidInput):
        rt.predict({"x": np.zeros((2, 3), np.float32)})


def test_onnx_string_input_and_non_tensor_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx.helper as h
    from onnx import TensorProto

    graph = h.make_graph(
        [
            h.make_node("Identity", ["s"], ["echo"]),
            h.make_node("Shape", ["s"], ["n"]),
            h.make_node("SequenceConstruct", ["n"], ["seq"]),
        ],
        "strings",
        [h.make_tensor_value_info("s", TensorProto.STRING, [None])],
        [
            h.make_tensor_value_info("echo", TensorProto.STRING, [None]),
            h.make_tensor_value_info("n", TensorProto.INT64, [1]),
            h.make_tensor_sequence_value_info("seq", TensorProto.INT64, None),
        ],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    path = _save(model, tmp_path / "strings.onnx")
    with caplog.at_level(logging.WARNING):
        rt = load("onnx", path)
    assert "'seq'" in caplog.text and "left out" in caplog.text
    assert spec(rt) == (
        [{"name": "s", "datatype": "BYTES", "shape": [-1]}],
        [
            {"name": "echo", "datatype": "BYTES", "shape": [-1]},
            {"name": "n", "datatype": "INT64", "shape": [1]},
        ],
    )
    out = rt.predict(wire({"s": np.array(["héllo".encode(), b"x"], dtype=object)}))
    assert out["echo"].tolist() == ["héllo", "x"]
    np.testing.assert_array_equal(out["n"], [2])
    echoed, _ = decode_tensor_set(encode_tensor_set(out))
    assert echoed["echo"].tolist() == ["héllo".encode(), b"x"]


def test_onnx_bad_file(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="ONNX Runtime could not load it"):
        load("onnx", tmp_path / "bad.onnx")


# ------------------------------------------------------------------ python


CUSTOM = textwrap.dedent(
    """
    import numpy as np
    import berth
    from helper import OFFSET  # a neighbour module: the folder is on sys.path

    class Base(berth.Model):
        pass

    class Scaler(Base):
        inputs = [berth.TensorSpec("x", "FP32", [-1, 2])]
        outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
        platform = "custom_scaler"

        def load(self):
            self.factor = np.float32(self.context.parameters["factor"])
            self.folder = self.context.path

        def preprocess(self, inputs):
            return {"x": inputs["x"] + OFFSET}

        def predict(self, inputs, parameters):
            if (inputs["x"] < 0).any():
                raise berth.InvalidInput("x must be >= -1")
            return {"y": inputs["x"] * self.factor * parameters.get("sign", 1)}

        def postprocess(self, outputs):
            return {**outputs, "instance": np.array([self.context.instance])}
    """
)


def test_python_model(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("OFFSET = 1\n")
    (tmp_path / "scaler.py").write_text(CUSTOM)
    rt = load("python", tmp_path / "scaler.py", parameters={"factor": 2}, instance=3)
    assert rt.platform == "custom_scaler"
    assert spec(rt) == (
        [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    )
    x = np.array([[0, 1], [2, 3]], dtype=np.float32)
    out = rt.predict(wire({"x": x}), {"sign": -1})
    np.testing.assert_array_equal(out["y"], (x + 1) * -2)
    np.testing.assert_array_equal(out["instance"], [3])
    with pytest.raises(InvalidInput, match=">= -1"):
        rt.predict({"x": np.full((1, 2), -5, np.float32)})
    assert rt.model.folder == tmp_path  # type: ignore[attr-defined]


def test_python_model_folder_and_class_selection(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "import berth, numpy as np\n"
        "class A(berth.Model):\n"
        "    def predict(self, inputs):\n        return {'a': np.ones(1)}\n"
        "class B(berth.Model):\n"
        "    def predict(self, inputs):\n        return {'b': np.zeros(1)}\n"
    )
    with pytest.raises(ConfigError, match=r"several berth.Model subclasses \(A, B\)"):
        load("python", tmp_path)
    rt = load("python", tmp_path, **{"class": "B"})
    assert rt.platform == "berth_python"
    assert rt.signature() == ([], [])
    assert list(rt.predict({})) == ["b"]
    with pytest.raises(ConfigError, match="no class 'C'.*A, B"):
        load("python", tmp_path, **{"class": "C"})


def test_python_file_without_model(tmp_path: Path) -> None:
    (tmp_path / "empty_model.py").write_text("X = 1\n")
    with pytest.raises(ConfigError, match="defines no berth.Model subclass"):
        load("python", tmp_path / "empty_model.py")


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize(
    ("runtime", "module", "extra"),
    [("xgboost", "xgboost", "xgboost"), ("lightgbm", "lightgbm", "lightgbm"),
     ("onnx", "onnxruntime", "onnx"), ("sklearn", "joblib", "sklearn")],
)  # fmt: skip
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, runtime: str, module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=rf"pip install 'berth\[{extra}\]'") as info:
        get_runtime(runtime)
    assert info.value.extra == extra


def test_missing_scikit_learn_fails_only_files_berths_reader_does_not_know(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    tree = DecisionTreeClassifier(random_state=0).fit(x, y)
    joblib.dump(tree, tmp_path / "tree.joblib")
    joblib.dump(SVC().fit(x, y), tmp_path / "svc.joblib")
    expected = tree.predict(x)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    rt = load("sklearn", tmp_path / "tree.joblib")
    assert np.array_equal(rt.predict({"input": x})["predict"], expected)
    with pytest.raises(MissingExtraError, match=r"pip install 'berth\[sklearn\]'") as info:
        load("sklearn", tmp_path / "svc.joblib")
    assert info.value.extra == "sklearn" and "svc.joblib" in str(info.value)


def test_missing_extra_message() -> None:
    assert str(MissingExtraError("XGBoost", "xgboost")) == (
        "serving XGBoost models needs the xgboost extra: pip install 'berth[xgboost]'"
    )


def test_unknown_runtime() -> None:
    with pytest.raises(ConfigError, match="unknown runtime 'torch'"):
        get_runtime("torch")
