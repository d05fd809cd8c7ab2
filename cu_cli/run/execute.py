"""Execute a study step by step, resumably (``cu run``'s Python API).

Each step's outputs are written atomically by the commands' own APIs (erase, merge, eval, drift),
so a killed run loses at most the step in progress. An existing output is reused only when it
provably matches the planned step: an erase output's lineage key equals the plan key (config +
inputs, erase/plan.py); a merge output's parents and parameters equal the planned ones; a
cached evaluation's key covers the state's payload hash and the evaluation settings. Otherwise the
run stops and names the first field that differs, unless ``force`` (then that step and every
later one are recomputed). The reference code silently reused stale outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.fs import atomic_path
from cu_cli._util.log import get_logger
from cu_cli.run.steps import Step, expand
from cu_cli.run.study import eval_due

log = get_logger(__name__)


def _erase_request(study, step: Step, argv):
    from cu_cli.erase.options import build_config
    from cu_cli.erase.plan import EraseRequest

    values = dict(study.erase)
    if step.kind:
        values["kind"] = step.kind
    if step.anchor is not None:
        values["anchor"] = step.anchor
    cfg, _ = build_config(values, {}, where=f"{study.path}: erase")
    return EraseRequest(concepts=list(step.concepts), out=step.out, cfg=cfg,
                        base=None if step.parent else study.base, base_config=study.base_config,
                        parent=step.parent, basis=step.basis, seed=study.seed,
                        device=study.device, force=True, argv=argv)


def first_difference(recorded: dict, planned: dict, prefix: str = "") -> str | None:
    """The first key path where two identity dicts differ, with both values."""
    for key in sorted(set(recorded) | set(planned)):
        a, b = recorded.get(key), planned.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            d = first_difference(a, b, f"{prefix}{key}.")
            if d:
                return d
        elif a != b:
            return f"{prefix}{key} (file: {a!r}, planned: {b!r})"
    return None


def _reusable_erase(plan, force: bool) -> bool:
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.erase.options import identity_config

    if not os.path.exists(plan.out):
        return False
    step = open_checkpoint(plan.out).json("cu.lineage", [{}])[-1]
    if step.get("key") == plan.key():
        return True
    if force:
        return False
    ident = plan.identity()
    recorded = {k: step.get(k) for k in ident}
    recorded["config"] = identity_config(recorded.get("config") or {})
    recorded["op"] = step.get("op")
    diff = first_difference(recorded, ident) or "the plan key"
    raise CuError(f"{plan.out} exists but does not match the planned step: {diff}",
                  hint="pass --force to recompute from this step on")


def _erase(study, step: Step, force: bool, argv) -> tuple[str, str]:
    """(payload hash, plan key) of step k's erase (reused, or computed from the same plan)."""
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.erase.plan import plan_erase
    from cu_cli.erase.run import run_erase

    if step.basis:
        _basis(study, step, force)
    req = _erase_request(study, step, argv)
    plan = plan_erase(req)
    if _reusable_erase(plan, force):
        return open_checkpoint(step.out).payload_sha256, plan.key()
    return run_erase(req, plan=plan).payload_sha256, plan.key()


def _erase_seconds(path: str) -> float | None:
    """The erase's wall time as its lineage recorded it (None for files without it)."""
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.ckpt.lineage import step_measured

    sec = step_measured(open_checkpoint(path).json("cu.lineage", [{}])[-1]).get("wall_seconds")
    return None if sec is None else round(float(sec), 2)


def _basis(study, step: Step, force: bool) -> None:
    from cu_cli.basis.run import BasisRequest, run_basis
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.ckpt.format import read_cu_header

    parent = open_checkpoint(step.parent).payload_sha256 if step.parent else None
    if os.path.exists(step.basis):
        h = read_cu_header(step.basis, kind="basis")
        made = (h.metadata.get("cu.basis.target"), (h.json("cu.basis.params", {}) or {}).get(
            "parent"), (h.json("cu.basis.params", {}) or {}).get("top_m"))
        want = (step.label, parent, study.project_basis.get("top_m", 200))
        if made == want:
            return
        if not force:
            raise CuError(f"{step.basis} exists but was built for another step "
                          f"(target, parent, top_m) {made} vs planned {want}",
                          hint="pass --force to recompute from this step on")
    opts = dict(study.project_basis)
    os.makedirs(os.path.dirname(step.basis), exist_ok=True)
    run_basis(BasisRequest(target=step.label, out=step.basis, parent=step.parent,
                           base=None if step.parent else study.base,
                           base_config=study.base_config, device=study.device, force=True,
                           kind=opts.get("kind") or step.kind, vocab=opts.get("vocab"),
                           top_m=int(opts.get("top_m", 200)), min_sim=opts.get("min_sim"),
                           aux_max_sim=opts.get("aux_max_sim")))


