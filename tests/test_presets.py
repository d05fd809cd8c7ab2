"""--preset (erase/presets.py): a world's named option set fills what the user left unset; cu
run's sequential setting asks for ``auto`` when a study gives no erase option (issue 19)."""

from __future__ import annotations

import pytest

from cu_cli._util.errors import UsageError


def _plan(base, tmp_path, values, **kw):
    from cu_cli.erase.options import build_config
    from cu_cli.erase.plan import EraseRequest, plan_erase

    cfg, _ = build_config(values, {}, where="test")
    return plan_erase(EraseRequest(concepts=kw.pop("concepts", ["neon stripes"]),
                                   out=str(tmp_path / "o.safetensors"), cfg=cfg, base=base,
                                   seed=1, device="cpu", **kw))


def test_apply_preset_fills_only_unset_options_and_resolves_auto():
    from cu_cli.erase.options import EraseConfig
    from cu_cli.erase.presets import apply_preset

    presets = {"chain": {"style": {"method": "uce", "keep_weight": 2.0, "reg_ref": "base"},
                         "object": {}}}
    got = apply_preset(EraseConfig(preset="chain", keep_weight=5.0), presets, kind="style")
    assert (got.method, got.keep_weight, got.reg_ref, got.preset) == ("uce", 5.0, "base", "chain")
    assert apply_preset(EraseConfig(preset="auto"), presets, kind="style").method == "uce"
    obj = apply_preset(EraseConfig(preset="auto"), presets, kind="object")
    assert obj.preset == "chain" and obj.method is None  # the object defaults are its chain's
    # auto keeps the defaults once a chain mixes kinds or holds a request made without the preset
    for earlier in ([("chain", "object")], [("none", "style")], [(None, "style")]):
        mixed = apply_preset(EraseConfig(preset="auto"), presets, kind="style", earlier=earlier)
        assert mixed.preset == "none" and mixed.method is None, earlier
    assert apply_preset(EraseConfig(preset="auto"), presets, kind="style",
                        earlier=[("chain", "style")] * 3).method == "uce"
    nothing = apply_preset(EraseConfig(preset="auto"), {}, kind="style")
    assert nothing.preset == "none" and nothing.method is None
    assert apply_preset(EraseConfig(), presets) == EraseConfig(preset="none")
    with pytest.raises(UsageError, match="declares no such preset"):
        apply_preset(EraseConfig(preset="chain"), {}, "base sd1", kind="object")
    with pytest.raises(UsageError, match="--method uce configuration"):
        apply_preset(EraseConfig(preset="chain", method="conabl"), presets, kind="style")


def test_minicanvas_chain_preset_resolves_to_the_measured_chain_settings(tmp_path):
    from cu_cli.world.minicanvas_profile import ERASE_PRESETS

    p = _plan("minicanvas", tmp_path, {"preset": "chain"})
    assert p.config.preset == "chain"
    for k, v in ERASE_PRESETS["chain"]["style"].items():
        assert getattr(p.config, k) == v, k
    assert _plan("minicanvas", tmp_path, {"preset": "auto"}).key() == p.key()
    # an object request gets the object chain settings (UCE chain scope, contrast push η 1.0)
    o = _plan("minicanvas", tmp_path, {"preset": "chain"}, concepts=["arrow"])
    assert o.config.preset == "chain" and o.config.kind == "object"
    for k, v in ERASE_PRESETS["chain"]["object"].items():
        assert getattr(o.config, k) == v, k
    assert o.config.uce_weighting in (None, "column")
    assert o.key() != p.key()
    mine = _plan("minicanvas", tmp_path, {"preset": "chain", "keep_weight": 5})
    assert mine.config.keep_weight == 5.0 and mine.key() != p.key()
    plain = _plan("minicanvas", tmp_path, {})
    assert plain.config.method == "conabl" and plain.config.preset == "none"
    # preset none is the neutral value: plans recorded before --preset keep their key
    assert _plan("minicanvas", tmp_path, {"preset": "none"}).key() == plain.key()


def test_a_real_base_has_no_preset(tmp_path, tiny_sd1, runner):
    from cu_cli.cli.app import app

    auto = _plan(tiny_sd1, tmp_path, {"preset": "auto", "kind": "object", "anchor": "dog"},
                 concepts=["cat"])
    assert auto.config.preset == "none"
    out = tmp_path / "x.safetensors"
    r = runner.invoke(app, ["erase", "--base", tiny_sd1, "--concept", "cat", "--kind", "object",
                            "--anchor", "dog", "--preset", "chain", "-q", "-o", str(out)])
    assert r.exit_code == 2 and "declares no such preset" in r.output, r.output
    assert not out.exists()


def test_sequential_study_without_erase_options_asks_for_the_chain_preset(tmp_path):
    from cu_cli.run.study import load_study

    def study(body):
        path = tmp_path / "s.yaml"
        path.write_text("base: minicanvas\nsequence: minicanvas-style\n" + body)
        return load_study(str(path))

    assert study("setting: sequential\n").erase == {"preset": "auto"}
    assert study("setting: sequential\nerase: {}\n").erase == {"preset": "auto"}
    assert study("setting: sequential\nerase: {preset: none}\n").erase == {"preset": "none"}
    assert study("setting: sequential\nerase: {lr: 0.001}\n").erase == {"lr": 0.001}
    assert study("setting: simultaneous\n").erase == {}


def test_auto_follows_the_lineage_of_a_real_chain(tmp_path, runner):
    """A MiniCanvas style state made with --preset chain records it; auto from it is chain for
    the next style and none for an object request (a kind switch)."""
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.cli.app import app
    from cu_cli.erase.presets import earlier_requests

    first = tmp_path / "s1.safetensors"
    r = runner.invoke(app, ["erase", "--base", "minicanvas", "--concept", "neon stripes",
                            "--preset", "chain", "-q", "--seed", "1", "-o", str(first)])
    assert r.exit_code == 0, r.output
    assert earlier_requests(open_checkpoint(str(first))) == [("chain", "style")]
    nxt = _plan(None, tmp_path, {"preset": "auto"}, concepts=["ember dots"], parent=str(first))
    assert nxt.config.preset == "chain" and nxt.config.uce_scope == "chain"
    obj = _plan(None, tmp_path, {"preset": "auto"}, concepts=["arrow"], parent=str(first))
    assert obj.config.preset == "none" and obj.config.method == "conabl"
