"""L1-SP / L2-SP toward a reference model (method-notes §5; Li et al., arXiv 1802.01483).

L1SP = (1/N)·Σ_k Σ_i |θ_ki − θ^ref_ki|, L2SP = (1/N)·Σ_k Σ_i (θ_ki − θ^ref_ki)² (N trainable
elements; means, no ½); total += λ₁·L1SP + λ₂·L2SP. θ^ref = the parent θₙ₋₁ (captured before the
first step) or, with ``reg_ref: base``, the root base. Closed form: λ₂·L2SP is the quadratic
(λ₂/N)·Σ_k ‖W_k − W_k^ref‖²_F, UCE's λ·W_ref term.
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli.erase.optfield import opt
from cu_cli.erase.regularizers import Quadratic, Regularizer


@dataclass(frozen=True)
class Options:
    l1: float = opt(0.0, "L1-SP weight λ₁ (mean |θ−θref|).", float, ge=0)
    l2: float = opt(0.0, "L2-SP weight λ₂ (mean (θ−θref)²).", float, ge=0)
    reg_ref: str = opt("parent", "SP reference θref: the parent state or the root base.", str,
                       choices=("parent", "base"))


class SP(Regularizer):
    name = "sp"
    url = "https://arxiv.org/abs/1802.01483"
    Options = Options

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        return bool(cfg.l1 or cfg.l2)

    def prepare(self, ctx, plan) -> None:
        cfg = ctx.cfg
        self.l1, self.l2 = cfg.l1, cfg.l2
        ref = ctx.parent_values if cfg.reg_ref == "parent" else ctx.base_values()
        self.ref = {k: v.float().to(ctx.pipe.device) for k, v in ref.items()}

    def terms(self, tr: dict) -> list:
        from cu_cli.ops.penalties import sp_penalties

        l1, l2 = sp_penalties(tr, self.ref)
        return [self.l1 * l1, self.l2 * l2]

    def quadratics(self) -> list[Quadratic]:
        if not self.l2:
            return []
        n = sum(v.numel() for v in self.ref.values())
        return [Quadratic(weight=self.l2 / n, metric=None, ref=self.ref, keys=sorted(self.ref))]
