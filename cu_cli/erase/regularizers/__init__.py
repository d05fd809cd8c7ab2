"""Regularizers of an erase request as objects, in the order of one step (method-notes §8).

Each regularizer declares its options (an ``Options`` dataclass merged into ``EraseConfig``) and
reference ``defaults``, is built only when its options turn it on (:meth:`Regularizer.enabled`),
and acts through the step's hooks:

- :meth:`~Regularizer.terms` — gradient-path penalty terms added to the method loss (L1/L2-SP,
  the retained-token K/V metric);
- :meth:`~Regularizer.on_grad` — after backward (gradient projection, SelFT re-mask);
- :meth:`~Regularizer.before_opt_step` / :meth:`~Regularizer.after_opt_step` — around the
  optimizer step (the exact ``--project-update``);
- :meth:`~Regularizer.quadratics` — where they exist, the same penalty as a sum of closed-form
  quadratics ``weight · Σ_k tr((W_k − R_k)·M·(W_k − R_k)ᵀ)`` (M = I when ``metric`` is None; one
  per reference R), which a closed-form objective adds to its normal equations instead of taking
  gradient steps;
- :meth:`~Regularizer.measured` — what the lineage records under ``measured``;
- :meth:`~Regularizer.resolve_inputs` — before the plan is keyed: ``auto`` option values that
  depend on the request (its kind, whether it continues a chain), resolved to what runs and is
  recorded.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Quadratic:
    """weight · Σ_{k in keys} tr((W_k − ref_k)·M·(W_k − ref_k)ᵀ); M = I when ``metric`` is None."""

    weight: float
    metric: object  # torch.Tensor [d, d] or None
    ref: dict
    keys: list


class Regularizer:
    name: str = ""
    url: str | None = None
    Options: type | None = None
    defaults: dict = {}

    @classmethod
    def resolve_inputs(cls, cfg, parent=None):
        """The config with this regularizer's ``auto`` values resolved (default: unchanged);
        ``parent``: the parent state's header (None from a base)."""
        return cfg

    @classmethod
    def enabled(cls, cfg, plan) -> bool:
        """Whether the options turn it on (a usage error for combinations that cannot work)."""
        raise NotImplementedError

    def prepare(self, ctx, plan) -> None:
        """After the objective's prepare (the parent applied, the group selected)."""

    def hooks(self) -> list:
        """Handles removed when the request ends."""
        return []

    def terms(self, tr: dict) -> list:
        return []

    def on_grad(self, tr: dict) -> None:
        pass

    def before_opt_step(self, tr: dict) -> None:
        pass

    def after_opt_step(self, tr: dict) -> None:
        pass

    def quadratics(self) -> list[Quadratic]:
        return []

    def measured(self, ctx, trained: dict) -> dict:
        return {}


def _registry():
    from cu_cli.erase.regularizers.kv_metric import KVMetric
    from cu_cli.erase.regularizers.projection import Projection
    from cu_cli.erase.regularizers.selft import SelFT
    from cu_cli.erase.regularizers.sp import SP

    return (SP, SelFT, KVMetric, Projection)  # prepare order (SelFT scores before the K/V moments)


REGULARIZERS = _registry()
