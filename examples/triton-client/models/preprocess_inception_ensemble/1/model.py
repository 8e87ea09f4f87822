"""Stand-in for Triton's `preprocess_inception_ensemble` (not an ensemble,
not a trained network): INPUT BYTES [-1, 1] encoded images ->
OUTPUT FP32 [-1, 1001] scores from a fixed projection of each image's
channel means (decoded with Pillow)."""

import numpy as np

import berth
from berth.decode import images

CLASSES = 1001


class InceptionStandIn(berth.Model):
    inputs = [berth.TensorSpec("INPUT", "BYTES", [-1, 1])]
    outputs = [berth.TensorSpec("OUTPUT", "FP32", [-1, CLASSES])]

    def load(self):
        self.weights = np.random.default_rng(0).standard_normal((CLASSES, 3)).astype(np.float32)

    def predict(self, inputs):
        pixels = images(inputs["INPUT"].reshape(-1), size=(32, 32), mode="RGB", name="INPUT")
        means = pixels.astype(np.float32).reshape(len(pixels), -1, 3).mean(axis=1) / 255.0
        return {"OUTPUT": (means @ self.weights.T).astype(np.float32)}
