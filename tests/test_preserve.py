"""Retained-token K/V penalty (``--preserve``) and basis deflation (``--free-target``)."""

from __future__ import annotations

import pytest
import torch

from cu_cli._util.errors import UsageError
from cu_cli.erase.options import EraseConfig
from cu_cli.erase.preserve import preserve_prompts
from cu_cli.erase.run import EraseRequest, run_erase
from cu_cli.models.base import resolve_base
from cu_cli.ops.preserve import preserve_penalty, second_moment
from cu_cli.ops.projection import deflate, projector
from cu_cli.world.minicanvas import load_world
from tests.helpers import kv_change

FAST = dict(steps=12, batch=2, anchor_images=4, anchor_steps=2, lr=1e-2, kind="object",
            anchor="dog")
KEEP = ["a photo of a horse", "a painting of a horse", "a horse at night"]


def test_penalty_is_mean_squared_kv_change_of_preserved_tokens():
    torch.manual_seed(0)
    H = torch.randn(3, 5, 8)
    W, R = torch.randn(6, 8), torch.randn(6, 8)
    got = preserve_penalty({"w": W}, {"w": R}, ["w"], second_moment(H))
    want = ((W - R) @ H.reshape(-1, 8).T).pow(2).sum() / (15 * 6)
    assert torch.allclose(got, want, rtol=1e-5)
    assert float(preserve_penalty({"w": R}, {"w": R}, ["w"], second_moment(H))) == 0.0


def test_huge_preserve_weight_keeps_preserved_prompts_kv(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    states = base.load_pipeline().encode_text(KEEP).detach()
    runs = {}
    for name, cfg in (("plain", {}), ("kept", dict(preserve="file", preserve_weight=1e6))):
        req = EraseRequest(concepts=["cat"], out=str(tmp_path / f"{name}.safetensors"),
                           cfg=EraseConfig(**FAST, **cfg), base=tiny_sd1, seed=1,
                           preserve_prompts=KEEP if name == "kept" else None)
        runs[name] = run_erase(req)
    plain = kv_change(runs["plain"].path, base, states)
    kept = kv_change(runs["kept"].path, base, states)
    assert plain > 1e-3
    assert kept < 0.1 * plain
    assert runs["kept"].measured["preserve_prompts"] == len(KEEP)
    assert runs["kept"].measured["preserve_prompts_sha256"].startswith("sha256:")
    assert runs["plain"].measured.get("preserve_prompts", 0) == 0  # none by default on SD bases


def test_world_prompts_hold_out_targets_and_retain_sets():
    world = load_world()
    prompts = preserve_prompts("world", ["neon stripes"], world, None)
    held = ["neon stripes", *world.retain["style"], *world.retain["object"]]
    assert prompts and not any(h in p for p in prompts for h in held)
    assert world.caption("star", "neon checks") in prompts
    assert world.caption("star", None) in prompts
    assert preserve_prompts("none", ["x"], world, None) == []
    with pytest.raises(UsageError):
        preserve_prompts("world", ["x"], None, None)
    with pytest.raises(UsageError):
        preserve_prompts("file", ["x"], None, [])


def test_preserve_file_cli_errors(tmp_path, tiny_sd1):
    from typer.testing import CliRunner

    from cu_cli.cli.app import app

    out = str(tmp_path / "o.safetensors")
    r = CliRunner().invoke(app, ["erase", "--base", tiny_sd1, "--concept", "cat", "--kind",
                                 "object", "--anchor", "dog", "--preserve",
                                 str(tmp_path / "missing.txt"), "-o", out])
    assert r.exit_code == 2 and "missing.txt" in r.output
    r = CliRunner().invoke(app, ["erase", "--base", tiny_sd1, "--concept", "cat", "--kind",
                                 "object", "--anchor", "dog", "--preserve", "world", "-o", out])
    assert r.exit_code == 2 and "MiniCanvas" in r.output


def test_deflated_projector_frees_target_and_protects_the_rest():
    torch.manual_seed(0)
    d = 12
    a, b, c = torch.randn(d), torch.randn(d), torch.randn(d)
    C = torch.stack([a, b, c, a + b - c]).T  # the neighbours span the target t = a + b
    t = (a + b)[:, None]
    P_ref = projector(C)
    assert float((P_ref @ t).norm()) < 1e-3 * float(t.norm())  # the erasure would be blocked
    Cd = deflate(C, t)
    P = projector(Cd)
    assert torch.allclose(P @ t, t, atol=1e-3)  # the target's direction moves freely
    assert float((P @ Cd).norm()) < 1e-3 * float(Cd.norm())  # the rest stays protected
    assert torch.equal(deflate(C, torch.zeros(0, 0)), C)


def test_names_any_matches_whole_words_and_both_spellings():
    """preserve_ref base holds prompts that name no erased concept at the base (kv_metric.py)."""
    from cu_cli.erase.preserve import names_any

    assert names_any("a star in neon stripes style", ["neon stripes"])
    assert not names_any("a star in neon stripesx style", ["neon stripes"])
    assert not names_any("a star in neon dots style", ["neon stripes", "ember dots"])
    assert names_any("A painting in Van Gogh style", ["Van_Gogh"])
    assert not names_any("a house", [])


def test_preserve_ref_split_sums_to_the_unsplit_moment():
    """preserve_ref base splits the preserve prompts into those naming an erased concept and the
    rest; the two moments, weighted by their shares, add up to the moment of all prompts."""
    from types import SimpleNamespace

    import torch

    from cu_cli.erase.regularizers.kv_metric import KVMetric
    from cu_cli.ops.preserve import second_moment

    prompts = ["a star in neon stripes style", "a moon in ember dots style", "a star",
               "a moon in ocean fade style", "a ring in neon stripes style"]

    def encode(ps):  # deterministic toy states [B, L=3, d=4]
        return torch.stack([torch.full((3, 4), float(len(p))) + torch.arange(4.0) * i
                            for i, p in enumerate(ps, 1)])

    ctx = SimpleNamespace(cfg=SimpleNamespace(preserve="file"), world=None,
                          pipe=SimpleNamespace(encode_text=encode))
    plan = SimpleNamespace(concepts=["x"], preserve_file_prompts=prompts)
    kv = KVMetric()
    kv.info = {}
    parts = kv._preserve_moments(ctx, plan, erased=["neon stripes"])
    assert sorted(named for _, named in parts) == [False, True]
    whole = kv._preserve_moments(ctx, plan, erased=[])
    assert len(whole) == 1
    # the same prompts encoded in group order: compare against the moment of the concatenation
    named = [p for p in prompts if "neon stripes" in p]
    rest = [p for p in prompts if "neon stripes" not in p]
    want = second_moment(torch.cat([encode(rest), encode(named)]))
    got = sum(M for M, _ in parts)
    assert torch.allclose(got, want, rtol=1e-5)
