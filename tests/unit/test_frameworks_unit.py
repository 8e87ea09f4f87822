"""The deep-learning runtimes without a server: a missing framework is a
MissingExtraError naming the extra, folders and files are detected as the
right runtime, signatures come out right or the error says what to declare,
and the BYTES decoding helpers of pre-processing."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from berth.cli import document_for, parse_args
from berth.decode import images, json_values, texts
from berth.errors import ConfigError, InvalidInput, MissingExtraError, ModelLoadError
from berth.runtimes import get_runtime
from berth.runtimes.detect import bundle_runtime, choose_model_file

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]


# ------------------------------------------------------------ missing extras


@pytest.mark.parametrize(
    ("runtime", "hidden", "extra"),
    [
        ("pytorch", "torch", "torch"),
        ("tensorflow", "tensorflow", "tensorflow"),
        ("transformers", "transformers", "transformers"),
        ("transformers", "torch", "transformers"),
        ("mlflow", "mlflow.pyfunc", "mlflow"),
    ],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, runtime: str, hidden: str, extra: str
) -> None:
    # None in sys.modules makes `import` raise ImportError, as in an
    # environment where the package is not installed.
    monkeypatch.setitem(sys.modules, hidden, None)
    with pytest.raises(MissingExtraError) as info:
        get_runtime(runtime)
    assert info.value.extra == extra
    assert f"pip install 'berth[{extra}]'" in str(info.value)


def test_torch_model_class_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "berth.pytorch", raising=False)
    with pytest.raises(MissingExtraError, match=r"berth\[torch\]"):
        import berth.pytorch  # noqa: F401


def test_images_without_pillow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtraError, match=r"berth\[images\]"):
        images(np.array([b"x"], dtype=object))


# ----------------------------------------------------------------- detection


def touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def models(target: Path) -> list[tuple[str, str, str]]:
    doc = document_for(parse_args(["serve", str(target)]), {})
    return [(m["name"], m["runtime"], Path(m["path"]).name) for m in doc["models"]]


def test_model_files_by_extension(tmp_path: Path) -> None:
    assert models(touch(tmp_path / "net.pt")) == [("net", "pytorch", "net.pt")]
    assert models(touch(tmp_path / "prog.pt2")) == [("prog", "pytorch", "prog.pt2")]
    assert models(touch(tmp_path / "clf.keras")) == [("clf", "tensorflow", "clf.keras")]


def test_savedmodel_folder_file_and_triton_layout(tmp_path: Path) -> None:
    sm = tmp_path / "scorer"
    touch(sm / "saved_model.pb")
    touch(sm / "variables" / "variables.index")
    assert models(sm) == [("scorer", "tensorflow", "scorer")]
    # Naming the marker file serves its folder, named after the folder.
    assert models(sm / "saved_model.pb") == [("scorer", "tensorflow", "scorer")]
    repo = tmp_path / "repo"
    touch(repo / "tf" / "1" / "model.savedmodel" / "saved_model.pb")
    assert models(repo) == [("tf", "tensorflow", "model.savedmodel")]


def test_mlflow_folder_wins_over_its_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "churn"
    touch(folder / "MLmodel", "flavors: {}\n")
    touch(folder / "model.pkl")
    assert models(folder) == [("churn", "mlflow", "churn")]


def test_hugging_face_folders(tmp_path: Path) -> None:
    hf = tmp_path / "bert"
    touch(hf / "config.json", json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    touch(hf / "model.safetensors")
    touch(hf / "vocab.txt", "[PAD]\n[UNK]\n")
    assert bundle_runtime(hf) == "transformers"
    assert models(hf) == [("bert", "transformers", "bert")]

    st = tmp_path / "st"
    touch(st / "modules.json", json.dumps([{"type": "sentence_transformers.models.Pooling"}]))
    assert bundle_runtime(st) == "transformers"

    # An ONNX export with a Hugging Face config.json but no weights stays ONNX.
    onnx = tmp_path / "exported"
    touch(onnx / "config.json", json.dumps({"model_type": "bert"}))
    touch(onnx / "model.onnx")
    assert bundle_runtime(onnx) is None
    assert models(onnx) == [("exported", "onnx", "model.onnx")]


def test_custom_model_py_wins_over_a_bundle(tmp_path: Path) -> None:
    folder = tmp_path / "wrapped"
    touch(folder / "saved_model.pb")
    touch(folder / "model.py")
    assert choose_model_file(folder)[1] == "python"
    assert choose_model_file(folder, "tensorflow") == (folder, "tensorflow")


# ---------------------------------------------------------------- signatures


@pytest.fixture(scope="module")
def torchscript_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"sum": x + y, "max": torch.maximum(x, y).amax(dim=1)}

    path = tmp_path_factory.mktemp("ts") / "net.pt"
    torch.jit.script(Net()).save(str(path))
    return path


def test_torchscript_without_a_signature_says_what_to_declare(torchscript_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"forward\(\) \(x, y\).*example_input"):
        get_runtime("pytorch").load({"path": str(torchscript_file)})


def test_torchscript_signature_from_an_example_input(torchscript_file: Path) -> None:
    runtime = get_runtime("pytorch")
    example = [{"shape": [2, 3], "datatype": "FP64"}, {"shape": [2, 3], "datatype": "FP64"}]
    runtime.load({"path": str(torchscript_file), "parameters": {"example_input": example}})
    inputs, outputs = runtime.signature()
    assert [s.to_dict() for s in inputs] == [
        {"name": "x", "datatype": "FP64", "shape": [-1, 3]},
        {"name": "y", "datatype": "FP64", "shape": [-1, 3]},
    ]
    assert {s.name: (s.datatype, list(s.shape)) for s in outputs} == {
        "sum": ("FP64", [-1, 3]),
        "max": ("FP64", [-1]),
    }
    x, y = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    out = runtime.predict({"x": x, "y": y})
    np.testing.assert_array_equal(out["sum"], x + y)
    np.testing.assert_array_equal(out["max"], np.maximum(x, y).max(axis=1))
    with pytest.raises(InvalidInput, match="missing input 'y'"):
        runtime.predict({"x": x, "z": y})


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"example_input": {"shape": "2x3"}}, "example_input"),
        ({"example_input": {"shape": [2, 3], "datatype": "BYTES"}}, "preprocess"),
        ({"device": "tpu:0"}, "parameters.device"),
        ({"device": 3}, "parameters.device"),
        ({"threads": 0}, "parameters.threads"),
    ],
)
def test_bad_pytorch_parameters_are_config_errors(
    torchscript_file: Path, parameters: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        get_runtime("pytorch").load({"path": str(torchscript_file), "parameters": parameters})


def test_cuda_requested_without_cuda_is_a_config_error(torchscript_file: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    entry = {"path": str(torchscript_file), "parameters": {"device": "cuda"}}
    with pytest.raises(ConfigError, match="no CUDA device"):
        get_runtime("pytorch").load(entry)


def test_not_torchscript_is_a_load_error_with_the_fix(tmp_path: Path) -> None:
    path = touch(tmp_path / "weights.pt", "not a zip")
    inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}]
    with pytest.raises(ModelLoadError, match="TorchModel"):
        get_runtime("pytorch").load({"path": str(path), "inputs": inputs})


def test_transformers_task_must_be_known(tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhi\n")
    folder = tmp_path / "tiny"
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=8,
        max_position_embeddings=16,
    )
    BertModel(config).save_pretrained(str(folder))
    BertTokenizer.from_pretrained(str(tmp_path / "vocab")).save_pretrained(str(folder))
    with pytest.raises(ConfigError, match="parameters.task"):
        get_runtime("transformers").load({"path": str(folder), "parameters": {"task": "chat"}})
    runtime = get_runtime("transformers")
    runtime.load({"path": str(folder), "parameters": {"task": "sentence-embeddings"}})
    assert runtime.platform == "transformers_sentence_embeddings"
    emb = runtime.predict({"text": np.array([b"hi", b"hi hi hi"], dtype=object)})["embedding"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        runtime.predict({"text": np.array([b"\xff"], dtype=object)})

    # A sentence-transformers pipeline with a module Berth does not run.
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="Dense"):
        get_runtime("transformers").load({"path": str(folder)})


# ------------------------------------------------------------------ decoding


def _png(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def test_images_decode_raw_base64_and_data_urls() -> None:
    png = _png((10, 20, 30))
    b64 = base64.b64encode(png)
    batch = np.array([png, b64, b"data:image/png;base64," + b64], dtype=object)
    pixels = images(batch, size=(4, 5))
    assert pixels.shape == (3, 4, 5, 3) and pixels.dtype == np.uint8
    assert (pixels == np.array([10, 20, 30], dtype=np.uint8)).all()


def test_images_errors_name_the_element() -> None:
    with pytest.raises(InvalidInput, match="element 1 is not an image"):
        images(np.array([_png((1, 2, 3)), b"nope"], dtype=object), name="photo")
    with pytest.raises(InvalidInput, match="different sizes"):
        images(np.array([_png((1, 2, 3), (4, 4)), _png((1, 2, 3), (5, 4))], dtype=object))


def test_texts_and_json_values() -> None:
    assert texts(np.array([b"caf\xc3\xa9", "x"], dtype=object)) == ["café", "x"]
    assert json_values(np.array([b'{"a": 1}', b"[2]"], dtype=object)) == [{"a": 1}, [2]]
    with pytest.raises(InvalidInput, match="element 0 is not JSON"):
        json_values(np.array([b"{"], dtype=object), name="doc")


# ------------------------------------------------------ pre/post-processing

PRE_POST_SOURCE = '''
import numpy as np
import berth
from berth.decode import json_values


class Scaler(berth.Model):
    """JSON documents in, a scaled number and a label out."""

    inputs = [berth.TensorSpec("doc", "BYTES", [-1])]
    outputs = [berth.TensorSpec("value", "FP64", [-1]), berth.TensorSpec("label", "BYTES", [-1])]

    def load(self):
        self.threshold = float(self.context.parameters.get("threshold", 10))

    def preprocess(self, inputs, parameters):
        scale = float(parameters.get("scale", 1))
        return {"x": np.array([d["x"] for d in json_values(inputs["doc"], "doc")]) * scale}

    def predict(self, inputs):
        return {"y": inputs["x"] + 1}

    def postprocess(self, outputs):
        y = outputs["y"]
        labels = np.array([b"high" if v > self.threshold else b"low" for v in y], dtype=object)
        return {"value": y, "label": labels}
'''


def test_preprocess_and_postprocess_around_predict(tmp_path: Path) -> None:
    path = touch(tmp_path / "scaler.py", PRE_POST_SOURCE)
    runtime = get_runtime("python")
    runtime.load({"path": str(path), "parameters": {"threshold": 5}})
    docs = np.array([b'{"x": 1}', b'{"x": 3}'], dtype=object)
    out = runtime.predict({"doc": docs}, {"scale": 2})
    np.testing.assert_array_equal(out["value"], [3.0, 7.0])
    assert out["label"].tolist() == [b"low", b"high"]
    with pytest.raises(InvalidInput, match="'doc' element 0 is not JSON"):
        runtime.predict({"doc": np.array([b"{"], dtype=object)}, {})
