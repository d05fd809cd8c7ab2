"""``cu merge CKPT...``: merge checkpoints of one base into a new checkpoint (method-notes §9)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.output import (BaseConfigOpt, BaseOpt, DebugOpt, ForceOpt, JsonOpt, QuietOpt,
                               check_outputs, finite, handle_errors, print_json, print_paths, warn)


@handle_errors
def merge_command(
    out: Annotated[str, typer.Option("-o", "--out", help="Output .safetensors file.")],
    states: Annotated[Optional[list[str]], typer.Argument(
        help="cu checkpoints to merge (or models: in --config).", show_default=False)] = None,
    method: Annotated[Optional[str], typer.Option(
        "--method", help="uniform (Σwθ/Σw), task-arithmetic (θ₀+λΣwτ) or ties "
                         "(trim, elect sign, disjoint mean; θ₀+λ·merged).")] = None,
    lam: Annotated[Optional[float], typer.Option(
        "--lambda", help="λ scaling the merged task vector (task-arithmetic, ties). "
                         "Default 1.", callback=finite)] = None,
    density: Annotated[Optional[float], typer.Option(
        "--density", help="Fraction in (0, 1] of each task vector's entries kept by magnitude "
                          "(exactly int(density·numel)). Default 1.",
                          callback=finite)] = None,
    topk: Annotated[Optional[float], typer.Option(
        "--topk", help="Same as --density (the reference's --ties_topk); a fraction, never a "
                       "percentage.", callback=finite)] = None,
    weight: Annotated[Optional[list[float]], typer.Option(
        "--weight", help="Weight w_i > 0 of each checkpoint, repeated once per checkpoint in "
                         "order. Default 1.", callback=finite)] = None,
    keys: Annotated[Optional[str], typer.Option(
        "--keys", help="Regex (re.search) of the keys to merge; other keys are left at the base "
                       "(not written). Example: 'attn2\\.to_(k|v)'.")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="merge.yaml: models [{path, weight, density}], method, lambda, "
                         "density, keys, base. Flags override it.")] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
):
    import sys

    from cu_cli._util.errors import UsageError
    from cu_cli.merge.compute import MergeRequest, run_merge
    from cu_cli.merge.config import load_merge_config, resolve
    from cu_cli.models.base import base_for_states

    if density is not None and topk is not None:
        raise UsageError("give --density or --topk, not both")
    check_outputs({"-o/--out": out}, force, inputs=[*(states or []), config, base, base_config])
    cfg = load_merge_config(config) if config else None
    spec, warnings = resolve(cfg, states, method, lam, topk if topk is not None else density,
                             weight, keys)
    if not spec["paths"]:
        raise UsageError("no checkpoints to merge: give CKPT... or models: in --config")
    b = base_for_states(list(spec["paths"]), base or spec["base"], base_config)
    result = run_merge(MergeRequest(
        paths=spec["paths"], base=b, out=out, method=spec["method"], lam=spec["lam"],
        weights=spec["weights"], densities=spec["densities"], keys=spec["keys"], force=force,
        argv=list(sys.argv)))
    if not quiet:
        for w in warnings + result.warnings:
            warn(w)
    if json_out:
        print_json(result.as_json(), "merge")
    else:
        print_paths(result.path)


merge_command.__doc__ = (
    "Merge checkpoints made from one base: uniform average, task arithmetic (Ilharco et al., "
    "arXiv 2212.04089) or TIES (Yadav et al., arXiv 2306.01708), with mergekit semantics. "
    "A key absent from a checkpoint counts as unchanged (τ = 0). Prints the written path.\n\n"
    + EXIT_CODES_HELP)
