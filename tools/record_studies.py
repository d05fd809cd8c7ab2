"""Record `cu run` outputs as results pages and regenerate the summary table docs/results.md.

    python tools/record_studies.py /work/runs/minicanvas-styles-baseline [...more run dirs]

Each run dir's results.json, report.md and PNGs are copied to docs/results/studies/<name>/ (the
checkpoints are not: their payload hashes are in results.json); docs/results.md is then rebuilt
from every recorded study: UA / RA-I / RA-C / drift after requests 1, 3, 6, 12, each row naming
its study file and the command that produced it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = os.path.join(ROOT, "docs", "results", "studies")
AT = (1, 3, 6, 12)


def record(run_dir: str) -> str:
    with open(os.path.join(run_dir, "results.json")) as f:
        res = json.load(f)
    name = res["study"]["name"]
    dest = os.path.join(STUDIES, name)
    os.makedirs(dest, exist_ok=True)
    for f in ["results.json", "report.md", "results.csv"] + [
            os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "*.png"))]:
        shutil.copyfile(os.path.join(run_dir, f), os.path.join(dest, f))
    return name


def _cell(steps: dict, k: int) -> str:
    s = steps.get(k)
    if s is None or s.get("ua") is None:
        return "–"
    return f"{s['ua']:.1f} / {s['ra_i']:.1f} / {s['ra_c']:.1f} / {s['l2']:.2f}"


def _timing(steps: list[dict]) -> tuple[str, str]:
    """(study minutes, mean erase seconds per request) as recorded; "–" where unknown. Rows
    without ``erase_seconds`` come from single-pass runs, whose ``seconds`` are wall times."""
    if not any("erase_seconds" in s for s in steps):
        return f"{sum(s['seconds'] for s in steps) / 60:.1f}", "–"
    erase = [s.get("erase_seconds") for s in steps]
    per = "–" if None in erase else f"{sum(erase) / len(erase):.1f}"
    evals = [s.get("eval_seconds") for s in steps if s.get("ua") is not None]
    if None in erase or None in evals:
        return "–", per
    return f"{sum(s['seconds'] for s in steps) / 60:.1f}", per


def summary() -> str:
    rows = []
    for path in sorted(glob.glob(os.path.join(STUDIES, "*", "results.json"))):
        with open(path) as f:
            res = json.load(f)
        st = res["study"]
        steps = {s["k"]: s for s in res["steps"]}
        study_file = f"sample_requests/studies/{st['name']}.yaml"
        minutes, per_request = _timing(res["steps"])
        rows.append(f"| [{st['name']}](results/studies/{st['name']}/report.md) | {st['setting']} | "
                    + " | ".join(_cell(steps, k) for k in AT)
                    + f" | {minutes} | {per_request} | `cu run {study_file}` |")
    head = ["# Results: chains of requests on MiniCanvas", "",
            "Every number below comes from `cu run` of the named study file on MiniCanvas v3 "
            "(2-core CPU; the study page has every step, the retention matrix and plots; "
            "`results.json` there has the payload hashes). Cells: UA / RA-I / RA-C / "
            "‖θ−θ₀‖ after request k. Regenerate with `python tools/record_studies.py RUN_DIR...`.",
            "`minutes`: the whole study (erase + eval + drift of every step, as each step's "
            "lineage and evaluation recorded it; – where a resumed run lacks an evaluation's "
            "time); `s/request`: mean erase time per request as its lineage records it (in-process: "
            "model load, anchor images, training or solve, write; no interpreter start).",
            "", "| study | setting | k = 1 | k = 3 | k = 6 | k = 12 | minutes | s/request | "
            "command |", "|---|---|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows) + "\n"


def main() -> None:
    for d in sys.argv[1:]:
        print("recorded", record(d))
    text = summary()
    notes = os.path.join(ROOT, "docs", "results_notes.md")
    if os.path.exists(notes):
        text += "\n" + open(notes, encoding="utf-8").read()
    with open(os.path.join(ROOT, "docs", "results.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
