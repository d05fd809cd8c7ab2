"""A loaded pipeline of one base that states are applied to and restored from.

``with session.state(tensors):`` overwrites the pipeline's weights with a state's absolute tensors
(strictly, models/apply.py) and puts the previous values back on exit, so one loaded pipeline
serves the base and any number of states in turn (``cu eval``), and no caller reloads or copies a
UNet. Grad mode is never switched globally: callers scope it (``torch.enable_grad()``).
"""

from __future__ import annotations

import contextlib

from cu_cli.models.apply import apply_state, read_state


class ModelSession:
    def __init__(self, base, device: str = "cpu", dtype: str = "fp32", keep=None):
        """``dtype``: precision of the frozen parts; ``keep``: canonical keys (or a function of
        the UNet giving them) that stay fp32 — the group an erase trains."""
        self.base = base
        self.pipe = base.load_pipeline(device, dtype, keep)

    def apply(self, tensors: dict, source: str = "checkpoint") -> None:
        """Overwrite weights for good (an erase's parent)."""
        if tensors:
            apply_state(self.pipe, tensors, source=source)

    def values(self, keys: list[str]) -> dict:
        """Current fp32 values of canonical keys."""
        return read_state(self.pipe, keys)

    @contextlib.contextmanager
    def state(self, tensors: dict, source: str = "checkpoint"):
        """Apply ``tensors`` for the block; the previous values come back afterwards."""
        saved = read_state(self.pipe, sorted(tensors)) if tensors else {}
        try:
            self.apply(tensors, source)
            yield self.pipe
        finally:
            if saved:
                apply_state(self.pipe, saved, source="restore")
