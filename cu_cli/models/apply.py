"""Apply a checkpoint's absolute weights to a loaded pipeline, strictly.

``load_state_dict(strict=False)`` per component, then **fail** on any key the module does not have,
any shape mismatch or any unknown component prefix (the ESD/UCE loaders never check, and the
reference silently fell back to the base).
"""

from __future__ import annotations

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.keys import module_key, split_key


def apply_state(pipe, tensors: dict, source: str = "checkpoint") -> None:
    """Overwrite the pipeline's weights with ``tensors`` (canonical keys)."""
    import torch

    by_comp: dict[str, dict] = {}
    for key, value in tensors.items():
        try:
            comp, name = split_key(key)
        except KeyError:
            raise IncompatibleError(f"{source}: unknown component prefix in key {key!r}")
        by_comp.setdefault(comp, {})[name] = value
    for comp, sub in by_comp.items():
        module = getattr(pipe, comp, None)
        if module is None:
            raise IncompatibleError(f"{source}: base has no component {comp!r}")
        own = module.state_dict()
        mapped = {}
        for name, value in sub.items():
            mk = module_key(name, set(own))
            if mk not in own:
                raise IncompatibleError(f"{source}: key {comp}.{name} does not exist in the base")
            if tuple(own[mk].shape) != tuple(value.shape):
                raise IncompatibleError(f"{source}: shape mismatch for {comp}.{name}: "
                                        f"{tuple(value.shape)} vs base {tuple(own[mk].shape)}")
            mapped[mk] = value.to(dtype=own[mk].dtype)
        with torch.no_grad():
            result = module.load_state_dict(mapped, strict=False)
        if result.unexpected_keys:
            raise IncompatibleError(f"{source}: unexpected keys {result.unexpected_keys[:3]}")


def read_state(pipe, keys: list[str]) -> dict:
    """Current values (fp32 clones) of canonical keys from a loaded pipeline."""
    out = {}
    for key in keys:
        comp, name = split_key(key)
        module = getattr(pipe, comp)
        own = module.state_dict()
        out[key] = own[module_key(name, set(own))].detach().float().cpu().clone()
    return out
