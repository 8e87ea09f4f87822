"""Berth: the three benchmark models as berth.Model classes.

Served by `berth serve --config <app.yaml>` (bench/driver.py writes the app
config with max_batch_size, max_queue_delay_us and instances). The ONNX
models of W1N/W2N need no class: the app config names the graph with
`runtime: onnx` and `backend: native` (or `python`, the "berth_py" row).
"""

import os
import sys

import berth

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
import common  # noqa: E402


class Identity(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 16])]
    outputs = [berth.TensorSpec("y", "FP32", [-1, 16])]

    def load(self):
        self.m = common.Identity()

    def predict(self, inputs):
        return {"y": self.m(inputs["x"])}


class Tabular(berth.Model):
    inputs = [berth.TensorSpec("x", "FP32", [-1, 32])]
    outputs = [berth.TensorSpec("proba", "FP32", [-1, 2])]

    def load(self):
        self.m = common.Tabular()

    def predict(self, inputs):
        return {"proba": self.m(inputs["x"])}


class Embed(berth.Model):
    inputs = [berth.TensorSpec("text", "BYTES", [-1, 1])]
    outputs = [berth.TensorSpec("embedding", "FP32", [-1, 384])]

    def load(self):
        self.m = common.Embed()

    def predict(self, inputs):
        return {"embedding": self.m(common.texts_of(inputs["text"]))}
