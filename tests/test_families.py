"""Model families (issue 17): the sd1/sd2/sdxl adapters, Cond, and every command end to end on the
tiny SD 2.x (v-prediction) and SDXL (two text encoders, text_time added conditioning) pipelines."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from cu_cli.cli.app import app
from cu_cli.ckpt.checkpoint import open_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.models.base import resolve_base
from tests.test_eval import fake_classifier  # noqa: F401  (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OBJECTIVES = ("conabl", "esd", "erasediff", "uce")


def _ok(r):
    assert r.exit_code == 0, r.output
    assert "internal error" not in r.output
    return r


def test_registry_and_detection(tiny_sd1, tiny_sd2, tiny_sdxl):
    from cu_cli.models.families import FAMILIES

    assert set(FAMILIES) == {"sd1", "sd2", "sdxl"}
    for fam, tiny in (("sd1", tiny_sd1), ("sd2", tiny_sd2), ("sdxl", tiny_sdxl)):
        pipe = resolve_base(tiny).load_pipeline()
        assert pipe.family == fam and pipe.resolution == 64
        assert pipe.prediction_type == ("v_prediction" if fam == "sd2" else "epsilon")
        cond = pipe.encode(["a cat", "a dog"])
        assert cond.hidden.shape[-1] == pipe.unet.config.cross_attention_dim
        assert (cond.pooled is None) == (fam != "sdxl")
    assert FAMILIES["sdxl"].default_resolution == 1024 and FAMILIES["sd2"].default_resolution == 768


def test_sdxl_cond_matches_the_diffusers_pipeline(tiny_sdxl):
    """hidden (penultimate states of both encoders), pooled (text_embeds of encoder 2) and the
    time ids equal what StableDiffusionXLPipeline builds, and predict() equals its UNet call."""
    from diffusers import StableDiffusionXLPipeline

    pipe = resolve_base(tiny_sdxl).load_pipeline()
    ref = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl, local_files_only=True)
    prompts = ["a cat in neon style", "a dog"]
    cond = pipe.encode(prompts)
    pe, _, pooled, _ = ref.encode_prompt(prompts, do_classifier_free_guidance=False)
    assert torch.allclose(cond.hidden, pe, atol=1e-6)
    assert torch.allclose(cond.pooled, pooled, atol=1e-6)
    tid = ref._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=pe.dtype,
                                text_encoder_projection_dim=ref.text_encoder_2.config.projection_dim)
    assert torch.equal(cond.time_ids, tid.expand(2, -1))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    want = ref.unet(z, t, encoder_hidden_states=pe,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": tid.expand(2, -1)}).sample
    assert torch.allclose(pipe.predict(z, t, cond), want, atol=1e-5)
    assert torch.allclose(pipe.predict(z[1:], t[1:], cond[1:]), want[1:], atol=1e-5)


def test_v_prediction_target_on_sd2(tiny_sd2):
    from cu_cli.erase.objectives.data import LatentBatches

    pipe = resolve_base(tiny_sd2).load_pipeline()
    data = LatentBatches(pipe, pipe.sample(["a cat"], [0], steps=1))
    z0, noise, t = torch.ones(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), torch.tensor([999])
    assert torch.allclose(data.target(z0, noise, t), data.sched.get_velocity(z0, noise, t))
    assert not torch.allclose(data.target(z0, noise, t), noise)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_every_command_end_to_end(runner, tmp_path, family, request, fake_classifier):  # noqa: F811
    tiny = request.getfixturevalue(f"tiny_{family}")
    base = resolve_base(tiny)
    common = ["--base", tiny, "--concept", "cat", "--kind", "object", "--anchor", "dog",
              "--seed", "3", "-q"]
    fast = ["--steps", "2", "--batch", "2", "--anchor-images", "2", "--anchor-steps", "2"]
    outs = {}
    for m in OBJECTIVES:
        outs[m] = str(tmp_path / f"{m}.safetensors")
        _ok(runner.invoke(app, ["erase", *common, "--method", m,
                                *(fast if m != "uce" else []), "-o", outs[m]]))
        w = load_tensors(outs[m])
        ref = base.get_tensors(sorted(w))
        assert any(not torch.equal(w[k], ref[k]) for k in w), m
        step = open_checkpoint(outs[m]).json("cu.lineage")[-1]
        assert step["device"] == "cpu" and step["dtype"] == "fp32"
    # eval with a fake classifier, base and two states
    r = _ok(runner.invoke(app, ["eval", outs["conabl"], outs["uce"], "--with-base", "--protocol",
                                "unlearncanvas-object", "--classifier", "fake", "--erased",
                                "Bears", "--seeds", "1", "--steps", "1", "--json", "-q"]))
    ev = json.loads(r.stdout)
    assert [s["path"] for s in ev["states"]] == [None, outs["conabl"], outs["uce"]]
    assert ev["settings"]["dtype"] == "fp32" and ev["states"][1]["images"] > 0
    # project-basis, then an erase that uses it
    basis = str(tmp_path / "basis.safetensors")
    r = _ok(runner.invoke(app, ["project-basis", "--base", tiny, "--concept", "cat", "--kind",
                                "object", "--json", "-q", "-o", basis]))
    shape = json.loads(r.stdout)["shape"]
    assert shape[0] == base.load_pipeline().unet.config.cross_attention_dim
    _ok(runner.invoke(app, ["erase", *common, *fast, "--basis", basis, "--from", outs["conabl"],
                            "-o", str(tmp_path / "chain.safetensors")]))
    # merge and drift
    merged = str(tmp_path / "m.safetensors")
    _ok(runner.invoke(app, ["merge", outs["conabl"], outs["esd"], "--base", tiny, "--method",
                            "ties", "--density", "0.5", "-q", "-o", merged]))
    r = _ok(runner.invoke(app, ["drift", outs["conabl"], merged, str(tmp_path / "chain.safetensors"),
                                "--json"]))
    states = json.loads(r.stdout)["states"]
    assert len(states) == 3 and all(s["l2"] > 0 for s in states)


def test_no_family_string_checks_outside_the_adapters():
    """Family behaviour lives in models/families.py; nothing else compares a family name."""
    bad = re.compile(r"""family\s*[!=]=|["']sdxl["']|["']sd2["']|["']sd1["']\s*[!=]=""")
    allowed = {os.path.join("cu_cli", "models", "families.py")}
    hits = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "cu_cli")):
        for f in files:
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, ROOT)
            if f.endswith(".py") and rel not in allowed:
                for i, line in enumerate(open(path, encoding="utf-8"), 1):
                    if bad.search(line):
                        hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)
