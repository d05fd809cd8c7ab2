"""``cu export lora``: the state as a LoRA against its base (SVD of ΔW = W_state − W_base).

Three styles (conventions §2 "Exports"):

* ``peft`` — diffusers/PEFT keys ``unet.<module>.lora_A.weight`` / ``.lora_B.weight``
  (``text_encoder.text_model.<module>…`` for text-encoder tensors), with
  ``lora_adapter_metadata`` (diffusers' ``LORA_ADAPTER_METADATA_KEY``): per component ``r``,
  ``lora_alpha`` = ``r``, ``target_modules``, ``rank_pattern`` = ``alpha_pattern`` (α = r per module,
  so the LoRA scale is 1 and ``fuse_lora`` adds exactly B·A). Loads with
  ``pipe.load_lora_weights(F)`` (needs the ``peft`` package), then ``pipe.fuse_lora()``.
* ``kohya`` — ``lora_unet_<module with _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``
  (= rank, scale 1), ``lora_te_…`` for the text encoder: what AUTOMATIC1111, ComfyUI and Forge
  load; diffusers converts it (``_convert_non_diffusers_lora_to_diffusers``, tested).
* ``diff`` — ``lora_unet_<module>.diff`` = the exact ΔW (``.diff_b`` for a bias): A1111's
  ``network_full`` and ComfyUI's ``diff`` patches. diffusers' ``load_lora_weights`` rejects it.

``--rank R`` keeps R singular values per tensor (clipped to its full rank; ``full`` = exact up to
float32), ``--energy E`` the fewest that retain E of Σs². ΔW = 0 tensors are left out. A LoRA
carries matrices and convolution kernels only: a changed 1-D tensor (bias, norm) is refused for
``peft``/``kohya`` (exit 3; ``--style diff`` or ``cu export diffusers`` carry it).
"""

from __future__ import annotations

import json

from cu_cli._util.errors import IncompatibleError, UsageError
from cu_cli._util.fs import check_output_path
from cu_cli.ckpt.format import write_safetensors
from cu_cli.ckpt.keys import canonical_key, split_key
from cu_cli.export.common import Source, metadata, modelspec_hash
from cu_cli.export.diffusers_folder import ExportResult
from cu_cli.ops.lowrank import factorise, is_factorisable

STYLES = ("peft", "kohya", "diff")
KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"}


def parse_rank(rank: str | int | None) -> int | None:
    """``--rank``: a positive integer or ``full`` (→ a rank no tensor exceeds)."""
    if rank is None:
        return None
    if str(rank).strip().lower() == "full":
        return 1 << 30
    try:
        r = int(str(rank))
    except ValueError:
        raise UsageError(f"--rank must be a positive integer or 'full', got {rank!r}")
    if r < 1:
        raise UsageError(f"--rank must be >= 1, got {r}")
    return r


def check_request(style: str, rank, energy) -> int | None:
    if style not in STYLES:
        raise UsageError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    if style == "diff":
        if rank is not None or energy is not None:
            raise UsageError("--style diff writes the exact difference; it takes no --rank/--energy")
        return None
    if (rank is None) == (energy is None):
        raise UsageError("give exactly one of --rank R and --energy E")
    if energy is not None and not 0 < float(energy) <= 1:
        raise UsageError(f"--energy must be in (0, 1], got {energy}")
    return parse_rank(rank)


def module_of(key: str) -> tuple[str, str, str]:
    """``unet.a.b.weight`` → (``unet``, ``a.b``, ``weight``); text-encoder modules keep
    ``text_model.`` (the canonical spelling diffusers' and kohya's LoRA files use)."""
    comp, name = split_key(key)
    name = canonical_key(comp, name).split(".", 1)[1]
    module, _, param = name.rpartition(".")
    return comp, module, param


def kohya_name(comp: str, module: str) -> str:
    if comp not in KOHYA_PREFIX:
        raise IncompatibleError(f"no kohya prefix for component {comp!r}")
    return KOHYA_PREFIX[comp] + module.replace(".", "_")


