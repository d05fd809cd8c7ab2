"""Lineage steps recorded in ``cu.lineage``: what produced a checkpoint, reproducibly.

Each step is ``{op, concepts, method, parents, seed, argv, cu_version, versions, device, created}``
plus either ``{config, inputs, measured, key}`` (erase: the resolved configuration, the identities
of its inputs, telemetry, and the plan key over config + inputs) or, for the other ops and for
files written before the plan step existed, ``{params, wall_seconds, peak_memory_mb}``. Readers
use :func:`step_config` / :func:`step_measured`, which accept both. A child appends its step to
its parent's list, a merge step embeds each input's lineage under ``inputs``.
"""

from __future__ import annotations

import datetime as _dt
import resource
import sys


def cu_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cu_cli")
    except PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def source_commit() -> str | None:
    """The git commit of the cu source tree in use (``+dirty`` with uncommitted changes), or None
    when cu does not run from a git checkout. Recorded in study results so a number names the
    code that made it."""
    import os
    import subprocess

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    """Versions of the numerical stack that affect results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("torch", "diffusers", "transformers", "safetensors", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def make_step(op: str, *, concepts=(), method: str | None = None, params: dict | None = None,
              parents=(), seed: int | None = None, argv: list[str] | None = None,
              device: str = "cpu", wall_seconds: float | None = None, **extra) -> dict:
    step = {
        "op": op,
        "concepts": list(concepts),
        "method": method,
        "parents": list(parents),
        "seed": seed,
        "argv": list(argv if argv is not None else sys.argv),
        "cu_version": cu_version(),
        "versions": library_versions(),
        "device": device,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if "config" not in extra:  # ops without a plan step keep the flat layout
        step["params"] = params or {}
        step["wall_seconds"] = None if wall_seconds is None else round(wall_seconds, 3)
        step["peak_memory_mb"] = peak_memory_mb()
    step.update(extra)
    return step


def step_config(step: dict) -> dict:
    """The resolved configuration of a step (``config``, or ``params`` in older files)."""
    cfg = step.get("config") or step.get("params") or {}
    return cfg if isinstance(cfg, dict) else {}


def step_measured(step: dict) -> dict:
    """Telemetry of a step (``measured``, or the top-level fields of older files)."""
    if isinstance(step.get("measured"), dict):
        return step["measured"]
    return {k: step[k] for k in ("wall_seconds", "peak_memory_mb") if k in step}
