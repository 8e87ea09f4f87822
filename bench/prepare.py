"""Makes what every workload needs, deterministically, into bench/work/:

- tabular.joblib: a scikit-learn MLPClassifier (32 features -> 64 -> 64 -> 2
  classes) trained on 20,000 generated rows (W2);
- tabular.onnx: that model exported with skl2onnx, input ``x`` FP32 [-1, 32],
  one output ``proba`` FP32 [-1, 2] (W2N); identity.onnx: a one-node graph,
  ``x`` FP32 [-1, 16] -> ``y`` (W1N);
- texts: short (about 10 words) and long (about 200 words, truncated by the
  tokenizer at 256 tokens) English-like texts from a fixed word list (W3);
- bodies/<protocol>-<case>.json: one request body per protocol and case, the
  same numbers for every server (one row, or one text, per request).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
WORDS = (
    "the of and to in is was for on that with as by at from his her an which be this are "
    "had not but they have were their one all been has more when who will would there "
    "model server request latency batch queue worker engine tensor protocol machine data "
    "river mountain city music history science language garden winter summer market "
    "quickly slowly carefully bright quiet ancient modern simple complex measure build "
    "travel write read learn teach open close begin finish answer question people house"
).split()


def train_tabular(path: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")  # ConvergenceWarning: a fixed 60 epochs is the point
    from sklearn.datasets import make_classification
    from sklearn.neural_network import MLPClassifier

    X, y = make_classification(n_samples=20000, n_features=32, n_informative=16,
                               n_redundant=8, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(64, 64), max_iter=60, random_state=0,
                        tol=0.0, n_iter_no_change=1000)
    clf.fit(X.astype(np.float32), y)
    # The fitted random generator is only used by fit(); dropping it keeps the
    # pickle loadable by NumPy 1.x as well as 2.x (PyTriton's venv has 1.26).
    clf._random_state = None
    import joblib

    joblib.dump(clf, path)
    print(f">> [prepare] tabular model: train accuracy {clf.score(X, y):.3f} -> {path}")


def export_tabular(model: Path, path: Path) -> None:
    """The W2 model as an ONNX graph with one output, ``proba``: skl2onnx also
    emits the predicted label, which is cut off here (with the nodes only it
    needs) so that every server returns the probabilities W2 returns."""
    import joblib
    import onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    clf = joblib.load(model)
    onx = to_onnx(clf, initial_types=[("x", FloatTensorType([None, 32]))],
                  options={id(clf): {"zipmap": False}}, target_opset=15)
    g = onx.graph
    (prob,) = [o for o in g.output if o.name == "probabilities"]
    need, keep = {prob.name}, []
    for node in reversed(list(g.node)):  # nodes are in topological order
        if need & set(node.output):
            keep.append(node)
            need |= set(node.input)
    inits = [i for i in g.initializer if i.name in need]
    for node in keep:
        node.output[:] = ["proba" if o == prob.name else o for o in node.output]
    prob.name = "proba"
    del g.node[:]
    g.node.extend(reversed(keep))
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.output[:]
    g.output.append(prob)
    onnx.checker.check_model(onx)
    path.write_bytes(onx.SerializeToString())
    print(f">> [prepare] tabular model as ONNX ({len(keep)} nodes) -> {path}")


def export_identity(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 16])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    onx = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    onx.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(onx)
    path.write_bytes(onx.SerializeToString())


def text(rng: random.Random, n: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def main() -> None:
    (WORK / "bodies").mkdir(parents=True, exist_ok=True)
    model = WORK / "tabular.joblib"
    if not model.exists():
        train_tabular(model)
    onnx_model = WORK / "tabular.onnx"
    if not onnx_model.exists() or onnx_model.stat().st_mtime < model.stat().st_mtime:
        export_tabular(model, onnx_model)
    if not (WORK / "identity.onnx").exists():
        export_identity(WORK / "identity.onnx")
    rng = random.Random(42)
    short, long_ = text(rng, 10), text(rng, 200)
    rows = {
        "identity": np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32),
        "tabular": np.random.default_rng(2).standard_normal((1, 32)).astype(np.float32),
    }
    cases = {}
    for case, x in rows.items():
        data = [float(v) for v in x.reshape(-1)]
        cases[case] = (
            {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": data}]},
            {"x": x.tolist()},
        )
    for case, t in (("short", short), ("long", long_)):
        cases[case] = (
            {"inputs": [{"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": [t]}]},
            {"text": [t]},
        )
    for case, (oip, plain) in cases.items():
        (WORK / "bodies" / f"oip-{case}.json").write_text(json.dumps(oip, separators=(",", ":")))
        (WORK / "bodies" / f"json-{case}.json").write_text(json.dumps(plain, separators=(",", ":")))
    (WORK / "texts.json").write_text(json.dumps({"short": short, "long": long_}))
    print(f">> [prepare] request bodies in {WORK / 'bodies'}")


if __name__ == "__main__":
    sys.exit(main())