def _merge(study, step: Step, force: bool, argv) -> str:
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.merge.compute import MergeRequest, run_merge
    from cu_cli.models.base import base_for_states

    m = study.merge
    method = m.get("method", "ties")
    parents = [open_checkpoint(p).payload_sha256 for p in step.merge_inputs]
    if os.path.exists(step.state):
        h = open_checkpoint(step.state)
        params = h.json("cu.lineage", [{}])[-1].get("params", {})
        dens = m.get("density")
        if (h.json("cu.parents", []) == parents and params.get("method") == method
                and params.get("lambda") == float(m.get("lambda", 1.0))
                and (dens is None or set(params.get("densities") or []) == {float(dens)})):
            return h.payload_sha256
        if not force:
            raise CuError(f"{step.state} exists but merges other inputs or parameters",
                          hint="pass --force to recompute from this step on")
    os.makedirs(os.path.dirname(step.state), exist_ok=True)
    base = base_for_states(list(step.merge_inputs), study.base, study.base_config)
    dens = m.get("density")
    res = run_merge(MergeRequest(
        paths=step.merge_inputs, base=base, out=step.state, method=method,
        lam=m.get("lambda"), densities=None if dens is None else (float(dens),),
        keys=m.get("keys"), force=True, argv=argv))
    return res.payload_sha256


def eval_settings(study) -> dict:
    e = study.eval
    return {"protocol": e.get("protocol"), "seeds": e.get("seeds"), "steps": e.get("steps"),
            "guidance": e.get("guidance"), "classifier": e.get("classifier"),
            "cra_scope": e.get("cra_scope", "all"), "device": study.device,
            **({"seed_shift": e["seed_shift"]} if e.get("seed_shift") else {})}


def _evaluate(study, step: Step, payload: str, out_dir: str) -> tuple[dict, float | None]:
    """(metrics, seconds the evaluation took) of state k (cached under DIR/evals/ by payload +
    settings, with its time, so a resumed run reports what the step cost, not the reuse)."""
    settings = eval_settings(study)
    key = "sha256:" + hashlib.sha256(json.dumps({"payload": payload, **settings},
                                                sort_keys=True).encode()).hexdigest()
    path = os.path.join(out_dir, "evals", f"{step.k:02d}.json")
    if os.path.exists(path):
        with open(path) as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["metrics"], cached.get("seconds")
    t0 = time.time()
    if isinstance(settings["protocol"], list):
        metrics = _evaluate_mixed(study, step, settings)
    else:
        metrics = _eval_one(study, step, settings, settings["protocol"], None)
    seconds = round(time.time() - t0, 2)
    write_json(path, {"key": key, "metrics": metrics, "seconds": seconds})
    return metrics, seconds


def _eval_one(study, step: Step, settings: dict, protocol, erased) -> dict:
    from cu_cli.evaluate.run import EvalRequest, run_eval

    res = run_eval(EvalRequest(
        states=[step.state], base=study.base,
        base_config=study.base_config, protocol=protocol, seeds=settings["seeds"],
        seed_shift=settings.get("seed_shift", 0),
        steps=settings["steps"], guidance=settings["guidance"], classifier=settings["classifier"],
        cra_scope=settings["cra_scope"], device=study.device, erased=erased))
    metrics = res.states[0]["metrics"]
    metrics["protocol"] = res.protocol
    metrics["erased"] = res.states[0]["erased"]  # in the protocol's spelling, its domain only
    return metrics


