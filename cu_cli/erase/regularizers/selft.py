"""SelFT — selective fine-tuning: only the globally most important weights train (method-notes §6).

Scores s = |θ ⊙ g| on the parent θₙ₋₁ (erase/selft.py), keeps the global top ⌊k·N⌋ entries over
all trainable tensors jointly and masks gradients inside backward (hooks), before projection and
clipping. Scoring is only defined when the target and anchor prompts differ: ESD without
``--anchor`` scores target = anchor, every importance is 0 and the top-k would be arbitrary, so
that combination is refused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cu_cli._util.errors import UsageError
from cu_cli.erase.optfield import opt
from cu_cli.erase.regularizers import Regularizer


@dataclass(frozen=True)
class Options:
    selft_topk: float | None = opt(None, "SelFT: train only this fraction of weights (global "
                                   "top-k; off when not given).", float, gt=0, le=1, nullable=True)
    selft_scoring: str = opt("trajectory", "SelFT scoring: trajectory (one 50-step path per pair, "
                             "≈9× cheaper) | reference.", str, choices=("trajectory", "reference"))
    selft_timesteps: int | None = opt(None, "SelFT: timesteps scored (evenly spaced subset of the "
                                      "schedule).", int, flag=False, ge=1)
    selft_pairs: int | None = opt(None, "SelFT: (target, anchor) pairs scored per concept.", int,
                                  flag=False, ge=1)
    selft_remask: bool = opt(False, "SelFT: re-apply the mask after projection (cu extension; "
                             "needs --basis).", bool, flag=False)


class SelFT(Regularizer):
    name = "selft"
    url = "https://arxiv.org/abs/2511.07970"
    Options = Options
    defaults = dict(selft_timesteps=50, selft_pairs=1)  # the reference's scoring (method-notes §6)

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        if not cfg.selft_topk:
            if cfg.selft_remask:
                raise UsageError("selft_remask needs --selft-topk")
            return False
        if any(p.target_prompts == p.anchor_prompts for p in plan.pairs):
            raise UsageError("--selft-topk needs an anchor that differs from the target (with "
                             "--method esd pass --anchor): SelFT scores how much each weight "
                             "separates target from anchor, and with none every score is 0")
        return True

    def prepare(self, ctx, plan) -> None:
        from cu_cli.erase.selft import install_masks

        t0 = time.time()
        self.masks, self._hooks = install_masks(ctx, ctx.cfg.selft_topk)
        ctx.selft_masks = self.masks
        self.seconds = time.time() - t0

    def hooks(self) -> list:
        return self._hooks

    def measured(self, ctx, trained: dict) -> dict:
        return {"selft_seconds": round(self.seconds, 3),
                "selft_kept": int(sum(int(m.sum()) for m in self.masks.values()))}
