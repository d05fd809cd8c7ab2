"""``cu sample STATE...``: a labelled grid (or single PNGs) of states and the base."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.output import (AllowMismatchOpt, BaseConfigOpt, BaseOpt, DebugOpt, DeviceOpt,
                               ForceOpt, JsonOpt, QuietOpt, err_console, finite, handle_errors,
                               print_json, print_paths, progress_enabled, warn)


@handle_errors
def sample_command(
    states: Annotated[Optional[list[str]], typer.Argument(
        help="States to sample (rows, in order); none: the base.", show_default=False)] = None,
    prompt: Annotated[Optional[list[str]], typer.Option(
        "--prompt", "-p", help="Prompt (repeat for more columns).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Image k of each prompt starts from "
                                      "torch.Generator().manual_seed(seed + k), as diffusers' "
                                      "generator= does.", min=0)] = 0,
    n: Annotated[int, typer.Option("--n", help="Images (consecutive seeds) per prompt.",
                                   min=1)] = 1,
    steps: Annotated[int, typer.Option("--steps", help="DDIM steps.", min=1)] = 25,
    guidance: Annotated[float, typer.Option("--guidance", help="Classifier-free guidance scale.",
                                            callback=finite)] = 7.5,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    with_base: Annotated[bool, typer.Option("--with-base", help="Add the base as the first "
                                            "row.")] = False,
    out: Annotated[Optional[str], typer.Option("-o", "--out", help="Grid PNG: rows = states, "
                                               "columns = prompts × seeds.")] = None,
    out_dir: Annotated[Optional[str], typer.Option(
        "--out-dir", help="Folder for single PNGs (created if missing) with prompt, seed, "
                          "settings and the state's lineage hash in PNG text chunks.")] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    device: DeviceOpt = "cpu",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli._util.errors import UsageError
    from cu_cli._util.text import clean_concept
    from cu_cli.cli.output import check_outputs
    from cu_cli.sample.run import SampleRequest, planned_outputs, run_sample, validate

    prompts = [clean_concept(p, "--prompt") for p in (prompt or [])]
    req = SampleRequest(prompts=prompts, states=list(states or []), base=base,
                        base_config=base_config, seed=seed, n=n, steps=steps, guidance=guidance,
                        negative=negative, with_base=with_base, out=out, out_dir=out_dir,
                        force=force, allow_base_mismatch=allow_base_mismatch, device=device)
    validate(req)
    inputs = [*req.states, base, base_config]
    if out_dir:
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError(f"--out-dir {out_dir} exists and is not a folder")
        if not os.path.isdir(os.path.dirname(os.path.abspath(out_dir))):
            raise UsageError(f"--out-dir {out_dir}: its parent folder does not exist")
    planned = planned_outputs(req)
    if out_dir and not os.path.isdir(out_dir):
        os.mkdir(out_dir)
    outputs = {"-o/--out": out} if out else {}
    outputs.update({f"--out-dir file {os.path.basename(p)}": p for p in planned if p != out})
    check_outputs(outputs, force, inputs=inputs)
    if progress_enabled(quiet):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                      console=err_console(), transient=True) as bar:
            task = bar.add_task("sample", total=None)
            req.progress = lambda k: bar.advance(task, k)
            result = run_sample(req)
    else:
        result = run_sample(req)
    if not quiet:
        for w in result.warnings:
            warn(w)
    if json_out:
        print_json(result.as_json(), "sample")
    else:
        print_paths(*result.paths)


sample_command.__doc__ = (
    "Sample states (and the base with --with-base) for prompts × seeds with DDIM and "
    "classifier-free guidance: a labelled grid (-o) and/or single PNGs (--out-dir) carrying the "
    "prompt, seed and lineage hash in PNG text chunks. The same prompt, seed, steps and guidance "
    "give the same image as diffusers on a cu export diffusers folder. Prints the paths written."
    "\n\n" + EXIT_CODES_HELP)
