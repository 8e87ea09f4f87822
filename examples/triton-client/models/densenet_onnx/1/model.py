"""Stand-in for Triton's `densenet_onnx` image classifier (same tensor
names and shapes, not a trained network): data_0 FP32 [3, 224, 224] ->
fc6_1 FP32 [1000, 1, 1], scores from a fixed projection of the image's
channel means."""

import numpy as np

import berth

CLASSES = 1000


class DensenetStandIn(berth.Model):
    inputs = [berth.TensorSpec("data_0", "FP32", [3, 224, 224])]
    outputs = [berth.TensorSpec("fc6_1", "FP32", [CLASSES, 1, 1])]

    def load(self):
        self.weights = np.random.default_rng(0).standard_normal((CLASSES, 3)).astype(np.float32)

    def predict(self, inputs):
        means = inputs["data_0"].reshape(3, -1).mean(axis=1)
        scores = self.weights @ np.nan_to_num(means)
        return {"fc6_1": scores.reshape(CLASSES, 1, 1).astype(np.float32)}
