"""``cu export diffusers``: base + state as a complete diffusers pipeline folder.

The folder is the base folder copied (``model_index.json`` and the component subfolders it names;
nothing else, so a stray original ``*.ckpt`` beside the base can never ship un-erased), with only
the components whose tensors the state changes rewritten: every tensor of the base component
file, the state's values overlaid (in the base file's dtype and key spelling), saved as that
component's ``*.safetensors`` (diffusers' ``save_pretrained`` layout). Other weight files of a
rewritten component (``.bin``, ``.fp16.safetensors`` variants, shards) are dropped with a warning:
they would load the un-erased weights. A ``cu.json`` sidecar beside ``model_index.json`` holds the
state's ``cu.*`` header, ModelSpec fields and the payload hash of each rewritten component file.
The whole folder is written under a temporary name and renamed into place.

A single-file base (``--base F --base-config DIR``) is loaded with ``from_single_file``, the state
applied strictly and the pipeline written with ``save_pretrained`` (models/export.py).

Loads with ``StableDiffusionPipeline.from_pretrained(DIR, local_files_only=True)``
(``StableDiffusionXLPipeline`` for SDXL bases).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

from cu_cli._util.fs import atomic_dir, check_output_dir
from cu_cli.ckpt.keys import canonical_key, split_key
from cu_cli.export.common import Source, metadata

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".h5")


@dataclass
class ExportResult:
    path: str
    format: str
    components: list[str]  # components rewritten (diffusers) / written
    tensors: int  # state tensors applied / factorised
    warnings: list[str] = field(default_factory=list)
    report: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {"path": self.path, "format": self.format, "components": self.components,
                "tensors": self.tensors, "warnings": self.warnings, **self.report}


def _component_folders(base_path: str) -> list[str]:
    with open(os.path.join(base_path, "model_index.json")) as f:
        index = json.load(f)
    out = []
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            continue
        if os.path.isdir(os.path.join(base_path, name)):
            out.append(name)
    return out


def export_diffusers(src: Source, out: str, force: bool = False, inputs=()) -> ExportResult:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save

    from cu_cli.ckpt.format import encode_metadata, payload_sha256, read_header

    base = src.base
    out = check_output_dir(out, force, [*inputs, src.header.path, base.path, base.single_file])
    if base.single_file:
        return _export_from_single_file(src, out)
    changed = sorted(src.components())
    by_comp: dict[str, dict] = {}
    for k, v in src.tensors.items():
        comp, _ = split_key(k)
        by_comp.setdefault(comp, {})[k] = v
    warnings = list(src.warnings)
    hashes = {}
    with atomic_dir(out) as tmp:
        shutil.copy2(os.path.join(base.path, "model_index.json"), os.path.join(tmp, "model_index.json"))
        for comp in _component_folders(base.path):
            src_dir, dst_dir = os.path.join(base.path, comp), os.path.join(tmp, comp)
            os.makedirs(dst_dir)
            weight_file = base.files.get(comp) if comp in by_comp else None
            for name in sorted(os.listdir(src_dir)):
                p = os.path.join(src_dir, name)
                if os.path.isdir(p):
                    shutil.copytree(p, os.path.join(dst_dir, name))
                    continue
                if weight_file is not None and _is_weights(name):
                    if os.path.abspath(p) != os.path.abspath(weight_file):
                        warnings.append(f"{comp}/{name} dropped: it would load the un-erased "
                                        f"weights (only {os.path.basename(weight_file)} is "
                                        "rewritten)")
                    continue
                shutil.copy2(p, os.path.join(dst_dir, name))
        for comp, sub in by_comp.items():
            weight_file = base.files[comp]
            file_meta = read_header(weight_file).metadata or {"format": "pt"}
            tensors, lossy = {}, 0
            with safe_open(weight_file, framework="pt") as f:
                names = {canonical_key(comp, n): n for n in f.keys()}
                for n in f.keys():
                    tensors[n] = f.get_tensor(n)
            for k, v in sub.items():
                n = names[k]
                new = v.to(tensors[n].dtype)
                if new.dtype != v.dtype and not torch.equal(new.to(v.dtype), v):
                    lossy += 1
                tensors[n] = new.contiguous()
            if lossy:
                warnings.append(f"{comp}: {lossy} state tensor(s) rounded to the base's "
                                f"{next(iter(tensors.values())).dtype} weights")
            dst = os.path.join(tmp, comp, os.path.basename(weight_file))
            with open(dst, "wb") as fh:
                fh.write(save(tensors, metadata=encode_metadata(file_meta)))
            hashes[comp] = payload_sha256(dst)
        _write_sidecar(src, tmp, {c: {"file": f"{c}/{os.path.basename(base.files[c])}",
                                      "payload_sha256": h} for c, h in hashes.items()})
    return ExportResult(path=out, format="diffusers", components=changed,
                        tensors=len(src.tensors), warnings=warnings,
                        report={"component_hashes": hashes})


def _export_from_single_file(src: Source, out: str) -> ExportResult:
    """A single-file base: load it with its config folder, apply the state, ``save_pretrained``."""
    from cu_cli.models.export import save_pretrained_with_state

    with atomic_dir(out) as tmp:
        save_pretrained_with_state(src.base, src.tensors, tmp)
        _write_sidecar(src, tmp, {})
    return ExportResult(path=out, format="diffusers", components=sorted(src.components()),
                        tensors=len(src.tensors), warnings=list(src.warnings),
                        report={"component_hashes": {}})


def _write_sidecar(src: Source, folder: str, hashes: dict) -> None:
    from cu_cli.ckpt.format import JSON_KEYS

    meta = metadata(src, "diffusers")
    sidecar = {
        "cu": {k: (json.loads(v) if k in JSON_KEYS else v) for k, v in meta.items()
               if k.startswith("cu.")},
        "modelspec": {k.split(".", 1)[1]: v for k, v in meta.items()
                      if k.startswith("modelspec.")},
        "components": hashes,
        "state": {"path": os.path.abspath(src.header.path),
                  "payload_sha256": src.header.payload_sha256},
    }
    with open(os.path.join(folder, "cu.json"), "w") as fh:
        json.dump(sidecar, fh, indent=2, sort_keys=True, allow_nan=False)
        fh.write("\n")


def _is_weights(name: str) -> bool:
    return name.endswith(_WEIGHT_SUFFIXES) or name.endswith(".index.json")
