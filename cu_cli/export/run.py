"""The ``cu export`` API: typed request → :class:`ExportResult`."""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli._util.errors import UsageError
from cu_cli.export.diffusers_folder import ExportResult

FORMATS = ("diffusers", "single-file", "lora")


@dataclass(frozen=True)
class ExportRequest:
    format: str  # one of FORMATS
    state: str  # cu checkpoint
    out: str  # folder (diffusers) or .safetensors file
    base: str | None = None  # --base; None: the base named in the state's header
    base_config: str | None = None
    force: bool = False
    allow_base_mismatch: bool = False
    style: str = "peft"  # lora only
    rank: str | int | None = None  # lora only: int or "full"
    energy: float | None = None  # lora only


def run_export(req: ExportRequest) -> ExportResult:
    from cu_cli.export.common import open_source
    from cu_cli.models.base import base_for_states

    if req.format not in FORMATS:
        raise UsageError(f"unknown export format {req.format!r} (known: {', '.join(FORMATS)})")
    inputs = [req.state, req.base, req.base_config]
    if req.format == "lora":  # usage checks before any file is read
        from cu_cli.export.lora import check_request

        check_request(req.style, req.rank, req.energy)
    base = base_for_states([req.state], req.base, req.base_config)
    src = open_source(req.state, base, req.allow_base_mismatch)
    if req.format == "diffusers":
        from cu_cli.export.diffusers_folder import export_diffusers

        return export_diffusers(src, req.out, req.force, inputs)
    if req.format == "single-file":
        from cu_cli.export.single_file import export_single_file

        return export_single_file(src, req.out, req.force, inputs)
    from cu_cli.export.lora import export_lora

    return export_lora(src, req.out, req.style, req.rank, req.energy, req.force, inputs)
