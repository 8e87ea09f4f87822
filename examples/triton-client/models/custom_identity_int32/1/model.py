"""Stand-in for Triton's `custom_identity_int32`: OUTPUT0 is INPUT0."""

import berth


class CustomIdentityInt32(berth.Model):
    inputs = [berth.TensorSpec("INPUT0", "INT32", [-1, -1])]
    outputs = [berth.TensorSpec("OUTPUT0", "INT32", [-1, -1])]

    def predict(self, inputs):
        return {"OUTPUT0": inputs["INPUT0"]}
