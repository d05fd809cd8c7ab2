"""``cu sample``: images equal diffusers' on the exported folder; grids, PNG text chunks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cu_cli.cli.app import app
from cu_cli.ckpt.format import read_header
from cu_cli.models.base import resolve_base
from tests.helpers import kv_keys, make_ckpt

PROMPT = "a star in neon stripes style"


@pytest.fixture(scope="module")
def mc_state(tmp_path_factory):
    base = resolve_base("minicanvas")
    g = torch.Generator().manual_seed(3)
    shapes = base.shapes()
    deltas = {k: torch.randn(shapes[k], generator=g) * 0.05 for k in kv_keys(base)}
    return make_ckpt(tmp_path_factory.mktemp("sample") / "mc.safetensors", base, deltas, ["x"])


def test_sample_equals_diffusers_on_the_export(runner, mc_state, tmp_path):
    from diffusers import StableDiffusionPipeline

    export = tmp_path / "exported"
    assert runner.invoke(app, ["export", "diffusers", mc_state, "-o", str(export)]).exit_code == 0
    d = tmp_path / "png"
    r = runner.invoke(app, ["sample", mc_state, "--with-base", "--prompt", PROMPT, "--seed", "7",
                            "--steps", "4", "--guidance", "7.5", "--out-dir", str(d)])
    assert r.exit_code == 0, r.output
    paths = r.stdout.split()
    assert len(paths) == 2  # base row, state row
    base_png, state_png = (Image.open(p) for p in paths)
    ours = np.asarray(state_png.convert("RGB"))
    assert state_png.info["prompt"] == PROMPT and state_png.info["seed"] == "7"
    assert state_png.info["cu.lineage_hash"] == read_header(mc_state).metadata["cu.payload_sha256"]
    assert base_png.info["cu.lineage_hash"] == "base"

    pipe = StableDiffusionPipeline.from_pretrained(str(export), local_files_only=True,
                                                   safety_checker=None)
    theirs = pipe(PROMPT, num_inference_steps=4, guidance_scale=7.5, output_type="np",
                  generator=torch.Generator().manual_seed(7)).images[0]
    theirs = (theirs * 255).round().astype(np.uint8)
    assert ours.shape == theirs.shape == (32, 32, 3)
    assert np.array_equal(ours, theirs)
    # the state is really applied: the base image differs (so the comparison can fail)
    assert not np.array_equal(np.asarray(base_png.convert("RGB")), ours)


def test_grid_layout_and_determinism(runner, mc_state, tmp_path):
    args = ["sample", mc_state, "--with-base", "-p", PROMPT, "-p", "a moon in ember style",
            "--n", "2", "--seed", "1", "--steps", "2"]
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{tmp_path / 'g.png'}\n"
    a = np.asarray(Image.open(tmp_path / "g.png"))
    # 2 rows (base, state) x 4 columns (2 prompts x 2 seeds) of 128 px cells
    assert a.shape[0] == 42 + 2 * (128 + 4) + 4 and a.shape[1] == 170 + 4 * (128 + 4) + 4
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "g2.png")])
    assert np.array_equal(a, np.asarray(Image.open(tmp_path / "g2.png")))
    r = runner.invoke(app, [*args, "-o", str(tmp_path / "g.png")])
    assert r.exit_code == 2 and "--force" in r.stderr


@pytest.mark.parametrize("args", [["-o", "X"], ["-p", "a star"], ["-p", "a star", "--n", "0",
                                                                  "-o", "X"],
                                  ["-p", "a star", "--guidance", "inf", "-o", "X"]])
def test_sample_usage_errors_exit_2(runner, mc_state, tmp_path, args):
    args = [str(tmp_path / "g.png") if a == "X" else a for a in args]
    r = runner.invoke(app, ["sample", mc_state, *args])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "g.png").exists()


def test_sample_wrong_base_exit_3(runner, mc_state, tiny_sd1, tmp_path):
    r = runner.invoke(app, ["sample", mc_state, "--base", tiny_sd1, "-p", "a star", "-o",
                            str(tmp_path / "g.png")])
    assert r.exit_code == 3


def test_sample_runs_on_sdxl(runner, tiny_sdxl, tmp_path):
    """SDXL bases sample through the family adapter's conditioning (pooled embeds, time ids)."""
    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(tiny_sdxl)
    keys = kv_keys(base)[:2]
    cur = base.get_tensors(keys)
    state = make_ckpt(tmp_path / "xl.safetensors", base, {k: v + 0.05 for k, v in cur.items()},
                      ["cat"])
    out = tmp_path / "xl.png"
    r = runner.invoke(app, ["sample", state, "--base", tiny_sdxl, "--with-base", "-p", "a cat",
                            "--steps", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:4] == b"\x89PNG"
