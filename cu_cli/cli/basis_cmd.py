"""``cu project-basis``: write the protected text-embedding basis C for ``erase --basis``."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP, UsageError
from cu_cli.cli.output import (BaseConfigOpt, BaseOpt, DebugOpt, DeviceOpt, DtypeOpt, ForceOpt,
                               JsonOpt, QuietOpt, VerboseOpt, check_outputs, err_console, finite,
                               handle_errors, print_json, print_paths, setup_logging)


@handle_errors
def basis_command(
    concept: Annotated[Optional[str], typer.Option(
        "--concept", help="The concept about to be erased (the basis protects its neighbours).")] = None,
    out: Annotated[Optional[str], typer.Option("-o", "--out", help="Output basis .safetensors.")] = None,
    from_: Annotated[Optional[str], typer.Option(
        "--from", help="Parent state: its base, and its erased concepts inserted first; '-' reads "
                       "a path from stdin.")] = None,
    base: BaseOpt = None,
    base_config: BaseConfigOpt = None,
    kind: Annotated[Optional[str], typer.Option(
        "--kind", help="style | object | celebrity (inferred when the concept is in the "
                       "vocabulary).")] = None,
    aux_file: Annotated[Optional[list[str]], typer.Option(
        "--aux-file", help="File of auxiliary concepts, one per line; lines starting 'An image' "
                           "or longer than 6 words are used as whole prompts. Repeatable.")] = None,
    vocab: Annotated[Optional[str], typer.Option(
        "--vocab", help="builtin (default; styles, objects, public-figure categories) | "
                        "minicanvas (default on that base) | none (only --aux-file).")] = None,
    top_m: Annotated[int, typer.Option(
        "--top-m", help="Keep the M candidates most similar to the concept, split evenly between "
                        "domains (style / object / celebrity; named --aux-file lines count as "
                        "--kind, full-prompt lines as their own 'prompt' domain); a domain's "
                        "unused share goes to the next most similar overall.", min=1)] = 200,
    dedup: Annotated[float, typer.Option(
        "--dedup", help="Drop a column whose cosine to a kept one is >= this.",
        callback=finite)] = 0.95,
    min_sim: Annotated[Optional[float], typer.Option(
        "--min-sim", help="Keep only candidates with cosine >= this to the concept.",
        callback=finite)] = None,
    aux_max_sim: Annotated[Optional[float], typer.Option(
        "--aux-max-sim", help="Drop near-synonyms: candidates with cosine >= this to the concept "
                              "(default 0.95, the reference's de-dup cosine: the same direction "
                              "as the concept, whose protection would undo the erasure; off for "
                              "the minicanvas vocabulary, whose concepts are distinct by "
                              "construction). Never applied to the parent's erased concepts; "
                              "> 1 disables it.", callback=finite)] = None,
    include_erased: Annotated[bool, typer.Option(
        "--include-erased/--no-include-erased",
        help="Insert the parent's erased concepts first (protects earlier erasures).")] = True,
    json_: JsonOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli.basis.run import BasisRequest, run_basis

    setup_logging(quiet, verbose)
    from cu_cli._util.text import clean_concept

    if concept is None:
        raise UsageError("give --concept")
    concept = clean_concept(concept, "--concept")
    if out is None:
        raise UsageError("-o/--out is required")
    check_outputs({"-o/--out": out}, force, inputs=[from_, *(aux_file or []), base, base_config])
    if from_ == "-":
        from_ = sys.stdin.readline().strip()
        if not from_:
            raise UsageError("--from -: no path on stdin")
    result = run_basis(BasisRequest(
        target=concept, out=out, kind=kind, base=base, base_config=base_config, parent=from_,
        aux_files=list(aux_file or []), vocab=vocab, top_m=top_m, dedup=dedup, min_sim=min_sim,
        aux_max_sim=aux_max_sim, include_erased=include_erased, device=device, dtype=dtype,
        force=force))
    if not quiet:
        n_e = sum(c["erased"] for c in result.columns)
        err_console().print(f"basis for {result.target!r} ({result.kind}): C {result.shape[0]}x"
                            f"{result.shape[1]}, {n_e} erased concept(s) first, "
                            f"{result.wall_seconds:.1f}s", markup=False)
    if json_:
        cols = sorted(result.columns, key=lambda c: -c["similarity"])
        print_json({"path": os.path.abspath(result.path), "payload_sha256": result.payload_sha256,
                    "target": result.target, "kind": result.kind, "shape": result.shape,
                    "concepts": [{"concept": c["concept"], "similarity": c["similarity"],
                                  **({"erased": True} if c["erased"] else {})} for c in cols]},
                   "project-basis")
    else:
        print_paths(result.path)


basis_command.__doc__ = (
    "Build the gradient-projection basis for erasing --concept: token-level text embeddings of "
    "the most similar auxiliary concepts (built-in vocabulary or --aux-file; near-synonyms above "
    "--aux-max-sim dropped; top M split evenly between domains), the parent's erased concepts "
    "first, de-duplicated. Use it with `cu erase --basis`.\n\n" + EXIT_CODES_HELP)
