"""Image classifiers for evaluation, as a registry (method-notes §10.1).

Every classifier maps uint8 images [N, H, W, 3] to class indices over its ``classes`` list.

* ``minicanvas`` — the built-in MiniCanvas CNNs (object, style), shipped as safetensors.
* ``unlearncanvas:DIR`` — UnlearnCanvas ViT-L/16 checkpoints (``DIR/style50.pth`` = style,
  ``DIR/style50_cls.pth`` = object): timm ``vit_large_patch16_224`` built with pretrained weights
  **off**, head ``Linear(1024, C)``, ``torch.load(weights_only=True)["model_state_dict"]`` loaded
  strictly; Resize(224), Normalize(0.5, 0.5); argmax over all classes.
* ``clip:MODEL:WEIGHTS`` — zero-shot open_clip with local weights (never downloaded): classes are
  scored by cosine similarity to "an image in {c} style" / "an image of {c}".

No loader ever reaches the network: a Hub id (``hf-hub:…``, a URL, or an ``org/name`` that is not a
local path) is refused, and so is an open_clip model config that needs the Hub (a Hugging Face text
tower or tokenizer, ``hf_model_name``/``hf_tokenizer_name``, or pretrained timm vision weights).
"""

from __future__ import annotations

import os
import re
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


_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "hf://", "http://", "https://", "s3://", "gs://")


def refuse_hub(arg: str | None, what: str) -> None:
    """UsageError (exit 2) when ``arg`` names something to download rather than a local path."""
    if not arg:
        return
    if arg.lower().startswith(_HUB_PREFIXES) or (
            re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", arg) and not os.path.exists(arg)):
        raise UsageError(f"{what} {arg!r} looks like a Hub id or URL; cu never downloads: give a "
                         "local path")


def _minicanvas(arg: str | None, domain: str, classes: list[str]) -> Classifier:
    if arg:
        refuse_hub(arg, "--classifier minicanvas:")
        raise UsageError("--classifier minicanvas takes no argument (its weights are built in)")
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
    refuse_hub(arg, "--classifier unlearncanvas:")
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
    model_name, weights = arg.rsplit(":", 1)
    refuse_hub(model_name, "--classifier clip: model")
    refuse_hub(weights, "--classifier clip: weights")
    import open_clip

    _check_offline_clip_config(open_clip, model_name)
    if not os.path.exists(weights):
        raise CuError(f"CLIP weights not found: {weights} (cu never downloads)")

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


def _check_offline_clip_config(open_clip, model_name: str) -> None:
    """Refuse an open_clip config that would fetch from the Hub (HF text tower, timm weights)."""
    try:
        cfg = open_clip.get_model_config(model_name)
    except (OSError, ValueError) as e:
        raise CuError(f"--classifier clip: cannot read the config of {model_name!r} "
                      f"({getattr(e, 'strerror', None) or e})")
    if cfg is None:
        raise UsageError(f"--classifier clip: unknown open_clip model {model_name!r} (a built-in "
                         "name such as ViT-B-32, or local-dir:DIR)")
    text, vision = cfg.get("text_cfg") or {}, cfg.get("vision_cfg") or {}
    hub = [k for k in ("hf_model_name", "hf_tokenizer_name") if text.get(k)]
    if vision.get("timm_model_name") and vision.get("timm_model_pretrained"):
        hub.append("timm_model_pretrained")
    if hub:
        raise UsageError(f"--classifier clip: model {model_name!r} needs files from the Hugging "
                         f"Face Hub ({', '.join(hub)}); cu never downloads: use an open_clip model "
                         "with a built-in text tower")


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
