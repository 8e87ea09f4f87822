"""Stand-in for Triton's `simple_identity`: OUTPUT0 is INPUT0 (BYTES)."""

import berth


class SimpleIdentity(berth.Model):
    inputs = [berth.TensorSpec("INPUT0", "BYTES", [-1, -1])]
    outputs = [berth.TensorSpec("OUTPUT0", "BYTES", [-1, -1])]

    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}
