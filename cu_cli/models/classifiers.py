"""Image classifiers for evaluation, as a registry (method-notes §10.1).

Every classifier maps uint8 images [N, H, W, 3] to class indices over its ``classes`` list.

* ``minicanvas`` — the built-in MiniCanvas CNNs (object, style), shipped as safetensors.
* ``unlearncanvas:DIR`` — UnlearnCanvas ViT-L/16 checkpoints (``DIR/style50.pth`` = style,
  ``DIR/style50_cls.pth`` = object): timm ``vit_large_patch16_224`` built with pretrained weights
  **off**, head ``Linear(1024, C)``, ``torch.load(weights_only=True)["model_state_dict"]`` loaded
  strictly; Resize(224), Normalize(0.5, 0.5); argmax over all classes.
* ``clip:MODEL:WEIGHTS`` — zero-shot open_clip with local weights (never downloaded): classes are
  scored by cosine similarity to "an image in {c} style" / "an image of {c}".
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from cu_cli._util.errors import CuError, UsageError


@dataclass
class Classifier:
    name: str
    classes: list[str]
    fn: object  # callable: float tensor [N,3,H,W] in [0,1] -> logits [N, C]
    size: int | None = None  # input resolution the model expects
    batch: int = 256
    device: str = "cpu"

    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), self.batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + self.batch]))
            x = x.permute(0, 3, 1, 2).float().to(self.device) / 255.0
            if self.size and x.shape[-1] != self.size:
                x = torch.nn.functional.interpolate(x, size=(self.size, self.size),
                                                    mode="bilinear", antialias=True,
                                                    align_corners=False)
            out.append(self.fn(x).argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def _minicanvas(arg: str | None, domain: str, classes: list[str]) -> Classifier:
    from cu_cli.models.base import assets_dir
    from cu_cli.models.classifier import load_classifier

    path = os.path.join(assets_dir(), "minicanvas", f"{domain}_classifier.safetensors")
    if not os.path.exists(path):
        raise CuError(f"MiniCanvas {domain} classifier missing ({path})")
    model, own = load_classifier(path)
    if own != list(classes):
        raise CuError(f"MiniCanvas {domain} classifier classes do not match the protocol")
    return Classifier(f"minicanvas-{domain}", own, model, size=32)


def _unlearncanvas(arg: str | None, domain: str, classes: list[str]) -> Classifier:
    if not arg:
        raise UsageError("--classifier unlearncanvas:DIR needs the folder with style50.pth and "
                         "style50_cls.pth")
    path = os.path.join(arg, "style50.pth" if domain == "style" else "style50_cls.pth")
    if not os.path.exists(path):
        raise CuError(f"UnlearnCanvas classifier not found: {path}")
    try:
        import timm
    except ImportError:
        raise CuError("the UnlearnCanvas classifier needs timm (pip install timm)")
    model = timm.create_model("vit_large_patch16_224", pretrained=False, num_classes=len(classes))
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model_state_dict", state)
    model.load_state_dict(state, strict=True)
    model.eval()
    return Classifier(f"unlearncanvas-{domain}", list(classes),
                      lambda x: model((x - 0.5) / 0.5), size=224, batch=32)


def _clip(arg: str | None, domain: str, classes: list[str]) -> Classifier:
    if not arg or ":" not in arg:
        raise UsageError("--classifier clip:MODEL:WEIGHTS (a local open_clip weights file)")
    model_name, weights = arg.split(":", 1)
    if not os.path.exists(weights):
        raise CuError(f"CLIP weights not found: {weights} (cu never downloads)")
    import open_clip

    model, _, _ = open_clip.create_model_and_transforms(model_name, pretrained=weights)
    tok = open_clip.get_tokenizer(model_name)
    model.eval()
    texts = [f"an image in {c.replace('_', ' ')} style" if domain == "style"
             else f"an image of {c.replace('_', ' ')}" for c in classes]
    with torch.no_grad():
        t = model.encode_text(tok(texts))
        t = t / t.norm(dim=-1, keepdim=True)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)

    def fn(x):
        v = model.encode_image((x - mean.to(x.device)) / std.to(x.device))
        return (v / v.norm(dim=-1, keepdim=True)) @ t.T.to(x.device)

    return Classifier(f"clip-{domain}", list(classes), fn, size=size, batch=32)


CLASSIFIERS: dict[str, dict] = {
    "minicanvas": {"doc": "built-in MiniCanvas CNNs", "factory": _minicanvas, "url": None},
    "unlearncanvas": {"doc": "UnlearnCanvas ViT-L/16 (style50.pth / style50_cls.pth)",
                      "factory": _unlearncanvas, "url": "https://arxiv.org/abs/2402.11846"},
    "clip": {"doc": "zero-shot open_clip with local weights", "factory": _clip,
             "url": "https://arxiv.org/abs/2103.00020"},
}


def load_image_classifier(spec: str, domain: str, classes: list[str],
                          device: str = "cpu") -> Classifier:
    """``spec`` = NAME or NAME:ARG (see the registry); modules are moved to ``device``."""
    name, _, arg = spec.partition(":")
    if name not in CLASSIFIERS:
        raise UsageError(f"--classifier {spec!r}: choose one of {', '.join(CLASSIFIERS)}")
    clf = CLASSIFIERS[name]["factory"](arg or None, domain, list(classes))
    for obj in _modules(clf.fn):
        obj.to(device)
    clf.device = device
    return clf


def _modules(fn) -> list:
    """nn.Modules a classifier function uses (the function itself, or its closure)."""
    if isinstance(fn, torch.nn.Module):
        return [fn]
    cells = getattr(fn, "__closure__", None) or ()
    found = []
    for c in cells:
        v = c.cell_contents
        if isinstance(v, torch.nn.Module):
            found.append(v)
    return found
