"""UnlearnCanvas metrics (method-notes §10.1) with 95 % intervals.

acc(c) = 100·#correct/#images of concept c (primary classifier for in-domain concepts, secondary for
cross-domain ones). UA = 100 − mean_{c ∈ erased} acc(c); RA-I = mean acc over the in-domain retain
set; RA-C = mean secondary accuracy over the cross-domain retain set (by default over every grid
image, including those whose prompt names an erased concept, as the reference does; ``clean``
scope excludes them). Per-concept intervals are Wilson score intervals; a mean over concepts gets
mean ± 1.96·sqrt(Σ p_c(1−p_c)/n_c)/C (normal approximation), clipped to [0, 100].
"""

from __future__ import annotations

import math


def wilson(k: int, n: int, z: float = 1.96) -> list[float] | None:
    if n == 0:
        return None
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def mean_ci(counts: list[tuple[int, int]], z: float = 1.96):
    """(mean %, [lo, hi]) of per-concept accuracies given (correct, n) pairs."""
    counts = [(k, n) for k, n in counts if n > 0]
    if not counts:
        return None, None
    ps = [k / n for k, n in counts]
    m = sum(ps) / len(ps)
    se = math.sqrt(sum(p * (1 - p) / n for p, (_, n) in zip(ps, counts))) / len(ps)
    return 100 * m, [100 * max(0.0, m - z * se), 100 * min(1.0, m + z * se)]


def compute_metrics(rows: list[dict], erased: list[str], retain_in: list[str],
                    retain_cross: list[str], cra_scope: str = "all") -> dict:
    """``rows``: one per image, {concept, other, ok_primary, ok_secondary}."""
    prim: dict[str, list[int]] = {}
    sec: dict[str, list[int]] = {}
    for r in rows:
        p = prim.setdefault(r["concept"], [0, 0])
        p[0] += int(r["ok_primary"])
        p[1] += 1
        if cra_scope == "clean" and r["concept"] in erased:
            continue
        s = sec.setdefault(r["other"], [0, 0])
        s[0] += int(r["ok_secondary"])
        s[1] += 1
    per = {c: 100 * k / n for c, (k, n) in prim.items()}
    per.update({c: 100 * k / n for c, (k, n) in sec.items() if c not in per})
    ci = {c: wilson(k, n) for c, (k, n) in {**sec, **prim}.items()}
    n_images = {c: n for c, (_, n) in {**sec, **prim}.items()}
    erased_acc, erased_ci = mean_ci([tuple(prim[c]) for c in erased if c in prim])
    ra_i, ra_i_ci = mean_ci([tuple(prim[c]) for c in retain_in if c in prim])
    ra_c, ra_c_ci = mean_ci([tuple(sec[c]) for c in retain_cross if c in sec])
    ua = None if erased_acc is None else 100 - erased_acc
    return {
        "ua": ua, "ra_i": ra_i, "ra_c": ra_c,
        "per_concept": per,
        "ci95": {"ua": None if erased_ci is None else [100 - erased_ci[1], 100 - erased_ci[0]],
                 "ra_i": ra_i_ci, "ra_c": ra_c_ci, "per_concept": ci},
        "n_images": n_images,
        "cra_scope": cra_scope,
    }


def parse_gates(spec: str | None) -> dict[str, float]:
    """``"ua=95,ra_i=90"`` -> {"ua": 95.0, "ra_i": 90.0}."""
    from cu_cli._util.errors import UsageError

    if not spec:
        return {}
    gates = {}
    for part in spec.split(","):
        key, _, val = part.strip().partition("=")
        key = key.strip().lower().replace("-", "_")
        if key not in ("ua", "ra_i", "ra_c") or not val:
            raise UsageError(f"--fail-under {part!r}: use ua=N, ra_i=N, ra_c=N")
        try:
            gates[key] = float(val)
        except ValueError:
            raise UsageError(f"--fail-under {part!r}: {val!r} is not a number")
        if not math.isfinite(gates[key]):
            raise UsageError(f"--fail-under {part!r}: the threshold must be a finite number")
    return gates


def check_gates(states: list[dict], gates: dict[str, float]) -> list[str]:
    """Failure messages (empty = all pass); a gate on an undefined metric is an error."""
    from cu_cli._util.errors import UsageError

    failures = []
    scored = [s for s in states if s["path"] is not None] or states  # the base row is context
    for s in scored:
        for key, thr in gates.items():
            v = s["metrics"][key]
            if v is None:
                raise UsageError(f"--fail-under {key}: {key} is undefined for "
                                 f"{s['path'] or 'the base'} (nothing erased)")
            if not math.isfinite(v):  # never let a non-number pass a gate
                failures.append(f"{s['path'] or 'base'}: {key} is {v} (not a number)")
            elif v < thr:
                failures.append(f"{s['path'] or 'base'}: {key} {v:.2f} < {thr:g}")
    return failures
