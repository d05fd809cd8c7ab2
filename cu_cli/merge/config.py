"""``merge.yaml``: a mergekit-like merge recipe, validated strictly; CLI flags override it.

```yaml
method: ties            # uniform | task-arithmetic | ties (mergekit spellings linear/task_arithmetic ok)
lambda: 1.25            # λ (task-arithmetic, ties)
density: 0.8            # default density for every model (ties, task-arithmetic)
keys: 'attn2\\.to_[kv]'  # regex (re.search) restricting the merged keys
base: ./sd15            # optional; --base overrides
models:
  - path: vg.safetensors
    weight: 1.0         # w_i
    density: 0.4        # d_i, overrides the global density
  - path: pi.safetensors
```
Loaded with ``_util.yamlio.load_yaml_mapping`` (no aliases, size-bounded); unknown keys are rejected (exit 2). Relative paths are resolved
against the config file's folder. Positional checkpoints on the command line replace ``models``
(their per-model weights/densities are then dropped, with a warning).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from cu_cli._util.errors import UsageError

TOP_KEYS = {"method", "lambda", "density", "keys", "base", "models"}
MODEL_KEYS = {"path", "weight", "density"}
ALIASES = {"linear": "uniform", "task_arithmetic": "task-arithmetic"}  # mergekit names


@dataclass(frozen=True)
class ModelEntry:
    path: str
    weight: float | None = None  # None: 1, or --weight
    density: float | None = None  # None: the global density


@dataclass(frozen=True)
class MergeConfig:
    models: tuple[ModelEntry, ...] = ()  # inputs in order
    method: str | None = None  # no default: --method or the config must name one
    lam: float | None = None  # None: 1
    density: float | None = None  # None: 1 (no trimming)
    keys: str | None = None  # None: every key of every input
    base: str | None = None  # None: --base, or the base named in the first input


def _number(v, what: str, src: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UsageError(f"{src}: {what} must be a number, got {str(v)[:40]!r}")
    try:
        f = float(v)
    except OverflowError:
        f = float("inf")
    if not math.isfinite(f):
        raise UsageError(f"{src}: {what} must be a finite number, got {str(v)[:40]}")
    return f


def _unknown(d: dict, allowed: set[str], where: str, src: str) -> None:
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        raise UsageError(f"{src}: unknown key(s) {', '.join(extra)} in {where} "
                         f"(allowed: {', '.join(sorted(allowed))})")


def load_merge_config(path: str) -> MergeConfig:
    """Parse and validate a merge YAML file (exit 2 on any problem)."""
    from cu_cli._util.yamlio import load_yaml_mapping

    raw = load_yaml_mapping(path, "--config")
    _unknown(raw, TOP_KEYS, "the top level", path)
    here = os.path.dirname(os.path.abspath(path))
    models = raw.get("models") or []
    if not isinstance(models, list):
        raise UsageError(f"{path}: models must be a list of {{path, weight, density}}")
    entries = []
    for i, m in enumerate(models):
        if isinstance(m, str):
            m = {"path": m}
        if not isinstance(m, dict) or not isinstance(m.get("path"), str):
            raise UsageError(f"{path}: models[{i}] needs a path")
        _unknown(m, MODEL_KEYS, f"models[{i}]", path)
        entries.append(ModelEntry(
            path=os.path.join(here, m["path"]),
            weight=None if m.get("weight") is None else _number(m["weight"], "weight", path),
            density=None if m.get("density") is None else _number(m["density"], "density", path)))
    base = raw.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise UsageError(f"{path}: base must be a string")
        if os.path.exists(os.path.join(here, base)):
            base = os.path.join(here, base)
    method = raw.get("method")
    if method is not None and not isinstance(method, str):
        raise UsageError(f"{path}: method must be a string")
    keys = raw.get("keys")
    if keys is not None and not isinstance(keys, str):
        raise UsageError(f"{path}: keys must be a regular expression string")
    return MergeConfig(
        models=tuple(entries), method=method, keys=keys, base=base,
        lam=None if raw.get("lambda") is None else _number(raw["lambda"], "lambda", path),
        density=None if raw.get("density") is None else _number(raw["density"], "density", path))


def resolve(cfg: MergeConfig | None, paths: list[str] | None = None, method: str | None = None,
            lam: float | None = None, density: float | None = None,
            weights: list[float] | None = None, keys: str | None = None) -> tuple[dict, list[str]]:
    """Combine a config with CLI values (CLI wins) into ``MergeRequest`` fields + warnings.

    Returns ``{paths, method, lam, weights, densities, keys, base}``; ``weights``/``densities`` are
    per-model tuples or ``None`` (= not given anywhere).
    """
    cfg = cfg or MergeConfig()
    warnings = []
    if paths:
        if cfg.models:
            warnings.append("positional checkpoints replace the config's models "
                            "(their per-model weights/densities are ignored)")
        models = tuple(ModelEntry(p) for p in paths)
    else:
        models = cfg.models
    method = method or cfg.method
    if method is None:
        raise UsageError("no merge method: pass --method uniform|task-arithmetic|ties "
                         "(or method: in --config)")
    method = ALIASES.get(method, method)
    if weights:
        cw = tuple(float(w) for w in weights)
    elif any(m.weight is not None for m in models):
        cw = tuple(1.0 if m.weight is None else m.weight for m in models)
    else:
        cw = None
    d = density if density is not None else cfg.density
    if density is not None:
        cd = tuple(density for _ in models)
    elif d is not None or any(m.density is not None for m in models):
        cd = tuple(m.density if m.density is not None else (1.0 if d is None else d)
                   for m in models)
    else:
        cd = None
    return {"paths": tuple(m.path for m in models), "method": method,
            "lam": lam if lam is not None else cfg.lam, "weights": cw, "densities": cd,
            "keys": keys if keys is not None else cfg.keys, "base": cfg.base}, warnings
