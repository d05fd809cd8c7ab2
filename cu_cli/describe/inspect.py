"""Describe a cu file (checkpoint or basis) or a base (folder or built-in name)."""

from __future__ import annotations

import os

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.checkpoint import state_summary
from cu_cli.ckpt.format import nonfinite_count, payload_sha256, read_cu_header


def inspect_file(path: str) -> dict:
    """Header fields, lineage, erased concepts, tensor count/size and an integrity check.

    A structurally invalid file (offsets, dtype/shape vs bytes, duplicate keys, header hash) raises
    ``IncompatibleError`` from the header reader; ``integrity`` is ``"ok"`` only when the payload
    hash matches and every tensor is finite, else ``"FAILED"`` with the reasons in ``problems``.
    """
    h = read_cu_header(path)
    out = state_summary(h)
    out["kind"] = h.kind
    out["format_version"] = h.metadata.get("cu.format_version")
    out["created_by"] = h.metadata.get("cu.created_by")
    out["bytes"] = h.file_size
    actual = payload_sha256(path, h)
    problems = []
    if h.payload_sha256 is None:
        problems.append("no cu.payload_sha256 in the header")
    elif actual != h.payload_sha256:
        problems.append("payload hash mismatch (file corrupted or edited)")
    problems += _nonfinite_problems(path, h)
    if h.kind == "checkpoint":
        problems += _base_problems(h)
    out["integrity"] = "ok" if not problems else "FAILED"
    out["problems"] = problems
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


def _nonfinite_problems(path: str, h) -> list[str]:
    """One message per tensor holding NaN/inf (read one tensor at a time)."""
    from safetensors import safe_open

    problems = []
    try:
        with safe_open(path, framework="pt") as f:
            for k in sorted(h.tensors):
                bad = nonfinite_count(f.get_tensor(k))
                if bad:
                    problems.append(f"tensor {k} has {bad} non-finite value(s) (NaN/inf)")
    except Exception as e:  # safetensors' own error types for unreadable data
        raise IncompatibleError(f"{path}: cannot read tensors ({(str(e).splitlines() or [''])[0]})")
    return problems


def _base_problems(h) -> list[str]:
    """Against the base named in the header, when it is on this machine (built-in name or
    existing path): architecture, weights fingerprint, and each tensor's key and shape."""
    from cu_cli._util.errors import CuError
    from cu_cli.models.base import BUILTIN_BASES, resolve_base

    base_id = h.metadata.get("cu.base.id")
    if not base_id or not (base_id in BUILTIN_BASES or os.path.exists(base_id)):
        h.warnings.append(f"{h.path}: base {base_id!r} is not on this machine; tensor shapes "
                          "were not checked against it")
        return []
    try:
        base = resolve_base(base_id)
        shapes = base.shapes()
    except CuError as e:
        h.warnings.append(f"{h.path}: base {base_id!r} not checked ({e})")
        return []
    problems = []
    if h.metadata.get("cu.base.arch") != base.arch:
        problems.append(f"architecture differs from base {base_id!r} on this machine")
    elif h.metadata.get("cu.base.fingerprint") != base.fingerprint:
        problems.append(f"weights fingerprint differs from base {base_id!r} on this machine")
    for k, info in sorted(h.tensors.items()):
        if k not in shapes:
            problems.append(f"tensor {k} does not exist in base {base_id!r}")
        elif tuple(info["shape"]) != tuple(shapes[k]):
            problems.append(f"tensor {k} has shape {tuple(info['shape'])}, base {base_id!r} has "
                            f"{tuple(shapes[k])}")
    return problems


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
    """True for a cu file; a missing ``.safetensors`` path is exit 1; any other regular file that
    is not a cu file (``x.png``, a single-file base without ``.safetensors``) is exit 3."""
    if target.endswith(".safetensors") and not os.path.exists(target):
        from cu_cli._util.errors import CuError

        raise CuError(f"{target}: no such file")
    if os.path.isfile(target) and not target.endswith(".safetensors"):
        if _is_cu_file(target):
            return True
        raise IncompatibleError(f"{target} is not a safetensors checkpoint (a cu file, a "
                                "diffusers folder or a built-in base name)")
    return os.path.isfile(target) and target.endswith(".safetensors") and _is_cu_file(target)


def _is_cu_file(path: str) -> bool:
    from cu_cli.ckpt.format import read_header

    try:
        return "cu.format_version" in read_header(path).metadata
    except IncompatibleError:
        return not _looks_foreign(path)  # a damaged cu file: let inspect_file report it
    except Exception:
        return True  # let inspect_file report the problem precisely


def _looks_foreign(path: str) -> bool:
    """A non-``.safetensors`` name whose first bytes are no safetensors length prefix."""
    return not path.endswith(".safetensors")
