"""Devices, precision, folder layouts, batching and base identity (issue 17, items 2-4)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from cu_cli.cli.app import app
from cu_cli.ckpt.checkpoint import open_checkpoint
from cu_cli.ckpt.format import load_tensors
from cu_cli.models.base import resolve_base

ERASE = ["erase", "--concept", "cat", "--kind", "object", "--anchor", "dog", "--steps", "2",
         "--batch", "2", "--anchor-images", "2", "--anchor-steps", "2", "-q"]


def _one_line_error(r, code: int = 2):
    assert r.exit_code == code, r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    lines = [ln for ln in r.stderr.splitlines() if "device" in ln]
    assert len(lines) == 1, r.stderr  # one line says what is wrong (Typer may frame it)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("cmd", ["erase", "eval", "project-basis"])
def test_cuda_without_cuda_is_a_one_line_usage_error(runner, tmp_path, tiny_sd1, cmd):
    args = {"erase": [*ERASE, "-o", str(tmp_path / "x.safetensors")],
            "eval": ["eval", "--protocol", "unlearncanvas-object", "--erased", "Bears", "-q"],
            "project-basis": ["project-basis", "--concept", "cat", "-q", "-o",
                              str(tmp_path / "b.safetensors")]}[cmd]
    r = runner.invoke(app, [*args, "--base", tiny_sd1, "--device", "cuda"])
    _one_line_error(r)
    assert "CUDA is not available" in r.stderr
    assert not os.path.exists(tmp_path / "x.safetensors")


@pytest.mark.parametrize("device", ["cuda:7x", "tpu", "cuda:", "cpu0"])
def test_malformed_device_is_a_usage_error(runner, tmp_path, tiny_sd1, device):
    r = runner.invoke(app, [*ERASE, "--base", tiny_sd1, "--device", device, "-o",
                            str(tmp_path / "x.safetensors")])
    _one_line_error(r)


def test_device_resolution():
    from cu_cli._util.errors import UsageError
    from cu_cli.models.precision import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else
                                      "mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(UsageError):
        resolve_device("cuda:7x")


def test_bf16_erase_keeps_the_trained_group_fp32_and_records_the_dtype(runner, tmp_path,
                                                                       tiny_sd1):
    from cu_cli.erase.options import EraseConfig
    from cu_cli.erase.plan import EraseRequest, plan_erase
    from cu_cli.erase.run import prepare

    req = EraseRequest(concepts=["cat"], out=str(tmp_path / "p.safetensors"), base=tiny_sd1,
                       cfg=EraseConfig(kind="object", anchor="dog", steps=1, batch=1,
                                       anchor_images=1, anchor_steps=1), dtype="bf16")
    plan = plan_erase(req)
    fp32_key = plan_erase(EraseRequest(**{**req.__dict__, "dtype": "fp32"})).key()
    assert plan.key() != fp32_key
    with torch.enable_grad():
        work = prepare(plan)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in work.ctx.trainable.values())
    frozen = {p.dtype for n, p in work.ctx.unet.named_parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}
    assert work.ctx.pipe.text_encoder.get_input_embeddings().weight.dtype == torch.bfloat16
    for m in ("conabl", "esd"):
        out = str(tmp_path / f"{m}.safetensors")
        r = runner.invoke(app, [*ERASE, "--base", tiny_sd1, "--method", m, "--dtype", "bf16",
                                "-o", out])
        assert r.exit_code == 0, r.output
        step = open_checkpoint(out).json("cu.lineage")[-1]
        assert step["dtype"] == "bf16" and step["device"] == "cpu"
        w = load_tensors(out)
        assert all(v.dtype == torch.float32 for v in w.values())
        ref = resolve_base(tiny_sd1).get_tensors(sorted(w))
        assert any(not torch.equal(w[k], ref[k]) for k in w)


def test_dtype_is_in_the_cache_keys(runner, tiny_sd1, monkeypatch, tmp_path):
    from cu_cli.models import classifiers as C

    def factory(arg, domain, classes):
        return C.Classifier("fake", list(classes),
                            lambda x: torch.nn.functional.one_hot(
                                torch.zeros(len(x), dtype=torch.long), len(classes)).float())

    monkeypatch.setitem(C.CLASSIFIERS, "fake", {"doc": "test", "factory": factory, "url": None})
    cache = os.path.join(os.environ["CU_CACHE_DIR"], "eval")
    before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    # guidance 3.3: settings no other test uses, so both cache entries are new in any order
    args = ["eval", "--base", tiny_sd1, "--protocol", "unlearncanvas-object", "--classifier",
            "fake", "--erased", "Bears", "--seeds", "1", "--steps", "1", "--guidance", "3.3",
            "-q", "--json"]
    for dt in ("fp32", "bf16"):
        r = runner.invoke(app, [*args, "--dtype", dt])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["settings"]["dtype"] == dt
    assert len(set(os.listdir(cache)) - before) == 2
    r = runner.invoke(app, [*args, "--dtype", "fp8"])
    assert r.exit_code == 2


@pytest.mark.parametrize("layout", ["fp16", "variant", "sharded"])
def test_folder_layouts_load(runner, tmp_path, layout):
    from tests.tiny import save_tiny

    folder = save_tiny(str(tmp_path / layout), "sd1", layout)
    base = resolve_base(folder)
    assert base.variant == ("fp16" if layout == "variant" else None)
    if layout == "sharded":
        assert len(base.parts["unet"]) > 1 and base.files["unet"].endswith(".index.json")
    shapes = base.shapes()
    assert len(shapes) > 100 and base.fingerprint.startswith("sha256:")
    key = next(k for k in shapes if k.endswith("attn2.to_k.weight"))
    assert tuple(base.get_tensors([key])[key].shape) == shapes[key]
    pipe = base.load_pipeline()
    assert pipe.unet.dtype == torch.float32  # fp16 weights are upcast on load
    out = str(tmp_path / "o.safetensors")
    r = runner.invoke(app, [*ERASE, "--base", folder, "-o", out])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["drift", out, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["states"][0]["l2"] > 0


def test_sampling_is_batched_and_reports_counts(tiny_sd1, monkeypatch):
    pipe = resolve_base(tiny_sd1).load_pipeline()
    seen, calls = [], []
    orig = pipe.unet.forward

    def spy(z, *a, **k):
        calls.append(z.shape[0])
        return orig(z, *a, **k)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    imgs = pipe.sample(["a cat"] * 5, list(range(5)), steps=1, batch_size=2, progress=seen.append)
    assert imgs.shape == (5, 64, 64, 3) and seen == [2, 2, 1] and calls == [4, 4, 2]
    one = pipe.sample(["a cat"], [3], steps=1, batch_size=1)
    assert np.abs(one.astype(int) - imgs[3:4].astype(int)).max() <= 1  # per-image seeds
    assert pipe.default_batch_size() == 256  # 64 px on a CPU
    monkeypatch.setattr(type(pipe), "resolution", property(lambda self: 512))
    assert pipe.default_batch_size() == 4 and pipe.vae_slice() == 1


def test_base_found_from_another_directory_and_by_fingerprint(runner, tmp_path, tiny_sd1,
                                                              monkeypatch):
    from tests.helpers import kv_keys, make_ckpt

    from cu_cli.ckpt.checkpoint import BaseIdentity

    here = tmp_path / "a"
    here.mkdir()
    monkeypatch.chdir(here)
    rel = os.path.relpath(tiny_sd1, here)
    out = str(here / "o.safetensors")
    r = runner.invoke(app, [*ERASE, "--method", "uce", "--base", rel, "-o", out])
    assert r.exit_code == 0, r.output
    assert open_checkpoint(out).metadata["cu.base.id"] == os.path.abspath(tiny_sd1)
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["drift", out, "--json"])
    assert r.exit_code == 0, r.output
    # a header naming a path that does not exist here (an older cu wrote it as typed): the base
    # is found by its fingerprint among the bases this machine has seen
    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    old = make_ckpt(tmp_path / "old.safetensors", base, {k: torch.ones(base.shapes()[k])},
                    ident=BaseIdentity("../somewhere/else", base.arch, base.fingerprint))
    r = runner.invoke(app, ["drift", old, "--json"])
    assert r.exit_code == 0, r.output


def test_cost_warning_before_a_long_cpu_request(tiny_sd1):
    from cu_cli.erase.cost import estimate_seconds, format_duration
    from cu_cli.erase.objectives import ERASE_OBJECTIVES
    from cu_cli.erase.options import EraseConfig
    from cu_cli.erase.defaults import resolve

    cfg = resolve(EraseConfig(kind="object", anchor="dog"), {})

    class Big:  # the SD1.5 numbers: 859.5 M parameters, 64x64 latents
        latent_shape = (4, 64, 64)

        class unet:
            @staticmethod
            def parameters():
                return [type("P", (), {"numel": lambda self: 859_520_964})()]

    sec = estimate_seconds(Big, cfg, ERASE_OBJECTIVES["conabl"])
    assert 86400 < sec < 30 * 86400, format_duration(sec)  # the default request: days
    assert estimate_seconds(Big, cfg, ERASE_OBJECTIVES["uce"]) == 0
    assert format_duration(3 * 86400) == "3.0 days"
