"""Describe a cu file (checkpoint or basis) or a base (folder or built-in name)."""

from __future__ import annotations

import os

from cu_cli.ckpt.checkpoint import state_summary
from cu_cli.ckpt.format import payload_sha256, read_cu_header


def inspect_file(path: str) -> dict:
    """Header fields, lineage, erased concepts, tensor count/size and an integrity check."""
    h = read_cu_header(path)
    out = state_summary(h)
    out["kind"] = h.kind
    out["format_version"] = h.metadata.get("cu.format_version")
    out["created_by"] = h.metadata.get("cu.created_by")
    out["bytes"] = h.file_size
    actual = payload_sha256(path, h)
    out["integrity"] = "ok" if actual == h.payload_sha256 else "MISMATCH"
    out["payload_sha256_actual"] = actual
    out["warnings"] = h.warnings
    if h.kind == "basis":
        out["basis"] = {
            "concepts": h.json("cu.basis.concepts", []),
            "prompts": len(h.json("cu.basis.prompts", [])),
            "similarities": h.json("cu.basis.similarities", []),
            "target": h.metadata.get("cu.basis.target"),
            "dedup_cos": h.metadata.get("cu.basis.dedup_cos"),
            "extraction": h.metadata.get("cu.basis.extraction"),
            "shape": next(iter(h.tensors.values()))["shape"] if h.tensors else None,
        }
    out["keys"] = sorted(h.tensors)
    return out


def inspect_base(spec: str | None, base_config: str | None = None, groups: bool = False) -> dict:
    """Family, components, fingerprint, parameter groups and (built-in worlds) concept lists."""
    from cu_cli.models.base import resolve_base

    base = resolve_base(spec, base_config)
    out = {"kind": "base", **base.describe(), "arch": base.arch, "fingerprint": base.fingerprint}
    out["files"] = {c: os.path.relpath(p, base.path) for c, p in base.files.items()}
    if groups:
        from cu_cli.models.groups import group_counts

        out["groups"] = group_counts(base.load_pipeline().unet)
    if base.world:
        from cu_cli.world.registry import get_world

        out.update(get_world(base.world).as_dict())
    return out


def is_file_target(target: str) -> bool:
    if target.endswith(".safetensors") and not os.path.exists(target):
        from cu_cli._util.errors import CuError

        raise CuError(f"{target}: no such file")
    return os.path.isfile(target) and target.endswith(".safetensors") and _is_cu_file(target)


def _is_cu_file(path: str) -> bool:
    from cu_cli.ckpt.format import read_header

    try:
        return "cu.format_version" in read_header(path).metadata
    except Exception:
        return True  # let inspect_file report the corruption precisely
