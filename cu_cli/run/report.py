"""A study's record: ``results.csv`` (scalar columns), ``report.md`` with a table per step and
PNGs — UA / RA-I / RA-C vs request, drift vs request, the retention matrix (per-concept accuracy ×
step, which shows an erased concept coming back later: "forgetting reversal") and a sample grid of
the last state vs the base. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import os

from cu_cli._util.fs import atomic_path

COLUMNS = ["k", "concept", "ua", "ra_i", "ra_c", "l2", "l2_vs_parent", "seconds", "erase_seconds",
           "eval_seconds", "peak_rss_mb", "payload_sha256", "plan_key", "path"]


def _write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def protocols(results: dict) -> list[str]:
    """The protocols of a mixed-domain study's per-protocol scores (``evals``), in order."""
    names: list[str] = []
    for s in results["steps"]:
        names += [n for n in (s.get("evals") or {}) if n not in names]
    return names


def write_csv(results: dict, path: str) -> None:
    """One row per step; a mixed-domain study adds ``ua@PROTOCOL`` etc. after the combined ones."""
    extra = [(f"{m}@{p}", p, m) for p in protocols(results) for m in ("ua", "ra_i", "ra_c")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS + [c for c, _, _ in extra])
    for s in results["steps"]:
        ev = s.get("evals") or {}
        w.writerow(["" if s.get(c) is None else s.get(c) for c in COLUMNS]
                   + ["" if (ev.get(p) or {}).get(m) is None else ev[p][m] for _, p, m in extra])
    _write_text(path, buf.getvalue())


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))


def retention(results: dict) -> tuple[list[str], list[list]]:
    """Concepts (erased in order, then retained) × steps of per-concept accuracy."""
    erased = [s["concept"] for s in results["steps"]]
    others = []
    for s in results["steps"]:
        for c in (s.get("per_concept") or {}):
            if c not in erased and c not in others:
                others.append(c)
    concepts = erased + others
    return concepts, [[(s.get("per_concept") or {}).get(c) for s in results["steps"]]
                      for c in concepts]


def _plots(results: dict, out_dir: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    steps = results["steps"]
    ks = [s["k"] for s in steps]
    made = []
    fig, ax = plt.subplots(figsize=(6.5, 3.6), dpi=120)
    for key, name, style in (("ua", "UA", "o-"), ("ra_i", "RA-I", "s-"), ("ra_c", "RA-C", "^-")):
        ax.plot(ks, [np.nan if s.get(key) is None else s[key] for s in steps], style, label=name)
    ax.set(xlabel="request", ylabel="%", ylim=(-2, 102), title=results["study"]["name"])
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    made.append(_save(fig, plt, os.path.join(out_dir, "metrics.png")))
    fig, ax = plt.subplots(figsize=(6.5, 3.2), dpi=120)
    ax.plot(ks, [s["l2"] for s in steps], "o-", label="‖θ−θ_base‖")
    ax.plot(ks, [np.nan if s.get("l2_vs_parent") is None else s["l2_vs_parent"] for s in steps],
            "s--", label="‖θ−θ_parent‖")
    ax.set(xlabel="request", ylabel="L2 drift")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    made.append(_save(fig, plt, os.path.join(out_dir, "drift.png")))
    concepts, rows = retention(results)
    if concepts:
        M = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
        fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(ks), 1.0 + 0.28 * len(concepts)),
                               dpi=120)
        im = ax.imshow(M, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(ks)), [str(k) for k in ks])
        ax.set_yticks(range(len(concepts)), concepts, fontsize=7)
        ax.set(xlabel="after request", title="accuracy % per concept")
        fig.colorbar(im, ax=ax, fraction=0.04)
        made.append(_save(fig, plt, os.path.join(out_dir, "retention.png")))
    return made


def _save(fig, plt, path: str) -> str:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return os.path.basename(path)


def write_report(results: dict, out_dir: str, grid: str | None = None) -> None:
    """results.csv, the PNGs and report.md under ``out_dir``."""
    write_csv(results, os.path.join(out_dir, "results.csv"))
    pngs = _plots(results, out_dir) if results["steps"] else []
    st = results["study"]
    lines = [f"# Study {st['name']}", "",
             f"Setting **{st['setting']}**, base `{st['base'] or 'minicanvas'}`, seed {st['seed']}, "
             f"{len(st['requests'])} requests; erase options {st['erase'] or '(defaults)'}"
             + (f"; merge {st['merge']}" if st["setting"] == "independent" else "")
             + (f"; projection basis {st['project_basis']}" if st["project_basis"] else "")
             + f". cu {results['cu_version']}.", "",
             "| k | concept | UA | RA-I | RA-C | ‖θ−θ₀‖ | ‖θ−θ_parent‖ | s | payload |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in results["steps"]:
        lines.append(f"| {s['k']} | {s['concept']} | {_fmt(s.get('ua'))} | {_fmt(s.get('ra_i'))} "
                     f"| {_fmt(s.get('ra_c'))} | {s['l2']:.3f} | {_fmt(s.get('l2_vs_parent'))} | "
                     f"{s['seconds']:.0f} | `{s['payload_sha256'][7:19]}` |")
    names = protocols(results)
    if names:
        lines += ["", "Per protocol (each scored on the state's erased concepts of its domain; "
                  "the table above: UA over every erased concept, RA-I / RA-C the protocols' "
                  "mean), UA / RA-I / RA-C:", "",
                  "| k | concept | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for s in results["steps"]:
            ev = s.get("evals") or {}
            cells = [" / ".join(_fmt((ev.get(n) or {}).get(m)) for m in ("ua", "ra_i", "ra_c"))
                     if n in ev else "" for n in names]
            lines.append(f"| {s['k']} | {s['concept']} | " + " | ".join(cells) + " |")
    concepts, rows = retention(results)
    if concepts:
        lines += ["", "Retention matrix (accuracy % of each concept after each request; the "
                  "first rows are the erased concepts in order):", "",
                  "| concept | " + " | ".join(str(s["k"]) for s in results["steps"]) + " |",
                  "|---|" + "---|" * len(results["steps"])]
        lines += [f"| {c} | " + " | ".join(_fmt(v) for v in r) + " |"
                  for c, r in zip(concepts, rows)]
    lines += [""] + [f"![{p}]({p})" for p in pngs + ([os.path.basename(grid)] if grid else [])]
    _write_text(os.path.join(out_dir, "report.md"), "\n".join(lines) + "\n")
