"""The objective interface: what an unlearning objective declares and implements.

An objective declares its ``kind`` (``iterative``: a loss minimised step by step by the engine;
``closed_form``: a direct solve), what it needs prepared (:class:`Needs`), its own options (an
``Options`` dataclass of :func:`~cu_cli.erase.optfield.opt` fields, merged into the flat
``EraseConfig``) and its reference defaults (``defaults``, the values of its paper's or the
reference's scripts; a world may override them, erase/defaults.py). Modules that define objectives
import torch lazily, so ``cu --help`` can read their options without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Needs:
    """What ``prepare`` must provide before the objective's own ``prepare`` runs."""

    anchor_images: bool = False  # base samples of the anchor prompts (ctx.anchor_images)
    forget_images: bool = False  # base samples of the target prompts (ctx.forget_images)
    frozen_parent: bool = False  # calls ctx.eps_parent (the parent's trainable values kept)
    anchor_concept: bool = True  # an anchor concept is required to build prompt pairs


class Objective:
    """Base class: subclasses set the class attributes and implement :meth:`loss`."""

    name: str = ""
    url: str = ""
    kind: str = "iterative"  # iterative | closed_form
    needs: Needs = Needs()
    Options: type | None = None  # dataclass of this objective's own options
    defaults: dict = {}  # reference defaults of every option it relies on

    @classmethod
    def doc(cls) -> str:
        import sys

        return (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().splitlines()[0]

    @classmethod
    def reference_defaults(cls, cfg) -> dict:
        """Reference defaults for this request (a subclass may depend on ``cfg``)."""
        return dict(cls.defaults)

    @classmethod
    def step_forwards(cls, cfg) -> float:
        """UNet forward-images per step, for the cost estimate (erase/cost.py): by default one
        no-grad reference forward plus a forward and backward (≈ 3) per sample."""
        return 4.0 * cfg.batch

    @classmethod
    def resolve_inputs(cls, cfg, parent=None):
        """Resolve option values that depend on the request's inputs (called by the plan, after
        the defaults): by default none."""
        return cfg

    @classmethod
    def check(cls, cfg, regularizers) -> None:
        """Refuse regularizers or options this objective cannot honour (called by the plan)."""

    def hooks(self, ctx) -> list:
        """Forward hooks installed for the whole request (removed afterwards)."""
        return []

    def prepare(self, ctx) -> None:
        """Load data and caches (after the parent is applied and the group selected)."""

    def before_step(self, ctx, engine, step: int) -> None:
        """Called before each step (EraseDiff's inner phase); nothing by default."""

    def loss(self, ctx, step: int):
        """Iterative objectives: the method loss of one step."""
        raise NotImplementedError

    def solve(self, ctx, regularizers) -> float:
        """Closed-form objectives: set the trainable tensors in place; returns the residual."""
        raise NotImplementedError

    def measured(self) -> dict:
        """What the lineage records about the objective's own computation."""
        return {}
