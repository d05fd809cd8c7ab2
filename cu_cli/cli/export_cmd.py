"""``cu export diffusers|single-file|lora STATE``: a state where people generate images."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.output import (AllowMismatchOpt, BaseConfigOpt, BaseOpt, DebugOpt, ForceOpt,
                               JsonOpt, QuietOpt, finite, handle_errors, print_json, print_paths,
                               print_table_err, warn)

StateArg = Annotated[str, typer.Argument(help="cu checkpoint (.safetensors) to export.",
                                         show_default=False)]
OutFile = Annotated[str, typer.Option("-o", "--out", help="Output .safetensors file.")]

export_app = typer.Typer(
    name="export", no_args_is_help=True, add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Export a state as a diffusers folder, an original-layout single file (AUTOMATIC1111, "
         "ComfyUI, Forge) or a LoRA. Every file carries ModelSpec keys and the state's cu.* "
         "lineage (folders: cu.json).\n\n" + EXIT_CODES_HELP)


def _run(req, quiet: bool):
    from cu_cli.export.run import run_export

    result = run_export(req)
    if not quiet:
        for w in result.warnings:
            warn(w)
    return result


def _finish(result, json_out: bool) -> None:
    if json_out:
        print_json(result.as_json(), "export")
    else:
        print_paths(result.path)


@export_app.command("diffusers")
@handle_errors
def export_diffusers_command(
    state: StateArg,
    out: Annotated[str, typer.Option("-o", "--out", help="Output folder (must not exist; with "
                                     "--force only a folder cu export wrote is replaced).")],
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli._util.fs import check_output_dir
    from cu_cli.export.run import ExportRequest

    check_output_dir(out, force, [state, base, base_config])
    req = ExportRequest("diffusers", state, out, base=base, base_config=base_config, force=force,
                        allow_base_mismatch=allow_base_mismatch)
    _finish(_run(req, quiet), json_out)


export_diffusers_command.__doc__ = (
    "A complete diffusers pipeline folder: the base folder copied, only the components the state "
    "changes rewritten, a cu.json sidecar. Load it with StableDiffusionPipeline.from_pretrained("
    "DIR, local_files_only=True). Prints the folder's path.\n\n" + EXIT_CODES_HELP)


@export_app.command("single-file")
@handle_errors
def export_single_file_command(
    state: StateArg,
    out: OutFile,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli.cli.output import check_outputs
    from cu_cli.export.run import ExportRequest

    check_outputs({"-o/--out": out}, force, inputs=[state, base, base_config])
    req = ExportRequest("single-file", state, out, base=base, base_config=base_config,
                        force=force, allow_base_mismatch=allow_base_mismatch)
    _finish(_run(req, quiet), json_out)


export_single_file_command.__doc__ = (
    "One original-layout (CompVis) .safetensors with UNet, VAE and text encoder "
    "(model.diffusion_model.*, first_stage_model.*, cond_stage_model.transformer.*) for "
    "AUTOMATIC1111, ComfyUI, Forge, or diffusers' from_single_file(F, config=BASE_DIR). SD1.x and "
    "SD2.x bases (SD2: OpenCLIP text-encoder layout, cond_stage_model.model.*); SDXL bases in the "
    "SGM layout (conditioner.embedders.*). Prints the path."
    "\n\n" + EXIT_CODES_HELP)


@export_app.command("lora")
@handle_errors
def export_lora_command(
    state: StateArg,
    out: OutFile,
    style: Annotated[str, typer.Option(
        "--style", help="peft (diffusers load_lora_weights + fuse_lora; needs the peft package), "
                        "kohya (lora_unet_*.lora_down/up/alpha: A1111, ComfyUI, Forge) or diff "
                        "(exact ΔW as lora_unet_*.diff: A1111 network_full, ComfyUI; diffusers' "
                        "load_lora_weights rejects it).")] = "peft",
    rank: Annotated[Optional[str], typer.Option(
        "--rank", help="Singular values kept per tensor (clipped to each tensor's full rank), or "
                       "'full' (exact up to float32).")] = None,
    energy: Annotated[Optional[float], typer.Option(
        "--energy", help="Instead of --rank: per tensor the fewest singular values retaining "
                         "this fraction of Σs² (0 < E <= 1).", callback=finite)] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    allow_base_mismatch: AllowMismatchOpt = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli.cli.output import check_outputs
    from cu_cli.export.lora import check_request
    from cu_cli.export.run import ExportRequest

    check_request(style, rank, energy)
    check_outputs({"-o/--out": out}, force, inputs=[state, base, base_config])
    req = ExportRequest("lora", state, out, base=base, base_config=base_config, force=force,
                        allow_base_mismatch=allow_base_mismatch, style=style, rank=rank,
                        energy=energy)
    result = _run(req, quiet)
    rep = result.report
    if not quiet and not json_out:
        print_table_err(["tensor", "rank", "of", "energy", "rel. error"],
                        [[r["key"], r["rank"], r["full_rank"], r["energy"], r["rel_error"]]
                         for r in rep["per_tensor"]],
                        title=f"{rep['style']} LoRA: {len(rep['per_tensor'])} tensors, "
                              f"{rep['params']} parameters")
        w = rep["worst"]
        warn_line = (f"worst reconstruction error {w['rel_error']:.3g} (relative Frobenius, "
                     f"{w['key']}); max |ΔW − BA| {w['max_abs_error']:.3g}; lowest retained "
                     f"energy {rep['min_energy']:.4f}")
        import sys

        sys.stderr.write(warn_line + "\n")
    _finish(result, json_out)


export_lora_command.__doc__ = (
    "A LoRA of the state against its base: truncated SVD of ΔW = W_state − W_base per changed "
    "tensor (--rank or --energy), or the exact difference (--style diff). Prints the per-tensor "
    "retained energy and the worst reconstruction error on stderr, the file's path on stdout. "
    "A changed bias or norm cannot be a LoRA (exit 3 for peft/kohya).\n\n" + EXIT_CODES_HELP)