def export_lora(src: Source, out: str, style: str, rank=None, energy: float | None = None,
                force: bool = False, inputs=()) -> ExportResult:
    import torch

    r = check_request(style, rank, energy)
    out = check_output_path(out, force, [*inputs, src.header.path])
    base_vals = src.base.get_tensors(sorted(src.tensors))
    tensors: dict = {}
    rows: list[dict] = []
    targets: dict[str, dict[str, int]] = {}
    skipped = 0
    for k in sorted(src.tensors):
        comp, module, param = module_of(k)
        delta = src.tensors[k].float() - base_vals[k].float()
        if not torch.any(delta != 0):
            skipped += 1
            continue
        if style == "diff":
            suffix = "diff" if param == "weight" else "diff_b" if param == "bias" else None
            if suffix is None:
                raise IncompatibleError(f"tensor {k}: no A1111/ComfyUI diff key for a {param!r} "
                                        "parameter")
            tensors[f"{kohya_name(comp, module)}.{suffix}"] = delta.contiguous()
            rows.append({"key": k, "rank": None, "full_rank": None, "energy": 1.0,
                         "rel_error": 0.0, "max_abs_error": 0.0, "params": delta.numel()})
            continue
        if param != "weight" or not is_factorisable(delta):
            raise IncompatibleError(
                f"tensor {k} ({tuple(delta.shape)}) changed but a LoRA carries only Linear/Conv "
                "weight matrices", hint="use --style diff (exact) or cu export diffusers")
        lr = factorise(delta, rank=r if energy is None else None, energy=energy)
        if style == "peft":
            tensors[f"{comp}.{module}.lora_A.weight"] = lr.down
            tensors[f"{comp}.{module}.lora_B.weight"] = lr.up
            targets.setdefault(comp, {})[module] = lr.rank
        else:
            name = kohya_name(comp, module)
            tensors[f"{name}.lora_down.weight"] = lr.down
            tensors[f"{name}.lora_up.weight"] = lr.up
            tensors[f"{name}.alpha"] = torch.tensor(float(lr.rank))
        rows.append({"key": k, "rank": lr.rank, "full_rank": lr.full_rank, "energy": lr.energy,
                     "rel_error": lr.rel_error, "max_abs_error": lr.max_abs_error,
                     "params": lr.down.numel() + lr.up.numel()})
    if not tensors:
        raise UsageError(f"{src.header.path} does not differ from base {src.base.id}: nothing to "
                         "export")
    meta = metadata(src, f"lora-{style}", lora=True)
    meta["cu.export.lora"] = json.dumps({"style": style, "rank": rank if rank is None else str(rank),
                                         "energy": energy}, sort_keys=True)
    if style == "peft":
        meta["lora_adapter_metadata"] = json.dumps(adapter_metadata(targets), sort_keys=True)
    elif style == "kohya":
        meta["ss_network_module"] = "networks.lora"
    write_safetensors(out, tensors, meta, derived=modelspec_hash)
    worst = max(rows, key=lambda x: x["rel_error"])
    report = {"style": style, "tensors_written": len(tensors), "unchanged_skipped": skipped,
              "per_tensor": rows,
              "worst": {"key": worst["key"], "rel_error": worst["rel_error"],
                        "max_abs_error": max(x["max_abs_error"] for x in rows)},
              "min_energy": min(x["energy"] for x in rows),
              "params": sum(x["params"] for x in rows)}
    return ExportResult(path=out, format=f"lora-{style}", components=sorted({module_of(x["key"])[0]
                        for x in rows}), tensors=len(rows), warnings=list(src.warnings),
                        report=report)


def adapter_metadata(targets: dict[str, dict[str, int]]) -> dict:
    """diffusers' ``lora_adapter_metadata``: one LoraConfig per component, keys prefixed with the
    component (``unet.r``, ``unet.lora_alpha``, …); α = r for every module (scale 1)."""
    from collections import Counter

    meta = {}
    for comp, mods in targets.items():
        r = Counter(mods.values()).most_common(1)[0][0]
        pattern = {m: v for m, v in sorted(mods.items()) if v != r}
        meta.update({f"{comp}.r": r, f"{comp}.lora_alpha": r,
                     f"{comp}.target_modules": sorted(mods),
                     f"{comp}.rank_pattern": pattern, f"{comp}.alpha_pattern": dict(pattern)})
    return meta


def lora_to_tensors(path: str, base) -> dict:
    """Read a peft- or kohya-style LoRA file written by cu and rebuild absolute fp32 weights
    W_base + (α/r)·B·A per module (canonical keys): what a loader fuses. Used to evaluate a LoRA
    export with ``cu eval`` (benchmarks/export_lora.py)."""
    from cu_cli.ckpt.format import load_tensors
    from cu_cli.ops.lowrank import reconstruct

    t = load_tensors(path)
    shapes = base.shapes()
    out = {}
    if any(k.endswith(".lora_A.weight") for k in t):
        meta = json.loads(_metadata(path).get("lora_adapter_metadata", "{}"))
        for k in t:
            if not k.endswith(".lora_A.weight"):
                continue
            stem = k[: -len(".lora_A.weight")]
            comp, module = stem.split(".", 1)
            r = t[k].shape[0]
            alpha = meta.get(f"{comp}.alpha_pattern", {}).get(module, meta.get(f"{comp}.lora_alpha",
                                                                                r))
            key = f"{stem}.weight"
            out[key] = reconstruct(t[k], t[f"{stem}.lora_B.weight"], shapes[key], alpha / r)
    else:
        by_name = {}
        for comp in ("unet", "text_encoder", "text_encoder_2"):
            for key in shapes:
                if key.startswith(comp + ".") and key.endswith(".weight"):
                    c, module, _ = module_of(key)
                    by_name[kohya_name(c, module)] = key
        for k in t:
            if not k.endswith(".lora_down.weight"):
                continue
            name = k[: -len(".lora_down.weight")]
            key = by_name[name]
            r = t[k].shape[0]
            alpha = float(t[f"{name}.alpha"]) if f"{name}.alpha" in t else r
            out[key] = reconstruct(t[k], t[f"{name}.lora_up.weight"], shapes[key], alpha / r)
    ref = base.get_tensors(sorted(out))
    return {k: (ref[k].float() + v).contiguous() for k, v in out.items()}


def _metadata(path: str) -> dict:
    from cu_cli.ckpt.format import read_header

    return read_header(path).metadata
