"""The text pipeline's Python steps: a tokenizer before the classifier and a
post-processor after it (docs/pipelines.md).

Each function takes a dict of NumPy arrays (one batch: BYTES tensors are
object arrays of ``bytes``) and returns a dict of arrays. Berth runs each in
its own worker processes, batched like any model. The optional ``inputs`` and
``outputs`` attributes declare a function's signature, as a berth.Model's
class attributes do: the engine then checks what reaches the step, and the
pipeline's metadata lists its outputs.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

import berth

#: Width of the hashed bag-of-words vector the classifier reads.
FEATURES = 256
LABELS = np.array([b"negative", b"positive"], dtype=object)

_WORD = re.compile(r"[a-z']+")


def featurize(texts: list[str]) -> np.ndarray:
    """Hashed bag of words, L2-normalised: one row per text."""
    rows = np.zeros((len(texts), FEATURES), dtype=np.float64)
    for i, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            rows[i, zlib.crc32(word.encode()) % FEATURES] += 1.0
        norm = np.linalg.norm(rows[i])
        if norm > 0:
            rows[i] /= norm
    return rows


def tokenize(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """text (BYTES [n]) -> input (FP64 [n, FEATURES]), the classifier's input."""
    texts = [t.decode("utf-8", "replace") for t in inputs["text"].reshape(-1)]
    return {"input": featurize(texts)}


tokenize.inputs = [berth.TensorSpec("text", "BYTES", [-1])]
tokenize.outputs = [berth.TensorSpec("input", "FP64", [-1, FEATURES])]


def label(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The classifier's predict_proba (FP64 [n, 2]) -> label (BYTES [n]) and
    score (FP64 [n], the probability of the label)."""
    proba = inputs["predict_proba"]
    best = proba.argmax(axis=1)
    return {"label": LABELS[best], "score": proba[np.arange(len(best)), best]}


label.inputs = [berth.TensorSpec("predict_proba", "FP64", [-1, 2])]
label.outputs = [berth.TensorSpec("label", "BYTES", [-1]), berth.TensorSpec("score", "FP64", [-1])]
