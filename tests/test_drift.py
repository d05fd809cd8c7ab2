"""``cu drift``: zero on the base, exact norms on a known delta, parent steps along a chain."""

from __future__ import annotations

import json
import math

import torch

from cu_cli.cli.app import app
from cu_cli.models.base import resolve_base
from tests.helpers import kv_keys, make_ckpt


def test_drift_zero_for_base_copy(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    keys = kv_keys(base)[:4]
    p = make_ckpt(tmp_path / "same.safetensors", base, {k: torch.zeros(1) for k in keys})
    r = runner.invoke(app, ["drift", p, "--base", tiny_sd1, "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["states"][0]
    assert s["l2"] == 0 and s["l1"] == 0 and s["l2_vs_parent"] == 0


def test_drift_exact_norms_and_chain(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    k0, k1 = kv_keys(base)[:2]
    n0 = math.prod(base.shapes()[k0])
    a = make_ckpt(tmp_path / "a.safetensors", base, {k0: torch.full(base.shapes()[k0], 0.5)})
    d1 = torch.zeros(base.shapes()[k1])
    d1.view(-1)[0] = 3.0
    d1.view(-1)[1] = -4.0
    b = make_ckpt(tmp_path / "b.safetensors", base, {k1: d1}, parent=a)
    r = runner.invoke(app, ["drift", a, b, "--base", tiny_sd1, "--json", "--per-layer", "2"])
    assert r.exit_code == 0, r.output
    sa, sb = json.loads(r.stdout)["states"]
    assert math.isclose(sa["l2"], 0.5 * math.sqrt(n0), rel_tol=1e-6)
    assert math.isclose(sa["l1"], 0.5 * n0, rel_tol=1e-6)
    ref = base.get_tensors([k0])[k0].double()
    assert math.isclose(sa["l2_rel"], 0.5 * math.sqrt(n0) / float(ref.norm()), rel_tol=1e-6)
    assert math.isclose(sb["l2"], math.sqrt(0.25 * n0 + 25.0), rel_tol=1e-6)
    assert math.isclose(sb["l2_vs_parent"], 5.0, rel_tol=1e-6)
    assert math.isclose(sb["l1"], 0.5 * n0 + 7.0, rel_tol=1e-6)
    assert sb["layers"][0]["key"] == k0 and len(sb["layers"]) == 2
    assert sb["cos_prev_step"] == 0.0  # the two steps touch disjoint keys


def test_drift_default_base_from_header_and_plot(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    a = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    png = tmp_path / "d.png"
    r = runner.invoke(app, ["drift", a, "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "l2" in r.stdout.splitlines()[0]
