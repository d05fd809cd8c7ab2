"""Basis files (``cu.kind=basis``): the protected text-embedding matrix C for gradient projection.

Tensor ``basis.text_embedding`` = C (d × n, fp32, de-duplicated columns), so ``erase`` rebuilds the
reference projector exactly; header: prompts, concepts, similarities, de-dup threshold, extraction
rule and the base fingerprint (checked by ``erase --basis``).
"""

from __future__ import annotations

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.checkpoint import BaseIdentity
from cu_cli.ckpt.format import FORMAT_VERSION, load_tensors, read_cu_header, verify_payload
from cu_cli.ckpt.format import write_safetensors

TENSOR = "basis.text_embedding"


def write_basis(out: str, C, base: BaseIdentity, meta: dict) -> str:
    from cu_cli.ckpt.lineage import cu_version

    header = {
        "cu.format_version": str(FORMAT_VERSION),
        "cu.kind": "basis",
        "cu.base.id": base.id,
        "cu.base.arch": base.arch,
        "cu.base.fingerprint": base.fingerprint,
        "cu.created_by": f"cu_cli {cu_version()}",
        **meta,
    }
    return write_safetensors(out, {TENSOR: C.float().contiguous()}, header)


def read_basis_header(path: str, base: BaseIdentity | None = None, allow_mismatch: bool = False):
    """The header of a basis file; exit 3 when it was made for another base or is not a basis."""
    h = read_cu_header(path, kind="basis")
    if base is not None and not allow_mismatch and (
            h.metadata.get("cu.base.fingerprint") != base.fingerprint
            or h.metadata.get("cu.base.arch") != base.arch):
        raise IncompatibleError(f"{path}: basis was made for base {h.metadata.get('cu.base.id')!r}, "
                                f"not {base.id!r} (fingerprint differs)")
    if TENSOR not in h.tensors:
        raise IncompatibleError(f"{path}: basis file lacks tensor {TENSOR}")
    return h


def read_basis(path: str, base: BaseIdentity | None = None, allow_mismatch: bool = False):
    """(C, header), payload verified; exit 3 as :func:`read_basis_header`."""
    h = read_basis_header(path, base, allow_mismatch)
    verify_payload(h)
    return load_tensors(path, [TENSOR])[TENSOR].float(), h
