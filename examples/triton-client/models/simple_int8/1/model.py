"""Stand-in for Triton's `simple_int8`: `simple` on INT8 tensors."""

import berth


class SimpleInt8(berth.Model):
    inputs = [
        berth.TensorSpec("INPUT0", "INT8", [-1, 16]),
        berth.TensorSpec("INPUT1", "INT8", [-1, 16]),
    ]
    outputs = [
        berth.TensorSpec("OUTPUT0", "INT8", [-1, 16]),
        berth.TensorSpec("OUTPUT1", "INT8", [-1, 16]),
    ]

    def predict(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
