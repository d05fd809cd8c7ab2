"""Devices and precision: ``--device auto|cpu|cuda[:N]|mps`` and ``--dtype fp32|bf16|fp16``.

``resolve_device`` turns the flag into a concrete torch device string (``auto``: cuda when present,
else mps, else cpu) or a one-line usage error (exit 2) for a malformed spelling or a device this
machine does not have. ``cast_frozen`` stores every floating parameter and buffer of the frozen
parts in the compute dtype, except the named trained parameters, which stay fp32 (so do their
gradients and the optimizer state); forwards run under :func:`autocast`. The VAE stays fp32 at
fp16 when its config asks (``force_upcast``: the SDXL VAE overflows in fp16).
"""

from __future__ import annotations

import contextlib
import re

from cu_cli._util.errors import UsageError

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    return dtype


def check_device_spelling(device: str) -> str:
    """Syntax only (no torch import): for the CLI and plans."""
    if not isinstance(device, str) or not _DEVICE.match(device.strip()):
        raise UsageError(f"--device {str(device)[:40]!r}: choose one of {', '.join(DEVICE_CHOICES)}")
    return device.strip()


def resolve_device(device: str) -> str:
    """``auto`` → cuda/mps/cpu; checks that the device exists here (one-line error, exit 2)."""
    import torch

    device = check_device_spelling(device)
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else ("mps" if has_mps else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available on this machine "
                             "(use --device cpu or auto)")
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    if device == "mps" and not has_mps:
        raise UsageError("--device mps: MPS is not available on this machine")
    return device


def torch_dtype(dtype: str):
    import torch

    return getattr(torch, DTYPES[check_dtype(dtype)])


def autocast(device, dtype: str):
    """``torch.autocast`` below fp32, a no-op context at fp32 (bit-identical fp32 paths)."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    import torch

    dev = device.type if hasattr(device, "type") else str(device).split(":")[0]
    return torch.autocast(device_type=dev, dtype=torch_dtype(dtype))


def cast_frozen(pipe, dtype: str, keep: set[str] = frozenset()) -> None:
    """Store the frozen parts of ``pipe`` in ``dtype``; ``keep`` = canonical keys (``unet.…``)
    that stay fp32 (the trained group)."""
    if dtype == "fp32":
        return
    from cu_cli.ckpt.keys import canonical_key

    dt = torch_dtype(dtype)
    for comp in ("text_encoder", "text_encoder_2", "unet", "vae"):
        mod = getattr(pipe, comp, None)
        if mod is None:
            continue
        if comp == "vae" and dtype == "fp16" and getattr(mod.config, "force_upcast", False):
            continue
        for name, t in list(mod.named_parameters()) + list(mod.named_buffers()):
            if t.is_floating_point() and canonical_key(comp, name) not in keep:
                t.data = t.data.to(dt)
    pipe.dtype = dtype
