"""Streams, shared options and error handling for every command.

stdout carries only results (written paths, one per line; or one JSON object with ``--json``);
logs, progress and warnings go to stderr through rich. Errors print ``Error: <one line>`` and exit
with the code of their ``CuError`` class; tracebacks only with ``--debug`` or ``CU_DEBUG=1``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from cu_cli._util.errors import CuError
from cu_cli._util.signals import Interrupted
from cu_cli._util.text import safe_text

_err = None


def err_console() -> Console:
    global _err
    if _err is None:
        _err = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
    return _err


# ------------------------------------------------------------------ shared options (defined once)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors on stderr; no progress.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logging on stderr.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks (also CU_DEBUG=1).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seeds python, numpy and torch; recorded.")]
def _device(value: str) -> str:
    from cu_cli.models.precision import check_device_spelling

    try:
        return check_device_spelling(value)
    except CuError as e:
        raise typer.BadParameter(str(e).split(": ", 1)[-1], param_hint="--device")


def _dtype(value: str) -> str:
    from cu_cli.models.precision import check_dtype

    try:
        return check_dtype(value)
    except CuError as e:
        raise typer.BadParameter(str(e).split(": ", 1)[-1], param_hint="--dtype")


DeviceOpt = Annotated[str, typer.Option(
    "--device", help="auto (cuda when present, else mps, else cpu) | cpu | cuda | cuda:N | mps.",
    callback=_device)]
DtypeOpt = Annotated[str, typer.Option(
    "--dtype", help="Precision of the frozen parts: fp32 | bf16 | fp16 (forwards under "
                    "autocast; trained weights and optimizer state stay fp32; recorded).",
    callback=_dtype)]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", min=1, help="Images per sampling batch (default: by resolution and device, "
                                "e.g. 4 at 512² on a CPU, 16 on a GPU).")]
BaseOpt = Annotated[Optional[str], typer.Option(
    "--base", help="Base model: a built-in name (default minicanvas), a diffusers folder, or a "
                   "single .safetensors file with --base-config.")]
BaseConfigOpt = Annotated[Optional[str], typer.Option(
    "--base-config", help="Diffusers folder with the configs of a single-file base.")]
AllowMismatchOpt = Annotated[bool, typer.Option(
    "--allow-base-mismatch", help="Use a state made from another base (normally exit 3).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.ERROR if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("cu_cli")
    logger.handlers[:] = [RichHandler(console=err_console(), show_time=False, show_path=False,
                                      markup=False, rich_tracebacks=False)]
    logger.setLevel(level)
    logger.propagate = False


def warn(msg: str) -> None:
    err_console().print(f"Warning: {safe_text(msg)}", style="yellow", markup=False)


def print_paths(*paths: str) -> None:
    for p in paths:
        sys.stdout.write(os.path.abspath(p) + "\n")
    sys.stdout.flush()


def print_json(obj: dict, command: str) -> None:
    """One JSON object on stdout; a NaN/inf anywhere is refused (never invalid JSON on stdout)."""
    from cu_cli.ckpt.lineage import cu_version

    full = {**obj, "cu_version": cu_version(), "command": command}
    try:
        text = json.dumps(full, default=_json_default, allow_nan=False)
    except ValueError:
        where = _nonfinite_field(json.loads(json.dumps(full, default=_json_default)))
        raise CuError(f"the result has a non-finite number at {where}; refusing to print "
                      "invalid JSON")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _nonfinite_field(obj, path: str = "$") -> str:
    """JSON path of the first NaN/inf in ``obj`` (``"?"`` if none)."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _nonfinite_field(v, f"{path}.{k}" if isinstance(obj, dict) else f"{path}[{k}]")
        if found != "?":
            return found
    return "?"


def finite(param: typer.CallbackParam, value):
    """Typer callback for float options: refuse NaN/±inf (exit 2); lists are checked entrywise."""
    import math

    if value is None:
        return value
    for v in value if isinstance(value, (list, tuple)) else [value]:
        if isinstance(v, float) and not math.isfinite(v):
            name = "/".join(getattr(param, "opts", None) or []) or "value"
            raise typer.BadParameter(f"{v} is not a finite number", param_hint=name)
    return value


def check_outputs(outputs: dict, force: bool, inputs=()) -> dict:
    """All output paths of a command, checked once before any work (``_util.fs.check_outputs``)."""
    from cu_cli._util.fs import check_outputs as _check

    return _check(outputs, force, [i for i in inputs if i])


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def progress_enabled(quiet: bool) -> bool:
    return not quiet and err_console().is_terminal


def handle_errors(fn):
    """Turn ``CuError`` into ``Error: …`` + exit code, Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = bool(kwargs.get("debug")) or os.environ.get("CU_DEBUG") == "1"
        try:
            return fn(*args, **kwargs)
        except CuError as e:
            if debug:
                raise
            err_console().print(f"Error: {safe_text(e)}", markup=False, soft_wrap=True)
            if e.hint:
                err_console().print(f"Hint: {safe_text(e.hint)}", markup=False, soft_wrap=True)
            raise typer.Exit(e.exit_code)
        except (KeyboardInterrupt, Interrupted):
            err_console().print("Interrupted.", markup=False)
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except OSError as e:  # an ordinary I/O fault (EIO, EACCES, ENOSPC…), not a bug
            if debug:
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            err_console().print(f"Error: {safe_text(where)}{safe_text(e.strerror or e)}",
                                markup=False, soft_wrap=True)
            raise typer.Exit(1)
        except Exception as e:  # a bug: one line, traceback on request
            if debug:
                raise
            first = safe_text((str(e).splitlines() or [""])[0])
            err_console().print(f"Error: internal error: {type(e).__name__}: {first}",
                                markup=False, soft_wrap=True)
            err_console().print("Hint: rerun with --debug (or CU_DEBUG=1) for a traceback",
                                markup=False)
            raise typer.Exit(1)

    return wrapper


def read_lines(path: str, concepts: bool = True) -> list[str]:
    """Non-empty, non-comment lines of a UTF-8 text file (concept lists), each through
    ``clean_concept`` (``concepts=False``: only stripped); a missing, binary or huge file is exit 2."""
    from cu_cli._util.errors import UsageError
    from cu_cli._util.text import clean_concept

    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_LINES_FILE + 1)
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror or e}")
    if len(raw) > MAX_LINES_FILE:
        raise UsageError(f"{path}: file too large for a list of concepts/prompts "
                         f"(limit {MAX_LINES_FILE} bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not a UTF-8 text file (byte {e.start} is 0x{raw[e.start]:02x})")
    out = []
    for i, ln in enumerate(text.split("\n"), 1):
        ln = ln.rstrip("\r").strip()
        if not ln or ln.startswith("#"):
            continue
        out.append(clean_concept(ln, f"{path} line {i}") if concepts else ln)
    return out


MAX_LINES_FILE = 4 << 20


def print_table(headers: list[str], rows: list[list], title: str | None = None,
                stream=None) -> None:
    """A plain aligned text table on stdout (pipe-friendly; no box drawing)."""
    stream = stream or sys.stdout
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    if title:
        stream.write(title + "\n")
    stream.write("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip() + "\n")
    for r in cells:
        stream.write("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    stream.flush()


def print_table_err(headers: list[str], rows: list[list], title: str | None = None) -> None:
    """The same table on stderr (diagnostics of a command whose stdout is the written path)."""
    print_table(headers, rows, title, stream=sys.stderr)


def _fmt(v) -> str:
    from cu_cli._util.text import safe_text

    if isinstance(v, str):
        return safe_text(v)
    if v is None:
        return "-"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.4g}"
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return safe_text(v)
