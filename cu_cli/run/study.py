"""Study files for ``cu run``: what to erase, in which order and setting, and how to measure it.

```yaml
name: minicanvas-styles-baseline   # optional; default: the file's stem
base: minicanvas                   # a built-in name or a path (relative to this file)
setting: sequential                # sequential | independent | simultaneous
seed: 42
sequence: minicanvas-style         # a protocol's erase order (or `requests:` below)
first: 12                          # use the first N of the sequence (default: all)
requests:                          # explicit requests instead of `sequence:`
  - concept: neon stripes
    kind: style                    # optional; anchor: optional
erase: {l2: 2500}                  # any `cu erase` option (YAML keys of `cu erase --config`)
project_basis: {top_m: 50}         # optional: a `cu project-basis` from each parent (projection)
merge: {method: ties, lambda: 1.25, density: 0.8}   # independent: merge of states 1..k
eval: {protocol: minicanvas-style, seeds: 10, steps: 25, every: 1}   # seed_shift: N (held out)
```
``eval.protocol`` may be a list (a stream that mixes styles and objects): each state is scored on
every listed protocol with the state's erased concepts of that protocol's domain (execute.py).
Settings (Lee et al., arXiv 2511.07970): **sequential** — request k erases from state k−1;
**independent** — each request from the base, state k = the merge of requests 1..k;
**simultaneous** — state k = one erase of {1..k} from the base (the paper's upper reference).
A sequential study whose ``erase:`` block is empty or absent (and no ``cu run --set``) erases with
``preset: auto`` — the base's world's chain preset where it has one (erase/presets.py); give any
option, e.g. ``erase: {preset: none}``, to get ``cu erase``'s single-request defaults instead.
Unknown keys and wrong types exit 2 naming the key's path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from cu_cli._util.errors import UsageError

SETTINGS = ("sequential", "independent", "simultaneous")
TOP_KEYS = {"name", "base", "base_config", "setting", "seed", "sequence", "first", "requests",
            "erase", "project_basis", "merge", "eval", "device"}
REQUEST_KEYS = {"concept", "kind", "anchor"}
MERGE_KEYS = {"method", "lambda", "density", "keys"}
EVAL_KEYS = {"protocol", "seeds", "seed_shift", "steps", "guidance", "classifier", "every", "at",
             "cra_scope"}
BASIS_KEYS = {"top_m", "vocab", "aux_max_sim", "min_sim", "kind"}


@dataclass(frozen=True)
class Request:
    concept: str
    kind: str | None = None
    anchor: str | None = None


@dataclass(frozen=True)
class Study:
    path: str
    name: str
    base: str | None
    base_config: str | None
    setting: str
    seed: int
    requests: tuple[Request, ...]
    erase: dict  # raw `cu erase` options (validated by erase.options.build_config)
    merge: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    project_basis: dict | None = None
    device: str = "cpu"

    def to_dict(self) -> dict:
        return {"name": self.name, "base": self.base, "setting": self.setting, "seed": self.seed,
                "requests": [r.__dict__ for r in self.requests], "erase": self.erase,
                "merge": self.merge, "eval": self.eval, "project_basis": self.project_basis,
                "device": self.device}


def _check_keys(d, allowed: set[str], where: str | None, src: str) -> dict:
    """``d`` itself when it is a mapping of allowed keys; ``where`` = its key path (None: top)."""
    if not isinstance(d, dict):
        raise UsageError(f"{src}: {where or 'the study'} must be a mapping")
    extra = sorted(str(k) for k in d if k not in allowed)
    if extra:
        path = f"{where}.{extra[0]}" if where else extra[0]
        raise UsageError(f"{src}: unknown key {path} (allowed: {', '.join(sorted(allowed))})")
    return d


def _typed(v, typ, where: str, src: str):
    if v is None:
        return None
    if typ is int and (isinstance(v, bool) or not isinstance(v, int)):
        raise UsageError(f"{src}: {where} must be an integer, got {v!r}")
    if typ is str and not isinstance(v, str):
        raise UsageError(f"{src}: {where} must be text, got {v!r}")
    return v


def load_study(path: str, overrides: dict | None = None) -> Study:
    """Parse and validate a study file; ``overrides`` (``cu run --set``) update its erase options."""
    from cu_cli.erase.options import build_config, load_config_file

    raw = load_config_file(path)
    _check_keys(raw, TOP_KEYS, None, path)
    here = os.path.dirname(os.path.abspath(path))
    setting = _typed(raw.get("setting", "sequential"), str, "setting", path)
    if setting not in SETTINGS:
        raise UsageError(f"{path}: setting {setting!r}: choose one of {', '.join(SETTINGS)}")
    erase = dict(_check_keys(raw.get("erase") or {}, _erase_keys(), "erase", path))
    erase.update(overrides or {})
    if setting == "sequential" and not erase:  # the user gave nothing: a chain's defaults
        erase = {"preset": "auto"}
    build_config(erase, {}, where=f"{path}: erase")  # types and ranges, exit 2 on a bad one
    base = _typed(raw.get("base"), str, "base", path)
    if base and os.path.exists(os.path.join(here, base)):
        base = os.path.join(here, base)
    return Study(
        path=os.path.abspath(path),
        name=_typed(raw.get("name"), str, "name", path) or os.path.splitext(
            os.path.basename(path))[0],
        base=base, base_config=_typed(raw.get("base_config"), str, "base_config", path),
        setting=setting, seed=_typed(raw.get("seed", 42), int, "seed", path),
        requests=_requests(raw, path), erase=erase,
        merge=dict(_check_keys(raw.get("merge") or {}, MERGE_KEYS, "merge", path)),
        eval=_eval_section(raw, path),
        project_basis=(None if raw.get("project_basis") is None else dict(
            _check_keys(raw["project_basis"], BASIS_KEYS, "project_basis", path))),
        device=_typed(raw.get("device", "cpu"), str, "device", path))


def _eval_section(raw: dict, path: str) -> dict:
    """``eval:`` keys; ``at`` is a list of request numbers (1-based) evaluated besides the last."""
    ev = dict(_check_keys(raw.get("eval") or {}, EVAL_KEYS, "eval", path))
    proto = ev.get("protocol")
    if isinstance(proto, list):
        from cu_cli.evaluate.protocols import PROTOCOLS

        if not proto or not all(isinstance(p, str) and p in PROTOCOLS for p in proto) or len(
                set(proto)) != len(proto):
            raise UsageError(f"{path}: eval.protocol: expected a protocol name or a list of "
                             f"distinct names from {', '.join(PROTOCOLS)}, got {proto!r}")
    elif proto is not None:
        _typed(proto, str, "eval.protocol", path)
    if "seed_shift" in ev and (_typed(ev["seed_shift"], int, "eval.seed_shift", path) or 0) < 0:
        raise UsageError(f"{path}: eval.seed_shift must be >= 0, got {ev['seed_shift']!r}")
    at = ev.get("at")
    if at is not None and (not isinstance(at, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in at)):
        raise UsageError(f"{path}: eval.at: expected a list of request numbers >= 1, got {at!r}")
    return ev


def eval_due(ev: dict, k: int, n: int) -> bool:
    """Whether state k of n is evaluated: ``at`` lists the requests (plus the last); otherwise
    every ``every``-th state and the last (``every: 0``: none)."""
    if "at" in ev:
        return k in ev["at"] or k == n
    every = int(ev.get("every", 1))
    return bool(every) and (k % every == 0 or k == n)


def _erase_keys() -> set[str]:
    from cu_cli.erase.options import FIELDS

    return set(FIELDS)


def _requests(raw: dict, path: str) -> tuple[Request, ...]:
    if ("sequence" in raw) == ("requests" in raw):
        raise UsageError(f"{path}: give exactly one of sequence: or requests:")
    if "sequence" in raw:
        from cu_cli.evaluate.protocols import get_protocol

        order = get_protocol(_typed(raw["sequence"], str, "sequence", path)).erase_order
        first = _typed(raw.get("first", len(order)), int, "first", path)
        if not 1 <= first <= len(order):
            raise UsageError(f"{path}: first must be 1..{len(order)}")
        return tuple(Request(c) for c in order[:first])
    if "first" in raw:
        raise UsageError(f"{path}: first: applies to sequence: only")
    reqs = raw["requests"]
    if not isinstance(reqs, list) or not reqs:
        raise UsageError(f"{path}: requests must be a non-empty list")
    out = []
    for i, r in enumerate(reqs):
        if isinstance(r, str):
            r = {"concept": r}
        _check_keys(r, REQUEST_KEYS, f"requests[{i}]", path)
        concept = _typed(r.get("concept"), str, f"requests[{i}].concept", path)
        if not concept or not concept.strip():
            raise UsageError(f"{path}: requests[{i}] needs a concept")
        from cu_cli._util.text import clean_concept

        out.append(Request(clean_concept(concept, f"{path}: requests[{i}].concept"), _typed(r.get("kind"), str, f"requests[{i}].kind", path),
                           _typed(r.get("anchor"), str, f"requests[{i}].anchor", path)))
    return tuple(out)
