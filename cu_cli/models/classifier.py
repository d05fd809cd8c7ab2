"""Small CNN image classifiers (MiniCanvas object and style classifiers).

A plain VGG-style network (Simonyan & Zisserman, arXiv 1409.1556) shrunk for 32x32 inputs:
three conv stages (two 3x3 convs + BatchNorm + ReLU each, max-pool between), global average pool,
linear head. Inputs are RGB in [0, 1]; the network normalises them itself, so callers never need to
know its preprocessing. Saved as safetensors with the class list in the header.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class SmallCNN(nn.Module):
    """Conv classifier for small images; ``forward(x in [0,1], NCHW) -> logits``."""

    def __init__(self, n_classes: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, c in enumerate((width, 2 * width, 4 * width)):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                       nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, n_classes)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features((x - 0.5) / 0.5)
        return self.head(h.mean(dim=(2, 3)))


def save_classifier(model: SmallCNN, classes: list[str], path: str) -> None:
    """Write weights plus ``classes`` and ``width`` in the safetensors header."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "cu.kind": "classifier", "classes": json.dumps(classes),
            "width": str(model.width), "arch": "SmallCNN"}
    save_file(state, path, metadata=meta)


def load_classifier(path: str) -> tuple[SmallCNN, list[str]]:
    """Load a classifier saved by :func:`save_classifier` (strict), in eval mode."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    classes = json.loads(meta["classes"])
    model = SmallCNN(len(classes), width=int(meta.get("width", 32)))
    model.load_state_dict(load_file(path), strict=True)
    model.eval()
    return model, classes
