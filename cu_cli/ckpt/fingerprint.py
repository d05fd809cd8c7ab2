"""Base identity: architecture hash and weight fingerprint (conventions.md §2).

* ``arch`` = ``sha256:`` of the sorted ``(canonical key, shape)`` list of the base components.
* ``fingerprint`` = ``sha256:`` over sorted ``(canonical key, dtype, shape, bytes)``: independent of
  file layout (folder or single file) and of tensor order; computed from any mapping of canonical
  keys to tensors (loaded lazily one at a time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable


def arch_hash(shapes: dict[str, tuple[int, ...]]) -> str:
    h = hashlib.sha256()
    for k in sorted(shapes):
        h.update(f"{k}:{tuple(int(d) for d in shapes[k])};".encode())
    return "sha256:" + h.hexdigest()


def tensor_bytes(t) -> bytes:
    import torch

    t = t.detach().to("cpu").contiguous()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def weight_fingerprint(keys: Iterable[str], get: Callable[[str], object]) -> str:
    """Hash tensors fetched one at a time by ``get(key)`` in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(keys):
        t = get(k)
        h.update(f"{k}|{str(t.dtype).replace('torch.', '')}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    return "sha256:" + h.hexdigest()
