"""Every shipped study file in sample_requests/studies/ parses, and runs: MiniCanvas studies on
MiniCanvas and the UnlearnCanvas ones on the tiny SD1 pipeline (their base is a placeholder), for
their first steps with quick erase settings (all files with CU_RUN_SLOW=1, a subset by default)."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import replace

import pytest

from cu_cli.ckpt.checkpoint import open_checkpoint
from tests.test_eval import fake_classifier  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDIES = sorted(glob.glob(os.path.join(ROOT, "sample_requests", "studies", "*.yaml")))
QUICK = {"steps": "1", "batch": "2", "anchor_images": "2", "anchor_steps": "1",
         "selft_timesteps": "2", "ddim_steps": "4"}
FAST = {"minicanvas-styles-baseline.yaml", "minicanvas-objects-merge.yaml",
        "minicanvas-styles-projection.yaml", "unlearncanvas-objects-l2.yaml"}


def test_the_paper_ablation_is_shipped():
    names = {os.path.basename(p)[:-5] for p in STUDIES}
    for dom in ("styles", "objects"):
        for v in ("baseline", "l1", "l2", "selft", "projection", "merge", "simultaneous", "best"):
            assert f"minicanvas-{dom}-{v}" in names
    assert {"unlearncanvas-styles-baseline", "unlearncanvas-objects-baseline"} <= names


@pytest.mark.parametrize("path", [pytest.param(p, marks=() if os.path.basename(p) in FAST
                                               else pytest.mark.slow) for p in STUDIES],
                         ids=os.path.basename)
def test_study_runs(tmp_path, tiny_sd1, fake_classifier, path):  # noqa: F811
    from cu_cli.run.execute import run_study
    from cu_cli.run.study import load_study

    st = load_study(path, overrides=QUICK)
    assert len(st.requests) == (24 if st.name == "minicanvas-stream24" else 12)
    steps = 2 if st.setting != "sequential" else 1
    if st.base and not st.base == "minicanvas":  # UnlearnCanvas placeholder base -> tiny
        st = replace(st, base=tiny_sd1, eval={**st.eval, "classifier": "fake", "seeds": 1,
                                              "steps": 1})
    else:
        st = replace(st, eval={**st.eval, "every": 0})
    res = run_study(st, str(tmp_path / "out"), only_step=steps)
    assert len(res["steps"]) == steps
    last = open_checkpoint(res["steps"][-1]["path"])
    assert last.json("cu.erased")[-1] == st.requests[steps - 1].concept
    step = last.json("cu.lineage")[-1]
    for k, v in st.erase.items():
        if k in (step.get("config") or {}) and k not in QUICK:
            assert step["config"][k] == v, k
    assert json.load(open(tmp_path / "out" / "results.json"))["study"]["name"] == st.name
