"""Every file in sample_requests/ runs as a `cu erase --config` request (1 step, tiny anchor set),
and what it asks for reaches the lineage's resolved config."""

from __future__ import annotations

import glob
import os

import pytest

from cu_cli.cli.app import app
from cu_cli.ckpt.checkpoint import open_checkpoint
from cu_cli.erase.options import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "sample_requests", "*.yaml")))
QUICK = ["--steps", "1", "--batch", "2", "--anchor-images", "2", "--anchor-steps", "1",
         "--set", "selft_timesteps=2", "--set", "ddim_steps=4", "-q"]


def test_there_are_sample_requests():
    assert len(FILES) >= 3


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_sample_request_runs(runner, tmp_path, tiny_sd1, path):
    values = load_config_file(path)
    args = ["erase", "--config", path, *QUICK, "-o", str(tmp_path / "out.safetensors")]
    if values.get("base"):  # a placeholder for the user's SD folder: the tiny SD1 pipeline here
        args += ["--base", tiny_sd1]
    first = None
    if "--from" in open(path).read():  # a later request of a chain (its usage line): a parent
        first = str(tmp_path / "first.safetensors")
        r = runner.invoke(app, ["erase", "--concept", "neon stripes", *QUICK, "-o", first])
        assert r.exit_code == 0, r.output
        args += ["--from", first]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    h = open_checkpoint(str(tmp_path / "out.safetensors"))
    step = h.json("cu.lineage")[-1]
    assert step["concepts"] == values["concepts"] and step["config"]["steps"] == 1
    for key, want in values.items():
        if key in step["config"] and key != "steps":
            assert step["config"][key] == want, key
    if first:
        assert step["inputs"]["parent"] == open_checkpoint(first).payload_sha256
