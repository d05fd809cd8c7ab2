"""Trainable parameter groups: exact name rules on diffusers UNet parameters (method-notes §1).

| group      | rule                                                                        |
|------------|-----------------------------------------------------------------------------|
| kv-xattn   | ``\\.attn2\\.to_[kv]\\.weight$`` (ESD ``esd-x-strict``; default)              |
| xattn      | ``\\.attn2\\.(to_q|to_k|to_v|to_out\\.0)\\.(weight|bias)$``: cross-attention only |
| esd-u      | params of ``nn.Linear``/``nn.Conv2d`` modules whose name lacks ``attn2``     |
| full       | every UNet parameter                                                        |

The reference code's ``xattn`` also matched self-attention (``attn1``); ours does not.
Names returned are canonical checkpoint keys (``unet.`` prefix).
"""

from __future__ import annotations

import re

from cu_cli.ckpt.keys import XATTN_KV as _KV
from cu_cli.ckpt.keys import split_key

PARAM_GROUPS: dict[str, dict] = {
    "kv-xattn": {"doc": "cross-attention key/value weights (attn2.to_k/to_v); ESD-x-strict",
                 "url": "https://arxiv.org/abs/2303.07345"},
    "xattn": {"doc": "all cross-attention projections (attn2 to_q/k/v/out.0, weights and biases)",
              "url": "https://arxiv.org/abs/2303.07345"},
    "esd-u": {"doc": "Linear/Conv2d weights and biases outside cross-attention (ESD-u)",
              "url": "https://arxiv.org/abs/2303.07345"},
    "full": {"doc": "every UNet parameter", "url": None},
}
_X = re.compile(r"\.attn2\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$")


def group_names(unet, group: str) -> list[str]:
    """Canonical keys (``unet.…``) of ``group`` in a loaded UNet, in module order."""
    import torch.nn as nn

    if group not in PARAM_GROUPS:
        raise KeyError(group)
    names: list[str] = []
    if group == "esd-u":
        for mname, mod in unet.named_modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)) and "attn2" not in mname:
                names += [f"{mname}.{p}" for p, _ in mod.named_parameters(recurse=False)]
    else:
        for n, _ in unet.named_parameters():
            if group == "full" or (group == "kv-xattn" and _KV.search("." + n)) or \
                    (group == "xattn" and _X.search("." + n)):
                names.append(n)
    return ["unet." + n for n in names]


def group_counts(unet) -> dict[str, dict[str, int]]:
    """Tensor and parameter counts per group (``cu inspect --groups``)."""
    params = dict(unet.named_parameters())
    out = {}
    for g in PARAM_GROUPS:
        names = group_names(unet, g)
        out[g] = {"tensors": len(names), "params": sum(params[split_key(n)[1]].numel() for n in names)}
    return out
