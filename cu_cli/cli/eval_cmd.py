"""``cu eval``: UA / RA-I / RA-C of states on a protocol, retention matrix, pictures, gates."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP, GateError
from cu_cli.cli.output import (AllowMismatchOpt, BaseConfigOpt, BaseOpt, BatchSizeOpt, DebugOpt,
                               DeviceOpt, DtypeOpt, ForceOpt, JsonOpt, QuietOpt, VerboseOpt, check_outputs,
                               err_console, finite, handle_errors,
                               print_json, print_table, progress_enabled, read_lines, setup_logging,
                               warn)


@handle_errors
def eval_command(
    states: Annotated[Optional[list[str]], typer.Argument(
        help="States to evaluate, in chain order (none: the base).")] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    protocol: Annotated[Optional[str], typer.Option(
        "--protocol", help="minicanvas-style | minicanvas-object (-wide: every cross-domain "
                           "concept, 4x the images) | minicanvas-full | unlearncanvas-style | "
                           "unlearncanvas-object (default: from the base and erased concepts).")] = None,
    erased: Annotated[Optional[list[str]], typer.Option(
        "--erased", help="Erased concept(s); default each state's cu.erased.")] = None,
    retain_file: Annotated[Optional[str], typer.Option(
        "--retain-file", help="In-domain retain concepts (one per line) replacing the "
                              "protocol's.")] = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Use the first N protocol seeds.",
                                              min=1)] = None,
    seed_shift: Annotated[int, typer.Option(
        "--seed-shift", help="Add N to every protocol seed: the same grid on seeds the protocol "
                             "never used (a held-out check; 0 = the protocol's).", min=0)] = 0,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Sampler steps.", min=1)] = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", help="CFG scale.",
                                                   callback=finite)] = None,
    classifier: Annotated[Optional[str], typer.Option(
        "--classifier", help="minicanvas | unlearncanvas:DIR | clip:MODEL:WEIGHTS.")] = None,
    prompt_variant: Annotated[str, typer.Option(
        "--prompt-variant", help="benchmark (UnlearnCanvas) | cuig (reference).")] = "benchmark",
    cra_scope: Annotated[str, typer.Option(
        "--cra-scope", help="all (reference) | clean: RA-C without images naming an erased "
                            "concept.")] = "all",
    with_base: Annotated[bool, typer.Option(
        "--with-base", help="Also evaluate the base as the first row.")] = False,
    grid: Annotated[Optional[str], typer.Option("--grid", help="PNG contact sheet: base vs "
                                                "state for erased and retained concepts.")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="PNG of UA/RA-I/RA-C vs "
                                                "request.")] = None,
    similarity: Annotated[bool, typer.Option(
        "--similarity", help="Accuracy drop vs text-embedding similarity to the erased concepts "
                             "(Pearson r).")] = False,
    fail_under: Annotated[Optional[str], typer.Option(
        "--fail-under", help="Gates, e.g. ua=95,ra_i=90: exit 4 when any state is below.")] = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    batch_size: BatchSizeOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli._util.text import clean_concept

    check_outputs({"--grid": grid, "--plot": plot}, force,
                  inputs=[*(states or []), retain_file, base, base_config])
    erased = [clean_concept(c, "--erased") for c in erased] if erased else None
    from cu_cli.evaluate.metrics import check_gates, parse_gates
    from cu_cli.evaluate.report import finish
    from cu_cli.evaluate.run import EvalRequest, run_eval

    setup_logging(quiet, verbose)
    gates = parse_gates(fail_under)
    if cra_scope not in ("all", "clean"):
        from cu_cli._util.errors import UsageError

        raise UsageError("--cra-scope must be all or clean")
    retain = read_lines(retain_file) if retain_file else None
    req = EvalRequest(states=list(states or []), base=base, base_config=base_config,
                      protocol=protocol, erased=list(erased) if erased else None, retain=retain,
                      seeds=seeds, seed_shift=seed_shift,
                      steps=steps, guidance=guidance, classifier=classifier,
                      prompt_variant=prompt_variant, cra_scope=cra_scope,
                      include_base=with_base or similarity, allow_base_mismatch=allow_base_mismatch,
                      device=device, dtype=dtype, batch_size=batch_size, keep_images=bool(grid))
    if progress_enabled(quiet):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err_console(), transient=True) as bar:
            task = bar.add_task("eval", total=None)
            req.progress = lambda n: bar.advance(task, n)
            result = run_eval(req)
    else:
        result = run_eval(req)
    out = finish(result, req, grid=grid, plot=plot, similarity=similarity)
    for w in out["warnings"]:
        warn(w)
    if json_out:
        print_json(out, "eval")
    else:
        _print(out)
    failures = check_gates(out["states"], gates)
    if failures:
        raise GateError("gate failed: " + "; ".join(failures))


def _print(out: dict) -> None:
    rows = []
    for i, s in enumerate(out["states"]):
        m = s["metrics"]
        rows.append([i, s["path"] or "base", ", ".join(s["erased"]) or "-", m["ua"], m["ra_i"],
                     m["ra_c"], s["images"]])
    print_table(["#", "state", "erased", "UA", "RA-I", "RA-C", "images"], rows,
                title=f"{out['protocol']} on {out['base']} ({out['settings']['steps']} steps, "
                      f"CFG {out['settings']['guidance']}, {len(out['settings']['seeds'])} seeds)")
    concepts = out["retention"]["concepts"]
    sys.stdout.write("\n")
    print_table(["#"] + concepts, [[i] + [r.get(c) for c in concepts]
                                   for i, r in enumerate(out["retention"]["rows"])],
                title="retention matrix: accuracy % per concept")
    sim = out.get("similarity")
    if sim:
        r = sim["pearson_r_drop_vs_similarity"]
        sys.stdout.write(f"\nsemantic sensitivity: Pearson r(drop, similarity) = "
                         f"{'n/a' if r is None else f'{r:.3f}'} over {sim['n']} points\n")


eval_command.__doc__ = (
    "Evaluate states on a protocol: UA, RA-I, RA-C with 95% intervals, per-concept accuracies, a "
    "retention matrix over a chain, optional pictures and gates.\n\n" + EXIT_CODES_HELP)
