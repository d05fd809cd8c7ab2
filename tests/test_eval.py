"""``cu eval`` on the tiny pipeline with a fake classifier: prompts, seeds, metric arithmetic,
gates and outputs checked exactly (issue 7)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cu_cli.cli.app import app
from cu_cli.evaluate.metrics import compute_metrics, wilson
from cu_cli.evaluate.protocols import get_protocol
from cu_cli.models import classifiers as C


@pytest.fixture()
def fake_classifier(monkeypatch):
    """Predicts class = (sum of pixels) mod C: deterministic, image-dependent."""
    def factory(arg, domain, classes):
        import torch

        def fn(x):
            idx = (x.mul(255).round().sum(dim=(1, 2, 3)).long() % len(classes))
            return torch.nn.functional.one_hot(idx, len(classes)).float()
        return C.Classifier(f"fake-{domain}", list(classes), fn)

    monkeypatch.setitem(C.CLASSIFIERS, "fake", {"doc": "test", "factory": factory, "url": None})
    return lambda imgs, classes: [classes[int(v) % len(classes)]
                                  for v in imgs.astype(np.int64).sum(axis=(1, 2, 3))]


def test_unlearncanvas_prompts_and_grid():
    p = get_protocol("unlearncanvas-style")
    assert p.prompt("Van_Gogh", "Dogs") == "A Dogs image in Van Gogh style."
    assert get_protocol("unlearncanvas-style", "cuig").prompt("Van_Gogh", "Dogs") == \
        "A Dogs image in Van_Gogh style"
    grid = p.grid(["Abstractionism"])
    assert len(grid) == (1 + 12) * 8 * 5
    assert p.seeds == (188, 288, 588, 688, 888) and p.steps == 100 and p.guidance == 9.0
    assert len(p.styles) == 51 and p.styles.index("Seed_Images") == p.styles.index("Rust") + 1
    o = get_protocol("unlearncanvas-object")
    assert len(o.grid(["Bears", "Birds"])) == (2 + 8) * 12 * 5


def test_minicanvas_wide_protocols_cross_every_concept_of_the_other_domain():
    """-wide: the same sampler, seeds and retain_in, with retain_cross = every object (style
    runs) or every style (object runs): 4x the images per erased concept."""
    for domain, cross in (("style", "objects"), ("object", "styles")):
        narrow = get_protocol(f"minicanvas-{domain}")
        wide = get_protocol(f"minicanvas-{domain}-wide")
        assert (wide.domain, wide.retain_in, wide.seeds, wide.steps, wide.guidance) == \
            (narrow.domain, narrow.retain_in, narrow.seeds, narrow.steps, narrow.guidance)
        assert wide.retain_cross == getattr(narrow, cross) and len(wide.retain_cross) == 16
        e = [narrow.erase_order[0]]
        assert len(wide.grid(e)) == 4 * len(narrow.grid(e))


def test_metric_arithmetic():
    rows = ([{"concept": "A", "other": "x", "ok_primary": i < 1, "ok_secondary": True} for i in range(4)]
            + [{"concept": "R", "other": "x", "ok_primary": i < 3, "ok_secondary": i < 2}
               for i in range(4)])
    m = compute_metrics(rows, ["A"], ["R"], ["x"])
    assert m["ua"] == 75.0 and m["ra_i"] == 75.0
    assert m["ra_c"] == pytest.approx(100 * 6 / 8)
    clean = compute_metrics(rows, ["A"], ["R"], ["x"], cra_scope="clean")
    assert clean["ra_c"] == 50.0
    lo, hi = wilson(1, 4)
    assert lo < 25 < hi and m["ci95"]["per_concept"]["A"] == [lo, hi]
    assert compute_metrics(rows, [], ["R"], ["x"])["ua"] is None


def test_eval_unlearncanvas_exact(runner, tiny_sd1, fake_classifier):
    from cu_cli._util.seed import derive_seed
    from cu_cli.models.base import resolve_base

    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--protocol", "unlearncanvas-style",
                            "--classifier", "fake", "--erased", "Abstractionism", "--seeds", "1",
                            "--steps", "2", "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["protocol"] == "unlearncanvas-style"
    (s,) = out["states"]
    assert s["path"] is None and s["erased"] == ["Abstractionism"] and s["images"] == 13 * 8
    # recompute everything from the same prompts and seeds
    p = get_protocol("unlearncanvas-style")
    grid = [(c, o, 188) for c in ["Abstractionism"] + list(p.retain_in) for o in p.retain_cross]
    prompts = [p.prompt(c, o) for c, o, _ in grid]
    pipe = resolve_base(tiny_sd1).load_pipeline()
    imgs = pipe.sample(prompts, [derive_seed(188, q) for q in prompts], steps=2, guidance=9.0)
    ps = fake_classifier(imgs, p.styles)
    po = fake_classifier(imgs, p.objects)
    acc = lambda c: 100 * np.mean([ps[i] == c for i, g in enumerate(grid) if g[0] == c])  # noqa
    assert s["metrics"]["ua"] == pytest.approx(100 - acc("Abstractionism"))
    assert s["metrics"]["ra_i"] == pytest.approx(np.mean([acc(c) for c in p.retain_in]))
    acc_o = lambda o: 100 * np.mean([po[i] == o for i, g in enumerate(grid) if g[1] == o])  # noqa
    assert s["metrics"]["ra_c"] == pytest.approx(np.mean([acc_o(o) for o in p.retain_cross]))
    assert s["metrics"]["n_images"]["Abstractionism"] == 8


def test_gates(runner, tiny_sd1, fake_classifier):
    args = ["eval", "--base", tiny_sd1, "--protocol", "unlearncanvas-object", "--classifier",
            "fake", "--seeds", "1", "--steps", "1", "-q"]
    r = runner.invoke(app, args + ["--erased", "Bears", "--fail-under", "ra_i=101"])
    assert r.exit_code == 4 and "gate failed" in r.stderr
    r = runner.invoke(app, args + ["--erased", "Bears", "--fail-under", "ra_i=0"])
    assert r.exit_code == 0
    r = runner.invoke(app, args + ["--fail-under", "ua=50"])
    assert r.exit_code == 2 and "undefined" in r.stderr
    r = runner.invoke(app, args + ["--erased", "Van_Gogh"])
    assert r.exit_code == 2


def test_chain_plot_grid_and_matrix(runner, tmp_path, tiny_sd1, fake_classifier):
    import torch

    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(tiny_sd1)
    k = kv_keys(base)
    a = make_ckpt(tmp_path / "a.safetensors", base, {k[0]: torch.randn(base.shapes()[k[0]])},
                  ["Bears"])
    b = make_ckpt(tmp_path / "b.safetensors", base, {k[1]: torch.randn(base.shapes()[k[1]])},
                  ["Birds"], parent=a)
    png, sheet = tmp_path / "p.png", tmp_path / "g.png"
    r = runner.invoke(app, ["eval", a, b, "--protocol", "unlearncanvas-object", "--classifier",
                            "fake", "--seeds", "1", "--steps", "1", "--with-base", "--plot",
                            str(png), "--grid", str(sheet), "--json", "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert [s["path"] for s in out["states"]] == [None, a, b]
    assert out["states"][2]["erased"] == ["Bears", "Birds"]
    assert len(out["retention"]["rows"]) == 3 and "Bears" in out["retention"]["concepts"]
    assert png.read_bytes()[:4] == b"\x89PNG" and sheet.read_bytes()[:4] == b"\x89PNG"


def test_gates_ignore_the_base_row(runner, tmp_path, tiny_sd1, fake_classifier):
    import torch

    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(tiny_sd1)
    a = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.zeros(1)}, ["Bears"])
    args = ["eval", a, "--protocol", "unlearncanvas-object", "--classifier", "fake", "--seeds",
            "1", "--steps", "1", "-q", "--json"]
    plain = json.loads(runner.invoke(app, args).stdout)["states"][0]["metrics"]["ua"]
    r = runner.invoke(app, args + ["--with-base", "--fail-under", f"ua={plain}"])
    assert r.exit_code == 0, r.output


# ------------------------------------------------------ concept spelling (issue 17: Van Gogh ↔ Van_Gogh)
def test_protocol_match_is_case_space_underscore_insensitive():
    from cu_cli._util.errors import UsageError

    p = get_protocol("unlearncanvas-style")
    assert p.match(["Van Gogh", "van_gogh", "VAN  GOGH", "Van_Gogh", " pop art "]) == \
        ["Van_Gogh"] * 4 + ["Pop_Art"]
    with pytest.raises(UsageError, match="closest: Van_Gogh"):
        p.match(["Van Goh"], "--erased")
    with pytest.raises(UsageError, match="not a style of protocol unlearncanvas-style"):
        p.match(["Bears"])
    assert get_protocol("unlearncanvas-object").match(["bears"]) == ["Bears"]


def test_eval_maps_given_and_recorded_spellings(runner, tmp_path, tiny_sd1, fake_classifier):
    import torch

    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    retain = tmp_path / "retain.txt"
    retain.write_text("bricks\n")
    args = ["eval", "--base", tiny_sd1, "--protocol", "unlearncanvas-style", "--classifier",
            "fake", "--seeds", "1", "--steps", "1", "--retain-file", str(retain), "--json"]
    r = runner.invoke(app, args + ["--erased", "Van Gogh"])
    assert r.exit_code == 0, r.output
    (s,) = json.loads(r.stdout)["states"]
    assert s["erased"] == ["Van_Gogh"] and s["images"] == 2 * 8
    assert "'Van Gogh' is spelled 'Van_Gogh'" in r.stderr
    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    a = make_ckpt(tmp_path / "a.safetensors", base, {k: torch.randn(base.shapes()[k])},
                  ["Van Gogh"])
    r = runner.invoke(app, args[:1] + [a] + args[3:])
    assert r.exit_code == 0, r.output
    (s,) = json.loads(r.stdout)["states"]
    assert s["path"] == a and s["erased"] == ["Van_Gogh"]
    r = runner.invoke(app, args + ["--erased", "Van Goh"])
    assert r.exit_code == 2 and "closest: Van_Gogh" in r.stderr and r.stdout == ""
