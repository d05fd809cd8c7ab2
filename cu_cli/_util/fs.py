"""Atomic file writing: write ``<out>.tmp-<pid>`` beside the target, fsync, ``os.replace``.

The temporary file is removed on every failure path (exceptions and Ctrl-C alike), so an existing
file is never left half-written and no partial output appears under the final name.
"""

from __future__ import annotations

import contextlib
import os

from cu_cli._util.errors import CuError, UsageError


def check_output_path(out: str, force: bool, inputs: list[str] | tuple[str, ...] = ()) -> str:
    """Validate an output path before any work: not an input, not existing unless ``force``."""
    out_abs = os.path.abspath(out)
    for inp in inputs:
        if inp and os.path.exists(inp) and os.path.exists(out_abs) and os.path.samefile(inp, out_abs):
            raise UsageError(f"output {out} is also an input; choose another -o path")
        if inp and os.path.abspath(inp) == out_abs:
            raise UsageError(f"output {out} is also an input; choose another -o path")
    if os.path.isdir(out_abs):
        raise UsageError(f"output {out} is a directory; give a file path")
    if os.path.exists(out_abs) and not force:
        raise UsageError(f"output {out} exists; pass --force to overwrite it")
    parent = os.path.dirname(out_abs) or "."
    if not os.path.isdir(parent):
        raise CuError(f"output directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise CuError(f"output directory {parent} is not writable")
    return out_abs


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path; on success fsync it and rename it onto ``path``."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: str, chunks) -> None:
    """Write an iterable of byte strings to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)


def cache_root() -> str:
    """``$CU_CACHE_DIR``, else ``$XDG_CACHE_HOME/cu`` (``~/.cache/cu``)."""
    if os.environ.get("CU_CACHE_DIR"):
        return os.environ["CU_CACHE_DIR"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "cu")
