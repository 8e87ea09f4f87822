"""Stand-in for Triton's `simple_string`: `simple` on BYTES tensors whose
elements are decimal numbers; the answers are decimal numbers too."""

import numpy as np

import berth


def _numbers(array: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.vectorize(lambda v: int(v), otypes=[np.int64])(array)
    except ValueError as err:
        raise berth.InvalidInput(f"{name}: every element must be a decimal integer") from err


def _text(array: np.ndarray) -> np.ndarray:
    return np.vectorize(lambda v: str(v).encode(), otypes=[object])(array)


class SimpleString(berth.Model):
    inputs = [
        berth.TensorSpec("INPUT0", "BYTES", [-1, 16]),
        berth.TensorSpec("INPUT1", "BYTES", [-1, 16]),
    ]
    outputs = [
        berth.TensorSpec("OUTPUT0", "BYTES", [-1, 16]),
        berth.TensorSpec("OUTPUT1", "BYTES", [-1, 16]),
    ]

    def predict(self, inputs):
        a = _numbers(inputs["INPUT0"], "INPUT0")
        b = _numbers(inputs["INPUT1"], "INPUT1")
        return {"OUTPUT0": _text(a + b), "OUTPUT1": _text(a - b)}
