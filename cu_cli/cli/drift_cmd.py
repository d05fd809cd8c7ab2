"""``cu drift CKPT...``: parameter drift of each state from the base and from its parent."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.output import (AllowMismatchOpt, BaseConfigOpt, BaseOpt, DebugOpt, ForceOpt,
                               JsonOpt, check_outputs, finite, handle_errors, print_json,
                               print_table, warn)


@handle_errors
def drift_command(
    states: Annotated[list[str], typer.Argument(help="cu checkpoints, in chain order.")],
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    per_layer: Annotated[int, typer.Option("--per-layer", help="Rows of the per-layer table "
                                           "(largest ‖Δ‖ first); 0 hides it.", min=0)] = 10,
    tol: Annotated[float, typer.Option(
        "--tol", help="|Δ| above which an entry counts as changed (frac_changed).", min=0.0,
        callback=finite)] = 0.0,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a PNG of drift along "
                                                "the chain.")] = None,
    basis: Annotated[Optional[str], typer.Option(
        "--basis", help="Projection basis from `cu project-basis` (same base): report each state's "
        "leakage ‖ΔW·C‖_F/(‖ΔW‖_F‖C‖_F) of its step update on the attn2 K/V weights.")] = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    check_outputs({"--plot": plot}, force, inputs=[*states, basis, base, base_config])
    from cu_cli.drift.compute import DriftRequest, plot_drift, run_drift
    from cu_cli.models.base import base_for_states

    b = base_for_states(states, base, base_config)
    result = run_drift(DriftRequest(paths=states, base=b, top=per_layer, tol=tol,
                                    allow_base_mismatch=allow_base_mismatch, basis=basis))
    for w in result["warnings"]:
        warn(w)
    if plot:
        plot_drift(result, plot)
    if json_out:
        print_json(result, "drift")
        return
    headers = ["#", "state", "l2", "l1", "l2_rel", "l2_vs_parent", "frac_changed"]
    if basis:
        headers += ["leak_mean", "leak_max", "leak_vs"]
    rows = []
    for i, s in enumerate(result["states"]):
        row = [i + 1, s["path"], s["l2"], s["l1"], s["l2_rel"], s["l2_vs_parent"],
               s["frac_changed"]]
        if basis:
            lk = s["leakage"]
            row += [lk["mean"], lk["max"], lk["against"]]
        rows.append(row + [", ".join(s["erased"]) or "-"])
    print_table(headers + ["erased"], rows)
    if per_layer:
        for i, s in enumerate(result["states"]):
            print_table(["key", "l2", "l2_rel", "block"],
                        [[r["key"], r["l2"], r["l2_rel"], r["block"]] for r in s["layers"]],
                        title=f"\nstate {i + 1}: top {len(s['layers'])} layers by ‖Δ‖₂")


drift_command.__doc__ = (
    "Parameter drift of each state: ‖θ−θ_base‖₂, ‖θ−θ_base‖₁, relative ‖θ−θ_base‖₂/‖θ_base‖₂ and "
    "‖θ−θ_parent‖₂, over K = the union of the keys stored in the given files (a key a file lacks "
    "equals the base), streamed one key at a time. With --basis: the projection leakage of each "
    "step update on the attn2 K/V weights (vs its parent, or vs the base for a first erase or an "
    "unknown parent).\n\n" + EXIT_CODES_HELP)
