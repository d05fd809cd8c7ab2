"""Checkpoint-level API: open a state, check it against a base, write a child state.

A child stores the union of its parent's trained keys and its own, so one file applied to the root
base reproduces the whole chain; its lineage is the parent's plus one step; ``cu.erased`` is the
parent's list plus the new concepts (or whatever the op declares, e.g. a merge's union).
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli._util.errors import CuError, IncompatibleError
from cu_cli.ckpt.format import FORMAT_VERSION, Header, read_cu_header, verify_payload, write_safetensors


@dataclass(frozen=True)
class BaseIdentity:
    """What a checkpoint records about its base."""

    id: str
    arch: str
    fingerprint: str


def open_checkpoint(path: str, verify: bool = True) -> Header:
    """Header of a cu checkpoint (``cu.kind=checkpoint``), payload hash verified."""
    h = read_cu_header(path, kind="checkpoint")
    if verify:
        verify_payload(h)
    return h


def state_summary(h: Header) -> dict:
    """The JSON fields every command reports about a state."""
    return {
        "path": h.path,
        "payload_sha256": h.payload_sha256,
        "base_id": h.metadata.get("cu.base.id"),
        "base_fingerprint": h.metadata.get("cu.base.fingerprint"),
        "base_arch": h.metadata.get("cu.base.arch"),
        "parents": h.json("cu.parents", []),
        "lineage": h.json("cu.lineage", []),
        "erased": h.json("cu.erased", []),
        "tensors": len(h.tensors),
        "params": h.n_params,
    }


def check_base(h: Header, base: BaseIdentity, allow_mismatch: bool = False) -> list[str]:
    """Exit-3 error when ``h`` was made from another base; returns warnings when allowed."""
    problems = []
    if h.metadata.get("cu.base.arch") != base.arch:
        problems.append("architecture")
    if h.metadata.get("cu.base.fingerprint") != base.fingerprint:
        problems.append("weights fingerprint")
    if not problems:
        return []
    msg = (f"{h.path} was made from base {h.metadata.get('cu.base.id')!r}, which differs from "
           f"base {base.id!r} in {' and '.join(problems)}")
    if allow_mismatch:
        return [msg + " (allowed by --allow-base-mismatch)"]
    raise IncompatibleError(msg, hint="pass the base it was made from, or --allow-base-mismatch")


def checkpoint_metadata(base: BaseIdentity, step: dict, parents: list[Header] = (),
                        erased: list[str] | None = None,
                        lineage: list[dict] | None = None) -> dict:
    """The ``cu.*`` header of a ``cu.kind=checkpoint`` file (see :func:`write_checkpoint`)."""
    from cu_cli.ckpt.lineage import cu_version

    if lineage is None:
        lineage = (parents[0].json("cu.lineage", []) if parents else []) + [step]
    if erased is None:
        erased = list(parents[0].json("cu.erased", [])) if parents else []
        for c in step.get("concepts", []):
            if c not in erased:
                erased.append(c)
    return {
        "cu.format_version": str(FORMAT_VERSION),
        "cu.kind": "checkpoint",
        "cu.base.id": base.id,
        "cu.base.arch": base.arch,
        "cu.base.fingerprint": base.fingerprint,
        "cu.parents": [p.payload_sha256 for p in parents],
        "cu.lineage": lineage,
        "cu.erased": erased,
        "cu.tensors": "absolute",
        "cu.dtype": "float32",
        "cu.created_by": f"cu_cli {cu_version()}",
    }


def write_checkpoint(out: str, tensors: dict, base: BaseIdentity, step: dict,
                     parents: list[Header] = (), erased: list[str] | None = None,
                     lineage: list[dict] | None = None) -> str:
    """Write a ``cu.kind=checkpoint`` file atomically; returns its payload hash.

    ``tensors`` must already hold the union of the parents' keys and the new ones, as fp32.
    ``lineage`` defaults to the single parent's lineage plus ``step``.
    """
    import torch

    bad = [k for k, v in tensors.items() if v.dtype != torch.float32]
    if bad:
        raise CuError(f"internal: tensor {bad[0]} is {tensors[bad[0]].dtype}, checkpoints hold fp32")
    return write_safetensors(out, tensors, checkpoint_metadata(base, step, parents, erased, lineage))


def write_checkpoint_stream(out: str, shapes: dict, produce, base: BaseIdentity, step,
                            parents: list[Header] = (), erased: list[str] | None = None,
                            lineage_before: list[dict] | None = None) -> str:
    """:func:`write_checkpoint` one fp32 tensor at a time (``cu merge`` of full-UNet states).

    ``shapes``: key -> shape; ``produce(key)`` returns that fp32 tensor (called once per key, in
    name order; only one is alive at a time). ``step()`` builds the lineage step; it is called
    before the data (to size the header) and again after it, so its timings cover the whole
    computation. The lineage is ``lineage_before`` (default: the single parent's) plus the step.
    Same payload hash as :func:`write_checkpoint` for the same tensors.
    """
    from cu_cli.ckpt.format import write_safetensors_stream

    if lineage_before is None:
        lineage_before = parents[0].json("cu.lineage", []) if parents else []
    s0 = step()
    meta = checkpoint_metadata(base, s0, parents, erased, lineage=[*lineage_before, s0])
    specs = {k: ("F32", tuple(v)) for k, v in shapes.items()}
    return write_safetensors_stream(out, specs, produce, meta,
                                    finalize=lambda: {"cu.lineage": [*lineage_before, step()]})
