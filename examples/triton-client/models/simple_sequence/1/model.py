"""Stand-in for Triton's `simple_sequence` (a stateful model with
sequence batching): INPUT INT32 [-1, 1] -> OUTPUT INT32 [-1, 1].

What Triton's sequence examples check of it: the first request of a
sequence answers its input plus one, every later request its input."""

import numpy as np

import berth


class SimpleSequence(berth.Model):
    inputs = [berth.TensorSpec("INPUT", "INT32", [-1, 1])]
    outputs = [berth.TensorSpec("OUTPUT", "INT32", [-1, 1])]

    def predict(self, inputs, sequences=None):
        x = inputs["INPUT"]
        out = np.array(x, dtype=np.int32, copy=True)
        for seq in sequences or []:
            if seq.start:
                out[seq.rows] += 1
        return {"OUTPUT": out}
