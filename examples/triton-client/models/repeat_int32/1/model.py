"""Stand-in for Triton's `repeat_int32` (a decoupled model): one request
with IN INT32 [n], DELAY UINT32 [n] and WAIT UINT32 [1] gets n responses;
response i carries OUT = IN[i] and IDX = i, sent DELAY[i] milliseconds after
the previous one. WAIT milliseconds pass before the request is finished."""

import time

import numpy as np

import berth


class RepeatInt32(berth.Model):
    inputs = [
        berth.TensorSpec("IN", "INT32", [-1]),
        berth.TensorSpec("DELAY", "UINT32", [-1]),
        berth.TensorSpec("WAIT", "UINT32", [1]),
    ]
    outputs = [
        berth.TensorSpec("OUT", "INT32", [1]),
        berth.TensorSpec("IDX", "UINT32", [1]),
    ]

    def predict(self, inputs):
        values, delays = inputs["IN"], inputs["DELAY"]
        if delays.shape != values.shape:
            raise berth.InvalidInput("DELAY must have one element per element of IN")
        for i, value in enumerate(values):
            time.sleep(int(delays[i]) / 1000.0)
            yield {
                "OUT": np.array([value], dtype=np.int32),
                "IDX": np.array([i], dtype=np.uint32),
            }
        time.sleep(int(inputs["WAIT"][0]) / 1000.0)
