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


def summary() -> str:
    rows = []
    for path in sorted(glob.glob(os.path.join(STUDIES, "*", "results.json"))):
        with open(path) as f:
            res = json.load(f)
        st = res["study"]
        steps = {s["k"]: s for s in res["steps"]}
        study_file = f"sample_requests/studies/{st['name']}.yaml"
        secs = sum(s["seconds"] for s in res["steps"])
        rows.append(f"| [{st['name']}](results/studies/{st['name']}/report.md) | {st['setting']} | "
                    + " | ".join(_cell(steps, k) for k in AT)
                    + f" | {secs / 60:.1f} | `cu run {study_file}` |")
    head = ["# Results: chains of requests on MiniCanvas", "",
            "Every number below comes from `cu run` of the named study file on MiniCanvas v3 "
            "(2-core CPU; the study page has every step, the retention matrix and plots; "
            "`results.json` there has the payload hashes). Cells: UA / RA-I / RA-C / "
            "‖θ−θ₀‖ after request k. Regenerate with `python tools/record_studies.py RUN_DIR...`.",
            "", "| study | setting | k = 1 | k = 3 | k = 6 | k = 12 | minutes | command |",
            "|---|---|---|---|---|---|---|---|"]
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
