"""Output paths and atomic writes: one check for every file a command writes, temp + rename.

Every output (model, basis, PNG, report) is checked once, **before any work**, by
:func:`check_outputs` / :func:`check_output_path`: not empty, not a folder (no trailing ``/``),
not a symbolic link (refused, never replaced or written through: a link may point at an input or at
a file the user did not mean to overwrite), not an input, not existing unless ``--force``, in an
existing writable folder (probed by creating and removing the temporary file itself, so ``/proc``,
read-only mounts and EACCES fail before the work starts).

Writes go through :func:`atomic_path`: the data goes to ``.<name>.cu-tmp-<pid>`` beside the target,
is fsynced and renamed onto it; the temp is removed on every failure path (exceptions and Ctrl-C
alike), so no partial output ever appears under the final name. A SIGKILL cannot run cleanup, so
before writing, temps of the same output left by dead processes are removed with a warning. An
``OSError`` while writing (ENOSPC, EIO, EACCES) becomes a one-line :class:`CuError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.log import get_logger

log = get_logger(__name__)
TMP_MARK = ".cu-tmp-"


def temp_path(path: str, pid: int | None = None) -> str:
    """The temporary name used while writing ``path``: ``<dir>/.<name>.cu-tmp-<pid>``."""
    d, name = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{name}{TMP_MARK}{os.getpid() if pid is None else pid}")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def stale_temps(path: str) -> list[tuple[str, int]]:
    """(temp path, pid) of leftover temps of ``path`` whose writer is no longer alive.

    Matches this module's ``.<name>.cu-tmp-<pid>`` and the older ``<name>.tmp-<pid>`` spelling.
    """
    d, name = os.path.split(os.path.abspath(path))
    pat = re.compile(rf"^(?:\.{re.escape(name)}{re.escape(TMP_MARK)}|{re.escape(name)}\.tmp-)(\d+)$")
    try:
        entries = os.listdir(d)
    except OSError:
        return []
    found = []
    for e in entries:
        m = pat.match(e)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            found.append((os.path.join(d, e), int(m.group(1))))
    return sorted(found)


def remove_stale_temps(path: str) -> list[str]:
    """Remove temps of ``path`` left by dead processes (SIGKILL, power loss); warn for each."""
    removed = []
    for tmp, pid in stale_temps(path):
        with contextlib.suppress(OSError):
            os.remove(tmp)
            removed.append(tmp)
            log.warning("removed stale temporary file %s left by an interrupted cu run (pid %d, "
                        "no longer running)", tmp, pid)
    return removed


def _os_error(e: OSError, path: str, doing: str) -> CuError:
    reason = e.strerror or str(e)
    hint = "free some disk space" if e.errno in (errno.ENOSPC, errno.EDQUOT) else None
    return CuError(f"{doing} {path} failed: {reason}", hint=hint)


def check_output_path(out: str, force: bool, inputs: list[str] | tuple[str, ...] = (),
                      flag: str = "-o/--out") -> str:
    """Validate one output path before any work; returns it absolute (see the module doc)."""
    if out is None or not str(out).strip():
        raise UsageError(f"{flag} is empty; give a file path")
    out = str(out)
    if out.endswith(("/", os.sep)):
        raise UsageError(f"{flag} {out} ends with '/': give a file path, not a folder")
    out_abs = os.path.abspath(out)
    if os.path.islink(out):
        raise UsageError(f"{flag} {out} is a symbolic link; cu does not replace or write through "
                         "links: give the real path")
    for inp in inputs:
        if not inp:
            continue
        same = os.path.abspath(inp) == out_abs or os.path.realpath(inp) == os.path.realpath(out)
        with contextlib.suppress(OSError):
            same = same or (os.path.exists(inp) and os.path.exists(out_abs)
                            and os.path.samefile(inp, out_abs))
        if same:
            raise UsageError(f"{flag} {out} is also an input; choose another path")
    if os.path.isdir(out_abs):
        raise UsageError(f"{flag} {out} is a directory; give a file path")
    if os.path.lexists(out_abs) and not force:
        raise UsageError(f"{flag} {out} exists; pass --force to overwrite it")
    if os.path.exists(out_abs) and not os.path.isfile(out_abs):
        raise UsageError(f"{flag} {out} exists and is not a regular file")
    parent = os.path.dirname(out_abs) or "."
    if not os.path.isdir(parent):
        raise CuError(f"output folder {parent} does not exist (for {flag} {out})")
    probe = temp_path(out_abs)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.remove(probe)
    except FileExistsError:
        pass  # our own temp from an earlier write in this process: the folder is writable
    except OSError as e:
        raise CuError(f"cannot write {flag} {out}: {e.strerror or e} ({parent})")
    return out_abs


def check_outputs(outputs: dict[str, str | None], force: bool,
                  inputs: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    """Check several outputs at once (``{flag: path}``, ``None`` skipped); no two may coincide."""
    done: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        p = check_output_path(path, force, inputs, flag=flag)
        for other_flag, other in done.items():
            if other == p:
                raise UsageError(f"{flag} and {other_flag} name the same file {path}")
        done[flag] = p
    return done


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path; on success fsync it and rename it onto ``path``."""
    remove_stale_temps(path)
    tmp = temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise _os_error(e, path, "writing") from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def check_output_dir(out: str, force: bool, inputs: list[str] | tuple[str, ...] = (),
                     flag: str = "-o/--out") -> str:
    """Validate an output *folder* (``cu export diffusers``) before any work; returns it absolute.

    Refused: empty, a symbolic link, an input (or a folder holding one, or inside one), an
    existing file, an existing folder unless ``--force`` (and even then only one cu wrote: it
    holds ``cu.json``), a missing or unwritable parent.
    """
    if out is None or not str(out).strip():
        raise UsageError(f"{flag} is empty; give a folder path")
    out = str(out).rstrip("/") or "/"
    out_abs = os.path.abspath(out)
    if os.path.islink(out):
        raise UsageError(f"{flag} {out} is a symbolic link; cu does not replace or write through "
                         "links: give the real path")
    real = os.path.realpath(out_abs)
    for inp in inputs:
        if not inp:
            continue
        ri = os.path.realpath(inp)
        if ri == real or ri.startswith(real + os.sep) or real.startswith(ri + os.sep):
            raise UsageError(f"{flag} {out} is, holds or lies inside the input {inp}; choose "
                             "another folder")
    if os.path.lexists(out_abs):
        if not os.path.isdir(out_abs):
            raise UsageError(f"{flag} {out} exists and is not a folder")
        if not force:
            raise UsageError(f"{flag} {out} exists; pass --force to replace it")
        if not os.path.exists(os.path.join(out_abs, "cu.json")):
            raise UsageError(f"{flag} {out} exists and was not written by cu export (no cu.json); "
                             "cu replaces only its own folders, even with --force")
    parent = os.path.dirname(out_abs) or "."
    if not os.path.isdir(parent):
        raise CuError(f"output folder {parent} does not exist (for {flag} {out})")
    probe = temp_path(out_abs)
    try:
        os.mkdir(probe)
        os.rmdir(probe)
    except FileExistsError:
        pass
    except OSError as e:
        raise CuError(f"cannot write {flag} {out}: {e.strerror or e} ({parent})")
    return out_abs


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a temporary folder beside ``path``; on success rename it onto ``path`` (an existing
    ``path``, allowed by :func:`check_output_dir` with ``--force``, is moved aside first and
    removed after the rename). The temporary folder is removed on every failure path."""
    import shutil

    for tmp_old, pid in stale_temps(path):
        if os.path.isdir(tmp_old):
            shutil.rmtree(tmp_old, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.remove(tmp_old)
        log.warning("removed stale temporary %s left by an interrupted cu run (pid %d, no longer "
                    "running)", tmp_old, pid)
    tmp = temp_path(path)
    if os.path.lexists(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.mkdir(tmp)
        yield tmp
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        old = None
        if os.path.isdir(path):
            old = temp_path(path, pid=os.getpid()) + "-old"
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(e, path, "writing") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def open_temp(tmp: str):
    """Open a temp file of :func:`atomic_path` for writing (binary). Every writer opens its temp
    file here, so the fault tests reach all of them."""
    return open(tmp, "wb")


def atomic_write_bytes(path: str, chunks) -> None:
    """Write an iterable of byte strings to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open_temp(tmp) as f:
            for c in chunks:
                f.write(c)
            f.flush()


def read_error(e: OSError, path: str) -> CuError:
    """A one-line error for an ``OSError`` while reading ``path`` (EIO, EACCES, …)."""
    return _os_error(e, path, "reading")


def cache_root() -> str:
    """``$CU_CACHE_DIR``, else ``$XDG_CACHE_HOME/cu`` (``~/.cache/cu``)."""
    if os.environ.get("CU_CACHE_DIR"):
        return os.environ["CU_CACHE_DIR"]
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "cu")
