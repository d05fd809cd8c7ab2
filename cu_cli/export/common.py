"""What every export shares: the state opened against its base, ModelSpec and ``cu.*`` metadata.

ModelSpec (Stability AI's ``sai_model_spec`` 1.0.0, https://github.com/Stability-AI/ModelSpec):
``modelspec.sai_model_spec``, ``architecture``, ``implementation``, ``title``, ``hash_sha256``
(``0x`` + sha256 of the safetensors data section, the same rule as ``cu.payload_sha256``) and
``merged_from``. The state's ``cu.*`` lineage keys are copied; the export's own ``cu.kind`` is
``export`` (so no command applies an export as a state) and ``cu.export.source`` names the
state's payload hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cu_cli._util.errors import IncompatibleError
from cu_cli.ckpt.checkpoint import BaseIdentity, check_base, open_checkpoint
from cu_cli.ckpt.format import Header, load_tensors
from cu_cli.ckpt.keys import split_key

COPIED_CU_KEYS = ("cu.format_version", "cu.base.id", "cu.base.arch", "cu.base.fingerprint",
                  "cu.parents", "cu.lineage", "cu.erased", "cu.created_by")


@dataclass
class Source:
    """A state opened against its base: header, base, the state's tensors (canonical keys)."""

    header: Header
    base: object  # cu_cli.models.base.Base
    tensors: dict
    warnings: list[str] = field(default_factory=list)

    def components(self) -> set[str]:
        return {split_key(k)[0] for k in self.tensors}


def open_source(state: str, base, allow_mismatch: bool = False) -> Source:
    """Open ``state`` (payload verified) and check it against ``base`` (exit 3 on a mismatch, an
    unknown component prefix, a key the base lacks or a shape that does not fit)."""
    h = open_checkpoint(state)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    warnings = list(h.warnings) + check_base(h, ident, allow_mismatch)
    shapes = base.shapes()
    for k, info in h.tensors.items():
        try:
            split_key(k)
        except KeyError:
            raise IncompatibleError(f"{state}: unknown component prefix in key {k!r}")
        if k not in shapes:
            raise IncompatibleError(f"{state}: tensor {k} does not exist in base {base.id}")
        if tuple(info["shape"]) != shapes[k]:
            raise IncompatibleError(f"{state}: tensor {k} {tuple(info['shape'])} does not fit "
                                    f"base {base.id} ({shapes[k]})")
    return Source(header=h, base=base, tensors=load_tensors(state), warnings=warnings)


def architecture(base, lora: bool = False) -> str:
    """ModelSpec architecture of the base's family for its prediction type."""
    from cu_cli.models.families import get_family

    fam = get_family(base.family)
    pred = _prediction_type(base) or fam.default_prediction
    arch = fam.modelspec_arch.get(pred) or next(iter(fam.modelspec_arch.values()))
    return arch + "/lora" if lora else arch


def _prediction_type(base) -> str | None:
    import json
    import os

    try:
        with open(os.path.join(base.path, "scheduler", "scheduler_config.json")) as f:
            return json.load(f).get("prediction_type")
    except (OSError, ValueError):
        return None


def _implementation(base) -> str:
    from cu_cli.models.families import get_family

    return get_family(base.family).implementation


def metadata(src: Source, fmt: str, lora: bool = False, title: str | None = None) -> dict:
    """ModelSpec + copied ``cu.*`` keys (``modelspec.hash_sha256`` is added at write time)."""
    import os

    meta = {k: src.header.metadata[k] for k in COPIED_CU_KEYS if k in src.header.metadata}
    erased = src.header.json("cu.erased", [])
    meta.update({
        "cu.kind": "export",
        "cu.export.format": fmt,
        "cu.export.source": src.header.payload_sha256,
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture(src.base, lora),
        "modelspec.implementation": _implementation(src.base),
        "modelspec.title": title or (os.path.splitext(os.path.basename(src.header.path))[0]
                                     + (f" (erased: {', '.join(erased)})" if erased else "")),
        "modelspec.merged_from": src.base.id,
    })
    return meta


def modelspec_hash(payload: str) -> dict:
    """``modelspec.hash_sha256`` from a ``sha256:…`` data-section hash."""
    return {"modelspec.hash_sha256": "0x" + payload.split(":", 1)[1]}