def _evaluate_mixed(study, step: Step, settings: dict) -> dict:
    """A stream that mixes domains (``eval.protocol`` a list): the state is scored on each
    protocol with its erased concepts of that protocol's domain (none: UA is undefined there, RA
    still measured). Combined: UA = 100 − the mean accuracy of every erased concept (each scored
    by its own domain's protocol), RA-I / RA-C = the mean of the protocols' RA-I / RA-C;
    ``per_concept`` takes each concept from the protocol whose domain it is. The per-protocol
    metrics stay under ``evals``."""
    from cu_cli._util.text import concept_key
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.evaluate.protocols import get_protocol

    evals, per, erased_acc = {}, {}, []
    for name in settings["protocol"]:
        m = _eval_one(study, step, settings, name, None)  # cu eval keeps its own domain
        evals[name] = {k: m[k] for k in ("ua", "ra_i", "ra_c", "per_concept", "erased")}
        erased_acc += [m["per_concept"][c] for c in m["erased"]]
        own = get_protocol(name).in_domain
        for c, v in m["per_concept"].items():
            if c in own or c not in per:
                per[c] = v
    scored = {concept_key(x) for e in evals.values() for x in e["erased"]}
    unmatched = [c for c in open_checkpoint(step.state).json("cu.erased", [])
                 if concept_key(c) not in scored]
    if unmatched:
        raise UsageError(f"{step.state}: erased {unmatched[0]!r} is in none of the protocols "
                         f"{', '.join(settings['protocol'])}")

    def mean(key):
        vals = [e[key] for e in evals.values() if e[key] is not None]
        return sum(vals) / len(vals) if vals else None

    return {"ua": 100 - sum(erased_acc) / len(erased_acc) if erased_acc else None,
            "ra_i": mean("ra_i"), "ra_c": mean("ra_c"), "per_concept": per,
            "protocol": list(settings["protocol"]), "evals": evals}


def _drift(study, step: Step, prev_state: str | None) -> dict:
    from cu_cli.drift.compute import DriftRequest, run_drift
    from cu_cli.models.base import base_for_states

    paths = [p for p in (prev_state, step.state) if p]
    base = base_for_states(paths, study.base, study.base_config)
    row = run_drift(DriftRequest(paths=paths, base=base, top=0))["states"][-1]
    return {"l2": row["l2"], "l2_vs_parent": row["l2_vs_parent"]}


def write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)


def run_study(study, out_dir: str, force: bool = False, only_step: int | None = None,
              progress=None, argv=None) -> dict:
    """Run (or resume) every step; returns the results object also written to results.json."""
    from cu_cli.ckpt.lineage import cu_version, peak_memory_mb, source_commit

    steps = expand(study, out_dir)
    if only_step is not None and not 1 <= only_step <= len(steps):
        raise UsageError(f"--only-step must be 1..{len(steps)}")
    results = {"cu_version": cu_version(), "cu_commit": source_commit(),
               "study": study.to_dict(), "steps": []}
    prev_state = None
    for step in steps:
        if only_step is not None and step.k > only_step:
            break
        t0 = time.time()
        if progress:
            progress("step", step.k, len(steps), step.label)
        os.makedirs(os.path.dirname(step.out), exist_ok=True)
        payload, plan_key = _erase(study, step, force, argv)
        t1 = time.time()
        if step.merge_inputs:
            payload = _merge(study, step, force, argv)
        row = {"k": step.k, "concept": step.label, "path": step.state, "payload_sha256": payload,
               "plan_key": plan_key, "erase_seconds": _erase_seconds(step.out)}
        rest = time.time() - t1  # merge and drift: timed here (cheap; not cached)
        if eval_due(study.eval, step.k, len(steps)):
            m, row["eval_seconds"] = _evaluate(study, step, payload, out_dir)
            row.update({"ua": m["ua"], "ra_i": m["ra_i"], "ra_c": m["ra_c"],
                        "per_concept": m["per_concept"], "protocol": m.get("protocol")})
            if "evals" in m:
                row["evals"] = m["evals"]
        t2 = time.time()
        row.update(_drift(study, step, prev_state if study.setting == "sequential" else None))
        rest += time.time() - t2
        parts = [row["erase_seconds"], row.get("eval_seconds", 0.0)]
        # what the step cost when it was computed (a resumed run reuses the recorded times)
        row["seconds"] = (round(sum(parts) + rest, 2) if None not in parts
                          else round(time.time() - t0, 2))
        row["peak_rss_mb"] = peak_memory_mb()
        results["steps"].append(row)
        write_json(os.path.join(out_dir, "results.json"), results)
        prev_state = step.state
    return results
