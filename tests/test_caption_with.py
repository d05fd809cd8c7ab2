"""``--set caption_with=…`` (erase/prompts.py, world/minicanvas.py): a world request erased from
the captions of the listed concepts of the other kind only — how a study holds the evaluation
grid's captions out of every erase (docs/erase.md, "The chain preset")."""

from __future__ import annotations

import json

import pytest

from cu_cli._util.errors import UsageError


def _world():
    from cu_cli.world.registry import get_world

    return get_world("minicanvas")


def test_caption_with_limits_the_pairs_to_the_listed_concepts_of_the_other_kind():
    from cu_cli.erase.prompts import build_pairs

    w = _world()
    full = build_pairs("neon stripes", "style", None, w, seed=0)
    part = build_pairs("neon stripes", "style", None, w, seed=0, caption_with="arrow, moon")
    assert len(full.target_prompts) == len(w.objects)
    assert part.target_prompts == ["a arrow in neon stripes style", "a moon in neon stripes style"]
    assert part.anchor_prompts == ["a arrow", "a moon"]
    obj = build_pairs("arrow", "object", None, w, seed=0, caption_with="ember dots")
    assert obj.target_prompts == ["a arrow in ember dots style"]
    assert obj.anchor_prompts == [w.caption(w.object_anchors["arrow"], "ember dots")]


@pytest.mark.parametrize("value, world", [("arrow,bogus", True), ("neon dots", True),
                                          ("arrow", False)])
def test_caption_with_refuses_unknown_concepts_and_bases_without_a_world(value, world):
    from cu_cli.erase.prompts import build_pairs

    with pytest.raises(UsageError):  # a style is not an object; no world: no captions to pick
        build_pairs("neon stripes", "style", None, _world() if world else None, seed=0,
                    caption_with=value)


def test_chain_scope_rebuilds_earlier_requests_with_their_own_captions(runner, tmp_path):
    """Request 2 in chain scope re-erases request 1 from the captions request 1 used (recorded
    in its lineage config), not from every caption of the world."""
    from cu_cli.cli.app import app
    from cu_cli.ckpt.checkpoint import open_checkpoint

    one, two = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    r = runner.invoke(app, ["erase", "--preset", "chain", "--concept", "neon stripes", "-q",
                            "--set", "caption_with=arrow,bolt", "-o", str(one)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["erase", "--preset", "chain", "--concept", "ember dots", "-q",
                            "--set", "caption_with=moon", "--from", str(one), "-o", str(two)])
    assert r.exit_code == 0, r.output
    steps = open_checkpoint(str(two)).json("cu.lineage")
    assert [s["config"]["caption_with"] for s in steps] == ["arrow,bolt", "moon"]
    uce = steps[-1]["measured"]["uce"]
    assert uce["concepts_solved"] == ["ember dots", "neon stripes"]
    first = steps[0]["measured"]["uce"]["erase_tokens"]
    assert uce["erase_tokens"] == first + first // 2  # 2 + 1 captions of equal token length
    r = runner.invoke(app, ["inspect", str(two), "--json"])
    assert r.exit_code == 0 and "caption_with" in r.output, r.output
    json.loads(r.output)
