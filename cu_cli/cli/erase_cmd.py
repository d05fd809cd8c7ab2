"""``cu erase``: apply one unlearning request; prints the written path.

The options of the request's configuration are generated from their declarations
(erase/options.py, the objectives' and regularizers' ``Options``) and the defaults registry
(erase/defaults.py); the rest can be set with ``--set key=value`` or a YAML ``--config``.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP, UsageError
from cu_cli.cli.config_options import with_config_options
from cu_cli.cli.output import (AllowMismatchOpt, BaseConfigOpt, BaseOpt, DebugOpt, DeviceOpt,
                               DtypeOpt, ForceOpt, QuietOpt, VerboseOpt, check_outputs, err_console,
                               handle_errors,
                               print_paths, progress_enabled, read_lines, setup_logging)
from cu_cli.erase.defaults import describe
from cu_cli.erase.options import SPECS
from cu_cli.world.registry import WORLDS

_PROFILES = {name: w.erase_defaults for name, w in WORLDS.items()}
FLAGS = [n for n, s in SPECS.items() if s.flag and n != "preserve"]  # --preserve: below (FILE)
YAML_EXTRA = {"concepts", "basis", "base", "from", "seed"}


def _erase(
    concept: Annotated[Optional[list[str]], typer.Option(
        "--concept", help="Concept to erase (repeat for a set erased at once).")] = None,
    concepts_file: Annotated[Optional[str], typer.Option(
        "--concepts-file", help="File with one concept per line.")] = None,
    out: Annotated[Optional[str], typer.Option("-o", "--out", help="Output .safetensors.")] = None,
    from_: Annotated[Optional[str], typer.Option(
        "--from", help="Parent state (its base comes from its header); '-' reads a path from "
                       "stdin.")] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    anchor_prompts: Annotated[Optional[str], typer.Option(
        "--anchor-prompts", help="File of anchor captions, one per line.")] = None,
    preserve: Annotated[Optional[str], typer.Option(
        "--preserve", help="Keep these prompts' cross-attention K/V: world (the base's world: its "
                           "other concepts, protocol retain sets held out) | none | FILE of "
                           f"prompts ({describe('preserve', _PROFILES)}).")] = None,
    basis: Annotated[Optional[str], typer.Option(
        "--basis", help="Projection basis from `cu project-basis` (same base).")] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="YAML file with the same keys as the options (flags override).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Any other option as key=value (YAML spelling, e.g. clip=none, "
                      "erasediff_k=3; see docs/cli.md 'cu erase options').")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Seeds python, numpy and torch; recorded (default: config, else 42).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    force: ForceOpt = False,
    allow_base_mismatch: AllowMismatchOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
    config_flags: dict | None = None,
):
    from cu_cli._util.text import clean_concept
    from cu_cli.erase.options import build_config, load_config_file, parse_set
    from cu_cli.erase.run import EraseRequest, run_erase

    setup_logging(quiet, verbose)
    yaml_values = load_config_file(config) if config else {}
    yaml_values.update(parse_set(set_))
    flags = dict(config_flags or {})
    preserve_prompts, preserve_file = None, None
    if preserve is not None and preserve not in ("world", "none"):
        preserve_prompts, preserve_file = read_lines(preserve, concepts=False), preserve
        preserve = "file"
    flags["preserve"] = preserve
    if flags.get("anchor"):
        flags["anchor"] = clean_concept(flags["anchor"], "--anchor")
    cfg, extra = build_config(yaml_values, flags, allowed_extra=YAML_EXTRA,
                              where=f"--config {config}" if config else "--set")
    concepts = [clean_concept(c, "--concept") for c in
                (list(concept or []) or list(extra.get("concepts") or []))]
    if concepts_file:
        concepts += read_lines(concepts_file)
    if not concepts:
        raise UsageError("give --concept (or --concepts-file)")
    if not out:
        raise UsageError("-o/--out is required")
    parent = from_ if from_ is not None else extra.get("from")
    if parent == "-":
        parent = sys.stdin.readline().strip()
        if not parent:
            raise UsageError("--from -: no path on stdin")
    check_outputs({"-o/--out": out}, force, inputs=[
        parent, basis or extra.get("basis"), config, concepts_file, anchor_prompts,
        preserve_file, base or extra.get("base"), base_config])
    req = EraseRequest(
        concepts=concepts, out=out, cfg=cfg, base=base or extra.get("base"), base_config=base_config,
        parent=parent, basis=basis or extra.get("basis"),
        anchor_prompts=read_lines(anchor_prompts, concepts=False) if anchor_prompts else None,
        preserve_prompts=preserve_prompts,
        seed=seed if seed is not None else int(extra.get("seed", 42)),
        device=device, dtype=dtype, force=force, allow_base_mismatch=allow_base_mismatch,
        argv=sys.argv)
    result = _run_with_progress(req, quiet, run_erase)
    if not quiet:
        err_console().print(
            f"erased {', '.join(concepts)}: {result.steps} steps, {result.trained_keys} tensors, "
            f"final loss {result.final_loss:.4f}, {result.wall_seconds:.1f}s", markup=False)
    print_paths(result.path)


def _run_with_progress(req, quiet: bool, run):
    if not progress_enabled(quiet):
        return run(req)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[extra]}"),
                  TimeRemainingColumn(), console=err_console(), transient=True) as bar:
        task = bar.add_task("prepare", total=None, extra="")
        req.progress = lambda i, n, loss: bar.update(task, description="erase", completed=i,
                                                     total=n, extra=f"loss {loss:.4f}")
        req.phase = lambda label, i, n: bar.update(task, description=label, completed=i, total=n)
        return run(req)


erase_command = with_config_options(SPECS, FLAGS, lambda n: describe(n, _PROFILES))(
    handle_errors(_erase))
erase_command.__doc__ = (
    "Erase concept(s) from the base or from a parent state (--from) and write the next state. "
    "Objectives: ConAbl, ESD, EraseDiff (fine-tuning) and UCE (closed form); regularizers: "
    "L1-SP/L2-SP, SelFT, gradient projection (--basis), retained-token K/V penalty (--preserve, "
    "--context-weight).\n\n" + EXIT_CODES_HELP)
