"""An image classifier served with pre- and post-processing in Python.

Clients send encoded images (JPEG, PNG: ``image`` BYTES ``[-1]``, one image
per row); they get the top label and its probability. In between:

- ``preprocess`` decodes the bytes with Pillow (``berth.decode.images``),
  resizes to 32x32, scales to [0, 1], normalises and lays the batch out as
  ``[N, 3, 32, 32]`` float32;
- ``predict`` (from :class:`berth.pytorch.TorchModel`) runs the TorchScript
  network in ``model.pt`` under ``torch.inference_mode`` on this instance's
  device;
- ``postprocess`` turns logits into ``label`` (BYTES) and ``score`` (FP32).

Build ``model.pt`` first: ``python build.py``; then ``berth serve .``.
"""

from __future__ import annotations

import numpy as np
import torch

import berth
from berth.decode import images
from berth.pytorch import TorchModel, load_torchscript

SIZE = 32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class ImageClassifier(TorchModel):
    inputs = [berth.TensorSpec("image", "BYTES", [-1])]
    outputs = [
        berth.TensorSpec("label", "BYTES", [-1]),
        berth.TensorSpec("score", "FP32", [-1]),
    ]
    #: predict() takes any number of images: the engine may stack requests.
    max_batch_size = 16

    def build(self) -> torch.jit.ScriptModule:
        folder = self.context.path
        self.labels = (folder / "labels.txt").read_text().split()
        return load_torchscript(folder / "model.pt", self.device)

    def preprocess(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = images(inputs["image"], size=(SIZE, SIZE), mode="RGB", name="image")
        scaled = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
        return {"pixels": np.ascontiguousarray(scaled.transpose(0, 3, 1, 2))}

    def postprocess(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = outputs["output__0"]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        best = probs.argmax(axis=1)
        labels = np.array([self.labels[i].encode() for i in best], dtype=object)
        return {"label": labels, "score": probs[np.arange(len(best)), best].astype(np.float32)}
