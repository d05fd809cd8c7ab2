"""One function seeds python, numpy and torch (minGPT ``utils.set_seed``)."""

from __future__ import annotations

import random


def seed_everything(seed: int) -> None:
    """Seed every RNG a cu command uses; call once at the start of a command."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from ``seed`` and any labels (e.g. a prompt), independent of order of use."""
    import hashlib

    h = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)
