"""Key spellings: component prefixes and the CLIP ``text_model.`` fix.

Checkpoint keys are component-prefixed diffusers names (``unet.…``, ``text_encoder.text_model.…``).
transformers >= 5.6 flattened ``CLIPTextModel`` (state-dict keys ``embeddings.…``/``encoder.…`` with
no ``text_model.`` prefix); cu always *writes* the ``text_model.`` spelling and *reads* both.
"""

from __future__ import annotations

import re

COMPONENTS = ("unet", "text_encoder", "text_encoder_2", "vae")
_TEXT = ("text_encoder", "text_encoder_2")
_CLIP_ROOTS = ("embeddings.", "encoder.", "final_layer_norm.", "text_projection.")


# The cross-attention key/value weights (the ``kv-xattn`` group; what projection, --preserve and
# the drift leakage act on): one rule for every module.
XATTN_KV = re.compile(r"\.attn2\.to_[kv]\.weight$")


def is_xattn_kv(key: str) -> bool:
    return XATTN_KV.search(key) is not None


def split_key(key: str) -> tuple[str, str]:
    """``"unet.a.b"`` -> ``("unet", "a.b")``; unknown prefixes raise ``KeyError``."""
    comp, _, rest = key.partition(".")
    if comp not in COMPONENTS or not rest:
        raise KeyError(key)
    return comp, rest


def canonical_text_key(name: str) -> str:
    """Module-relative CLIP key -> ``text_model.…`` spelling (idempotent)."""
    if name.startswith(_CLIP_ROOTS):
        return "text_model." + name
    return name


def canonical_key(component: str, name: str) -> str:
    """Component + module-relative key -> canonical checkpoint key."""
    if component in _TEXT:
        name = canonical_text_key(name)
    return f"{component}.{name}"


def module_key(name: str, module_keys: set[str]) -> str:
    """Map a canonical module-relative key onto the spelling a loaded module uses."""
    if name in module_keys:
        return name
    if name.startswith("text_model.") and name[len("text_model."):] in module_keys:
        return name[len("text_model."):]
    if "text_model." + name in module_keys:
        return "text_model." + name
    return name
