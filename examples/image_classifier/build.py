"""Builds the example's model: a tiny convolutional image classifier,
scripted with TorchScript and saved as ``model.pt`` next to this file (or in
the folder given as the first argument), with ``labels.txt``.

The weights are random (seeded): the example shows how Berth serves an
image model with pre- and post-processing, not a trained classifier.

    python examples/image_classifier/build.py [FOLDER]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

LABELS = ["cat", "dog", "bird", "fish"]
#: Height and width the network takes.
SIZE = 32


class TinyCNN(nn.Module):
    """Two convolutions, global average pooling and a linear layer:
    ``[N, 3, 32, 32]`` float pixels -> ``[N, len(LABELS)]`` logits."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(16, classes)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(pixels), 1))


def build(folder: Path) -> Path:
    """Writes ``model.pt`` and ``labels.txt`` into ``folder``; returns the model path."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = TinyCNN(len(LABELS)).eval()
    # Tracing needs no source code at load time and gives the same TorchScript.
    scripted = torch.jit.trace(net, torch.rand(1, 3, SIZE, SIZE))
    path = folder / "model.pt"
    scripted.save(str(path))
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return path


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    print(f"wrote {build(target)}")
