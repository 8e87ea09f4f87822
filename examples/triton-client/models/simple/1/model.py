"""Stand-in for Triton's `simple` example model: two INT32 [-1, 16] inputs,
their sum (OUTPUT0) and difference (OUTPUT1)."""

import berth


class Simple(berth.Model):
    inputs = [
        berth.TensorSpec("INPUT0", "INT32", [-1, 16]),
        berth.TensorSpec("INPUT1", "INT32", [-1, 16]),
    ]
    outputs = [
        berth.TensorSpec("OUTPUT0", "INT32", [-1, 16]),
        berth.TensorSpec("OUTPUT1", "INT32", [-1, 16]),
    ]

    def predict(self, inputs):
        a, b = inputs["INPUT0"], inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}
