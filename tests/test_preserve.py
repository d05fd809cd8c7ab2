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


def _kv_cfg(**over):
    """A KVMetric config with every hold off (weights 0, preserve none, references at the
    parent), ``over`` switching on the hold a test measures."""
    from types import SimpleNamespace

    base = dict(preserve="none", preserve_weight=0.0, context_weight=0.0, preserve_ref="parent",
                anchor_weight=0.0, anchor_scope="request", erased_weight=0.0, word_weight=0.0,
                keep_weight=0.0, keep_plain=False, match="word", params="xattn-kv")
    return SimpleNamespace(**{**base, **over})


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

    ctx = SimpleNamespace(cfg=SimpleNamespace(preserve="file", preserve_focus=0.0), world=None,
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


def _toy_encode(ps):
    """Deterministic toy token states [B, L=3, d=4] that depend on each prompt's text only."""
    import torch

    rows = []
    for p in ps:
        g = torch.Generator().manual_seed(sum(map(ord, p)))
        rows.append(torch.randn(3, 4, generator=g))
    return torch.stack(rows)


def test_preserve_focus_adds_the_near_prompts_moment():
    """preserve_focus β: M = M_p + β·M_near, M_near the moment of the preserve prompts that name
    one of the concept's words (kv_metric.py); β = 0 leaves M_p alone."""
    from types import SimpleNamespace

    import torch

    from cu_cli.erase.regularizers.kv_metric import KVMetric
    from cu_cli.ops.preserve import second_moment

    prompts = ["a star in forest dots style", "a moon in ember fade style", "a star",
               "a moon in ocean checks style", "a ring in forest checks style"]
    plan = SimpleNamespace(concepts=["forest fade"], preserve_file_prompts=prompts)
    kv = KVMetric()
    kv.info = {}

    def moments(beta):
        ctx = SimpleNamespace(cfg=SimpleNamespace(preserve="file", preserve_focus=beta),
                              world=None, pipe=SimpleNamespace(encode_text=_toy_encode))
        return sum(M for M, _ in kv._preserve_moments(ctx, plan, erased=[]))

    near = [p for p in prompts if "forest" in p or "fade" in p]
    plain, focused = moments(0.0), moments(3.0)
    assert torch.allclose(plain, second_moment(_toy_encode(prompts)), rtol=1e-5)
    assert torch.allclose(focused - plain, 3.0 * second_moment(_toy_encode(near)), rtol=1e-4,
                          atol=1e-6)
    assert kv.info["preserve_near_prompts"] == 3


def test_anchor_weight_holds_the_anchor_prompts_at_the_root_base():
    """anchor_weight λ_a: the request's anchor prompts' K/V are penalised toward the root base's
    weights, not the parent's (a chain pulls its anchor back); the penalty is 0 at the base and
    equals λ_a·tr(ΔW·M_a·ΔWᵀ)/rows with M_a the anchor prompts' moment."""
    from types import SimpleNamespace

    import torch

    from cu_cli.erase.regularizers.kv_metric import KVMetric
    from cu_cli.ops.preserve import second_moment

    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    base_w = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    parent_w = base_w + 0.1
    anchors = ["a tree in neon dots style", "a tree in ember fade style", "a tree"]
    pair = SimpleNamespace(anchor_prompts=anchors + ["a tree"], target_prompts=[])
    cfg = _kv_cfg(anchor_weight=2.0)
    ctx = SimpleNamespace(cfg=cfg, pairs=[pair], trainable={key: torch.nn.Parameter(parent_w)},
                          parent_values={key: parent_w.clone()},
                          base_values=lambda: {key: base_w.clone()},
                          embed=_toy_encode)
    plan = SimpleNamespace(parent_header=None, concepts=["arrow"])
    kv = KVMetric()
    kv.prepare(ctx, plan)
    assert kv.info["anchor_prompts"] == 3  # distinct prompts
    (M, ref), = kv.parts
    assert torch.equal(ref[key], base_w)
    assert torch.allclose(M, 2.0 * second_moment(_toy_encode(anchors)), rtol=1e-5)
    (pen,) = kv.terms({key: parent_w})
    d = parent_w - base_w
    assert torch.isclose(pen, (d @ M * d).sum() / 5)
    assert float(kv.terms({key: base_w})[0]) == 0.0


def test_keep_hold_in_a_mixed_chain_also_holds_the_other_kinds_vocabulary():
    """In a chain whose lineage erased objects, a style request's vocabulary hold is the styles'
    keep prompts plus the objects' (each without what the chain erased), recorded as keep_kinds;
    a single-kind lineage keeps the request kind's prompts only."""
    import json
    from types import SimpleNamespace

    from cu_cli.erase.prompts import build_pairs
    from cu_cli.erase.regularizers.kv_metric import KVMetric

    world = load_world()
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    w = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    cfg = _kv_cfg(keep_weight=3.0, kind="style")

    def run(kinds):
        lineage = [{"op": "erase", "concepts": ["arrow"], "measured": {"kinds": kinds}}]
        meta = {"cu.erased": ["arrow"], "cu.lineage": lineage}
        header = SimpleNamespace(json=lambda k, d=None: json.loads(json.dumps(meta.get(k, d))))
        plan = SimpleNamespace(parent_header=header, concepts=["ember dots"])
        ctx = SimpleNamespace(cfg=cfg, pairs=[build_pairs("ember dots", "style", None, world,
                                                          seed=0)], world=world,
                              trainable={key: torch.nn.Parameter(w.clone())},
                              parent_values={key: w.clone()}, base_values=lambda: {key: w.clone()},
                              pipe=SimpleNamespace(encode_text=_toy_encode), embed=_toy_encode)
        kv = KVMetric()
        kv.prepare(ctx, plan)
        return kv

    erased = ["arrow", "ember dots"]
    styles_only = world.keep_prompts("style", erased)
    both = styles_only + [p for p in world.keep_prompts("object", erased) if p not in styles_only]
    kv = run(["object"])
    assert kv.info["keep_kinds"] == ["style", "object"]
    assert kv.info["keep_prompts"] == len(both) > len(styles_only)
    (M, _), = kv.parts
    assert torch.allclose(M, 3.0 * second_moment(_toy_encode(both)), rtol=1e-5)
    kv = run(["style"])
    assert "keep_kinds" not in kv.info and kv.info["keep_prompts"] == len(styles_only)


def test_anchor_scope_chain_rebuilds_the_earlier_requests_anchor_prompts():
    """anchor_scope chain: the anchors of the parent's earlier erase steps are rebuilt from the
    lineage (concepts + recorded anchors/kinds); a step whose anchor prompts came from a file is
    skipped, merge steps are ignored."""
    import json
    from types import SimpleNamespace

    from cu_cli.erase.lineage_pairs import lineage_pairs as _lineage_pairs
    from cu_cli.world.registry import get_world

    world = get_world("minicanvas")
    lineage = [
        {"op": "erase", "concepts": ["arrow"], "inputs": {"anchor_prompts_sha256": None},
         "measured": {"anchors": ["tree"], "kinds": ["object"]}},
        {"op": "erase", "concepts": ["neon stripes"], "inputs": {},
         "measured": {"anchors": [""], "kinds": ["style"]}},
        {"op": "erase", "concepts": ["bolt"], "inputs": {"anchor_prompts_sha256": "sha256:x"},
         "measured": {"anchors": ["tree"], "kinds": ["object"]}},
        {"op": "merge", "concepts": ["cross"], "measured": {}},
    ]
    header = SimpleNamespace(json=lambda key, default=None: (
        json.loads(json.dumps(lineage)) if key == "cu.lineage" else default))
    def _lineage_anchor_prompts(plan, world, match):
        return [p for pair in _lineage_pairs(plan, world, match) for p in pair.anchor_prompts]

    got = _lineage_anchor_prompts(SimpleNamespace(parent_header=header), world, "word")
    want = ([world.caption("tree", s) for s in world.styles]
            + [world.caption(o, None) for o in world.objects])
    assert got == want
    assert _lineage_anchor_prompts(SimpleNamespace(parent_header=None), world, "word") == []


def test_erased_weight_holds_the_earlier_targets_at_the_parent():
    """erased_weight λ_e: the target prompts of the parent's earlier requests (rebuilt from its
    lineage) are held at the parent's (erased) K/V; nothing is held from a base."""
    import json
    from types import SimpleNamespace

    import torch

    from cu_cli.erase.regularizers.kv_metric import KVMetric
    from cu_cli.ops.preserve import second_moment
    from cu_cli.world.registry import get_world

    world = get_world("minicanvas")
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight"
    base_w = torch.zeros(3, 4)
    parent_w = torch.ones(3, 4)
    lineage = [{"op": "erase", "concepts": ["arrow"], "inputs": {},
                "measured": {"anchors": ["tree"], "kinds": ["object"]}}]
    header = SimpleNamespace(json=lambda k, d=None: (
        json.loads(json.dumps(lineage)) if k == "cu.lineage" else
        ["arrow"] if k == "cu.erased" else d))
    cfg = _kv_cfg(erased_weight=3.0, erased_kinds="all", erased_extent="all")

    def ctx():
        return SimpleNamespace(cfg=cfg, pairs=[], world=world,
                               trainable={key: torch.nn.Parameter(parent_w.clone())},
                               parent_values={key: parent_w.clone()},
                               base_values=lambda: {key: base_w.clone()},
                               pipe=SimpleNamespace(encode_text=_toy_encode), embed=_toy_encode)

    kv = KVMetric()
    kv.prepare(ctx(), SimpleNamespace(parent_header=header, concepts=["bolt"]))
    targets = [world.caption("arrow", s) for s in world.styles]
    assert kv.info["erased_prompts"] == len(targets)
    (M, ref), = kv.parts
    assert torch.equal(ref[key], parent_w)
    assert torch.allclose(M, 3.0 * second_moment(_toy_encode(targets)), rtol=1e-5)
    fresh = KVMetric()
    fresh.prepare(ctx(), SimpleNamespace(parent_header=None, concepts=["bolt"]))
    assert fresh.parts == []


def test_word_prompts_cut_a_multiword_concept_to_each_word():
    """word_prompts: each target prompt once per word of a two-word concept, none that names the
    request's own or an erased concept, none for a one-word concept."""
    from cu_cli.erase.prompts import build_pairs, word_prompts

    world = load_world()
    pair = build_pairs("neon fade", "style", None, world, seed=0)
    got = word_prompts([pair], ["neon fade"])
    assert len(got) == 2 * len(world.objects)
    assert "a star in neon style" in got and "a star in fade style" in got
    assert not any("neon fade" in p for p in got)
    assert word_prompts([pair], ["neon fade", "neon"]) == [p for p in got if "neon" not in p]
    assert word_prompts([build_pairs("arrow", "object", None, world, seed=0)], ["arrow"]) == []


def test_word_weight_holds_the_word_prompts_at_the_parent():
    """word_weight λ_w: the word prompts' moment, held at the parent's K/V; no part for a
    one-word concept (the hold is off, with a warning)."""
    from types import SimpleNamespace

    from cu_cli.erase.prompts import build_pairs, word_prompts
    from cu_cli.erase.regularizers.kv_metric import KVMetric

    world = load_world()
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    parent_w = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    cfg = _kv_cfg(word_weight=5.0)

    def run(concept, kind):
        pair = build_pairs(concept, kind, None, world, seed=0)
        ctx = SimpleNamespace(cfg=cfg, pairs=[pair], world=world,
                              trainable={key: torch.nn.Parameter(parent_w.clone())},
                              parent_values={key: parent_w.clone()},
                              base_values=lambda: {key: torch.zeros(3, 4)},
                              pipe=SimpleNamespace(encode_text=_toy_encode), embed=_toy_encode)
        kv = KVMetric()
        kv.prepare(ctx, SimpleNamespace(parent_header=None, concepts=[concept]))
        return kv, pair

    kv, pair = run("neon fade", "style")
    want = word_prompts([pair], ["neon fade"])
    assert kv.info["word_prompts"] == len(want)
    (M, ref), = kv.parts
    assert torch.equal(ref[key], parent_w)
    assert torch.allclose(M, 5.0 * second_moment(_toy_encode(want)), rtol=1e-5)
    assert float(kv.terms({key: parent_w})[0]) == 0.0
    kv, _ = run("arrow", "object")
    assert kv.parts == [] and kv.info["word_prompts"] == 0


def test_world_keep_prompts_hold_the_unerased_vocabulary_outside_the_evaluation_grid():
    """World.keep_prompts: every style the chain has not erased (retained ones included: they are
    the model's vocabulary), each with the objects that are neither erased nor in the protocol's
    retain set, so no caption of the evaluation grid (retain objects) is held; objects alike."""
    world = load_world()
    erased = ["neon stripes", "ember dots", "arrow"]
    got = world.keep_prompts("style", erased)
    styles = [s for s in world.styles if s not in erased]
    objects = [o for o in world.objects if o not in erased and o not in world.retain["object"]]
    assert sorted(got) == sorted(world.caption(o, s) for s in styles for o in objects)
    assert any("neon dots" in p for p in got)  # a retained style is held
    assert not any(o in p.split() for p in got for o in world.retain["object"])
    assert not any(c in p for p in got for c in ("neon stripes", "ember dots", "a arrow "))
    got = world.keep_prompts("object", ["arrow", "neon stripes"])
    assert "a circle in ember dots style" in got and not any("arrow" in p for p in got)
    assert not any(s in p for p in got for s in world.retain["style"] + ["neon stripes"])
    assert world.keep_prompts("style", list(world.styles)) == []


def test_keep_weight_holds_the_vocabulary_at_the_root_base_and_needs_a_world():
    """keep_weight λ_k: the vocabulary prompts' moment (the parent's erased concepts and the
    request's left out), held at the root base's K/V; on a base without a world a usage error."""
    from types import SimpleNamespace

    from cu_cli.erase.prompts import build_pairs
    from cu_cli.erase.regularizers.kv_metric import KVMetric

    world = load_world()
    key = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
    parent_w = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    base_w = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    cfg = _kv_cfg(keep_weight=7.0, kind="style")
    header = SimpleNamespace(json=lambda k, d=None: ["neon stripes"] if k == "cu.erased" else d)
    plan = SimpleNamespace(parent_header=header, concepts=["ember dots"])

    def ctx(w):
        return SimpleNamespace(cfg=cfg, pairs=[build_pairs("ember dots", "style", None, world,
                                                           seed=0)], world=w,
                               trainable={key: torch.nn.Parameter(parent_w.clone())},
                               parent_values={key: parent_w.clone()},
                               base_values=lambda: {key: base_w.clone()},
                               pipe=SimpleNamespace(encode_text=_toy_encode), embed=_toy_encode)

    kv = KVMetric()
    kv.prepare(ctx(world), plan)
    want = world.keep_prompts("style", ["neon stripes", "ember dots"])
    assert kv.info["keep_prompts"] == len(want) > 0
    (M, ref), = kv.parts
    assert torch.equal(ref[key], base_w)
    assert torch.allclose(M, 7.0 * second_moment(_toy_encode(want)), rtol=1e-5)
    assert float(kv.terms({key: base_w})[0]) == 0.0 < float(kv.terms({key: parent_w})[0])
    with pytest.raises(UsageError, match="world"):
        KVMetric().prepare(ctx(None), plan)
