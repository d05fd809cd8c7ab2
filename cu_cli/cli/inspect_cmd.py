"""``cu inspect FILE|BASE``: header, lineage and integrity of a state; family and groups of a base."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli._util.text import safe_text
from cu_cli.cli.output import (BaseConfigOpt, DebugOpt, JsonOpt, handle_errors, print_json,
                               print_table, warn)


@handle_errors
def inspect_command(
    target: Annotated[Optional[str], typer.Argument(
        help="A cu .safetensors file (checkpoint or basis), a diffusers folder, or a built-in base "
             "name such as 'minicanvas'. Default: the built-in base.")] = None,
    base_config: BaseConfigOpt = None,
    groups: Annotated[bool, typer.Option("--groups", help="Bases: count tensors and parameters "
                                         "of each trainable group (loads the UNet).")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli.describe.inspect import inspect_base, inspect_file, is_file_target

    if target and is_file_target(target):
        info = inspect_file(target)
        for w in info["warnings"]:
            warn(w)
        if json_out:
            print_json(info, "inspect")
        else:
            _print_file(info)
        if info["integrity"] != "ok":
            from cu_cli._util.errors import IncompatibleError

            raise IncompatibleError(f"{target}: integrity check failed: "
                                    + "; ".join(info["problems"]))
        return
    info = inspect_base(target, base_config, groups)
    if json_out:
        print_json(info, "inspect")
    else:
        _print_base(info)


inspect_command.__doc__ = (
    "Show what a state, basis or base is: header, lineage, erased concepts, integrity; or a "
    "base's family, components, parameter groups and concept lists.\n\n" + EXIT_CODES_HELP)


def _print_file(info: dict) -> None:
    """Plain text; every value read from the file goes through ``safe_text`` (tables escape
    their own cells), so a header cannot move the cursor or reorder a line."""
    out, t = sys.stdout, safe_text
    out.write(f"path              {t(info['path'])}\n")
    out.write(f"kind              {t(info['kind'])} (format {t(info['format_version'])})\n")
    out.write(f"payload_sha256    {t(info['payload_sha256'])}  [{info['integrity']}]\n")
    out.write(f"base              {t(info['base_id'])}  {t(info['base_fingerprint'])}\n")
    out.write(f"parents           {t(', '.join(info['parents'])) or '-'}\n")
    out.write(f"erased            {t(', '.join(info['erased'])) or '-'}\n")
    out.write(f"tensors           {info['tensors']} ({info['params']:,} params, "
              f"{info['bytes'] / 1e6:.2f} MB)\n")
    out.write(f"created_by        {t(info['created_by'])}\n")
    for p in info.get("problems", []):
        out.write(f"problem           {t(p)}\n")
    if info.get("basis"):
        b = info["basis"]
        out.write(f"basis             target {t(repr(b['target']))}, C {b['shape']}, "
                  f"{len(b['concepts'])} concepts\n")
    if info["lineage"]:
        from cu_cli.ckpt.lineage import step_measured

        rows = [[i + 1, s.get("op"), _join(s.get("concepts", [])), s.get("method"),
                 s.get("seed"), step_measured(s).get("wall_seconds"), s.get("created")]
                for i, s in enumerate(info["lineage"])]
        out.write("\n")
        print_table(["#", "op", "concepts", "method", "seed", "wall_s", "created"], rows,
                    title="lineage")


def _join(v) -> str:
    """``", "``-joined concepts of a lineage step, tolerant of odd types in foreign files."""
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "-"
    return str(v)


def _print_base(info: dict) -> None:
    out = sys.stdout
    out.write(f"base              {info['id']} ({info['kind']})\n")
    out.write(f"path              {info['path']}\n")
    out.write(f"family            {info['family']}\n")
    out.write(f"components        {', '.join(info['files'])}\n")
    out.write(f"fingerprint       {info['fingerprint']}\n")
    if "groups" in info:
        out.write("\n")
        print_table(["group", "tensors", "params"],
                    [[g, v["tensors"], f"{v['params']:,}"] for g, v in info["groups"].items()],
                    title="parameter groups")
    if "objects" in info:
        out.write(f"\nobjects ({len(info['objects'])})   {', '.join(info['objects'])}\n")
        out.write(f"styles ({len(info['styles'])})    {', '.join(info['styles'])}\n")
        for dom in ("style", "object"):
            out.write(f"erase order {dom:6s} {', '.join(info['sequences'][dom])}\n")
            out.write(f"retain {dom:11s} {', '.join(info['retain'][dom])}\n")
