"""A chain-scope UCE solve over a chain that mixes kinds (objectives/uce.py,
erase/lineage_pairs.py): every earlier concept is re-solved with the push its own request used,
and ``balanced`` weighting moves erase weight only among the concepts of one kind."""

from __future__ import annotations

import torch


def test_solved_with_reads_a_uce_steps_push_and_ignores_other_methods():
    from cu_cli.erase.lineage_pairs import solved_with

    assert solved_with({"method": "uce", "uce_eta": 0.35, "uce_push": "both",
                        "uce_weighting": "balanced"}) == (0.35, "both", "balanced")
    assert solved_with({"method": "uce", "uce_eta": 1}) == (1.0, "anchor", "column")
    assert solved_with({"method": "conabl", "uce_eta": None}) is None
    assert solved_with({}) is None


def test_balance_groups_keep_each_kind_apart_and_one_kind_is_one_group():
    from cu_cli.erase.objectives.uce import _balance_groups

    one = _balance_groups(["style"] * 3, ["balanced"] * 3)
    assert [g.tolist() for g in one] == [[0, 1, 2]]
    mixed = _balance_groups(["style", "object", "style", "object", "style"],
                            ["balanced", "column", "balanced", "column", "balanced"])
    assert [g.tolist() for g in mixed] == [[0, 2, 4]]  # the column-weighted objects stay at 1
    both = _balance_groups(["style", "object", "object", "style"], ["balanced"] * 4)
    assert [g.tolist() for g in both] == [[0, 3], [1, 2]]
    assert _balance_groups(["style", "object"], ["balanced", "balanced"]) == []
    assert _balance_groups(["style"] * 2, ["column"] * 2) == []


def test_rebalancing_a_group_keeps_its_total_and_leaves_the_rest(monkeypatch):
    from cu_cli.ops.balance import rebalance

    w = torch.ones(4, dtype=torch.float64)
    counts = torch.tensor([2, 3, 2, 5])
    g = torch.tensor([0, 2])
    w[g] = rebalance(w[g], torch.tensor([0.4, 0.1], dtype=torch.float64), counts[g])
    assert w[1] == 1 and w[3] == 1
    assert torch.isclose((counts[g] * w[g]).sum(), torch.tensor(4.0, dtype=torch.float64))
    assert w[0] > 1 > w[2]  # weight moves to the less-erased concept of the group


def test_mixed_chain_resolves_each_earlier_concept_with_its_own_request_push(runner, tmp_path):
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.cli.app import app

    one, two = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    r = runner.invoke(app, ["erase", "--preset", "chain", "--concept", "neon stripes", "-q",
                            "-o", str(one)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["erase", "--preset", "chain", "--concept", "arrow", "-q",
                            "--from", str(one), "-o", str(two)])
    assert r.exit_code == 0, r.output
    steps = open_checkpoint(str(two)).json("cu.lineage")
    assert [s["config"]["uce_push"] for s in steps] == ["both", "contrast"]
    uce = steps[-1]["measured"]["uce"]
    assert uce["concepts_solved"] == ["arrow", "neon stripes"]
    assert uce["solved_with"] == {"arrow": [1.0, "contrast", "column"],
                                  "neon stripes": [0.35, "both", "balanced"]}
    assert uce["push_fallback_prompts"] == 0


def test_cross_kind_captions_are_dropped_from_both_pairs_and_one_kind_is_untouched():
    from cu_cli.erase.objectives.uce import _without_cross_kind_captions
    from cu_cli.erase.prompts import build_pairs
    from cu_cli.world.registry import get_world

    w = get_world("minicanvas")
    style = build_pairs("neon stripes", "style", None, w, seed=0)
    obj = build_pairs("arrow", "object", None, w, seed=0)
    other = build_pairs("ember dots", "style", None, w, seed=0)
    same, n = _without_cross_kind_captions([style, other])
    assert n == 0 and same[0] is style and same[1] is other
    (s2, o2), n = _without_cross_kind_captions([style, obj])
    assert "a arrow in neon stripes style" not in s2.target_prompts + o2.target_prompts
    assert len(s2.target_prompts) == len(style.target_prompts) - 1
    assert len(o2.target_prompts) == len(obj.target_prompts) - 1 and n == 2
    assert "a tree in neon stripes style" not in o2.anchor_prompts


def test_keep_plain_holds_objects_in_their_style_free_caption_when_every_context_is_erased():
    """keep_prompts (the vocabulary hold) in a stream that erased every style outside the retain
    set: no style context is left, ``plain`` still holds each object in "a {object}"."""
    from cu_cli.world.registry import get_world

    w = get_world("minicanvas")
    styles_gone = [s for s in w.styles if s not in w.retain["style"]]
    erased = styles_gone + ["arrow"]
    assert w.keep_prompts("object", erased) == []
    plain = w.keep_prompts("object", erased, plain=True)
    assert plain == [w.caption(o, None) for o in w.objects if o != "arrow"]
    assert not any(s in p for p in plain for s in w.styles)  # no caption of the grid
    assert w.keep_prompts("style", ["arrow"], plain=True) == w.keep_prompts("style", ["arrow"])


def test_keep_plain_without_the_vocabulary_hold_is_a_usage_error(runner, tmp_path):
    from cu_cli.cli.app import app

    out = tmp_path / "x.safetensors"
    r = runner.invoke(app, ["erase", "--concept", "arrow", "-q", "--set", "keep_plain=true",
                            "-o", str(out)])
    assert r.exit_code == 2 and "keep-weight" in r.output, r.output
    assert not out.exists()
