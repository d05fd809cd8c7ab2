"""``cu drift``: zero on the base, exact norms on a known delta, parent steps along a chain, the
union key set as the common denominator, and the projection leakage of ``--basis``."""

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
    ref = base.get_tensors([k0, k1])
    ref_norm = math.sqrt(sum(float(ref[k].double().pow(2).sum()) for k in (k0, k1)))
    # K = union of both files' keys: a's ‖θ_base‖ includes k1, which a does not store
    assert math.isclose(sa["l2_rel"], 0.5 * math.sqrt(n0) / ref_norm, rel_tol=1e-6)
    assert sa["n_params"] == sb["n_params"]
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


def test_drift_union_keys_common_denominator(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    k0, k1 = kv_keys(base)[:2]
    n0, n1 = math.prod(base.shapes()[k0]), math.prod(base.shapes()[k1])
    a = make_ckpt(tmp_path / "a.safetensors", base, {k0: torch.full(base.shapes()[k0], 0.5)})
    d1 = torch.zeros(base.shapes()[k1])
    d1.view(-1)[0], d1.view(-1)[1] = 3.0, -4.0
    b = make_ckpt(tmp_path / "b.safetensors", base, {k1: d1})  # a first erase with other keys
    ref = base.get_tensors([k0, k1])
    ref_norm = math.sqrt(sum(float(ref[k].double().pow(2).sum()) for k in (k0, k1)))
    n = n0 + n1
    for order in ([a, b], [b, a]):
        r = runner.invoke(app, ["drift", *order, "--base", tiny_sd1, "--json"])
        assert r.exit_code == 0, r.output
        by_path = {s["path"]: s for s in json.loads(r.stdout)["states"]}
        sa, sb = by_path[a], by_path[b]
        assert sa["n_params"] == sb["n_params"] == n
        assert math.isclose(sa["l2"], 0.5 * math.sqrt(n0), rel_tol=1e-6)
        assert math.isclose(sa["l2_rel"], 0.5 * math.sqrt(n0) / ref_norm, rel_tol=1e-6)
        assert math.isclose(sa["mean_abs"], 0.5 * n0 / n, rel_tol=1e-6)
        assert math.isclose(sa["mean_sq"], 0.25 * n0 / n, rel_tol=1e-6)
        assert sa["frac_changed"] == n0 / n
        assert math.isclose(sb["l2"], 5.0, rel_tol=1e-6)
        assert math.isclose(sb["l1"], 7.0, rel_tol=1e-6)
        assert math.isclose(sb["l2_rel"], 5.0 / ref_norm, rel_tol=1e-6)
        assert math.isclose(sb["mean_abs"], 7.0 / n, rel_tol=1e-6)
        assert math.isclose(sb["mean_sq"], 25.0 / n, rel_tol=1e-6)
        assert sb["frac_changed"] == 2 / n
        assert sa["parent"] == sb["parent"] == "base"
        assert sa["leakage"] is None and sb["leakage"] is None  # no --basis
        second = by_path[order[1]]
        assert second["cos_prev_step"] == 0.0  # both steps from the base, on disjoint keys


def _basis(tmp_path, base, d: int, n: int = 3, ident=None) -> tuple[str, torch.Tensor]:
    from cu_cli.ckpt.basis import write_basis
    from tests.helpers import base_identity

    C = torch.randn(d, n, generator=torch.Generator().manual_seed(1))
    path = str(tmp_path / "basis.safetensors")
    write_basis(path, C, ident or base_identity(base), {"cu.basis.target": "cat"})
    return path, C


def test_drift_basis_leakage(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    kv = kv_keys(base)[:4]
    d = base.shapes()[kv[0]][1]
    basis, C = _basis(tmp_path, base, d)
    U, S, _ = torch.linalg.svd(C.double(), full_matrices=False)
    Q = U[:, : int((S > S.max() * 1e-6).sum())]
    P = torch.eye(d, dtype=torch.float64) - Q @ Q.T  # exact projector off span(C)
    g = torch.Generator().manual_seed(0)
    shape = base.shapes()[kv[0]]
    rand = {k: torch.randn(shape, generator=g) * 0.1 for k in kv}
    proj = {k: ((torch.randn(shape, generator=g, dtype=torch.float64) * 0.1) @ P).float()
            for k in kv}
    other = next(k for k in base.shapes() if k.endswith("attn1.to_k.weight"))  # not cross-attn
    proj[other] = torch.randn(base.shapes()[other], generator=g)
    a = make_ckpt(tmp_path / "a.safetensors", base, rand)  # first erase: random ΔW
    b = make_ckpt(tmp_path / "b.safetensors", base, proj, parent=a)  # step ΔW = G·(I − QQᵀ)
    r = runner.invoke(app, ["drift", a, b, "--base", tiny_sd1, "--basis", basis, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    sa, sb = out["states"]
    assert out["basis"] == basis
    assert sa["leakage"]["against"] == "base" and sa["leakage"]["keys"] == len(kv)
    assert sa["leakage"]["mean"] > 0.05 and sa["leakage"]["max"] >= sa["leakage"]["mean"]
    assert sb["leakage"]["against"] == "parent" and sb["leakage"]["keys"] == len(kv)
    assert sb["leakage"]["max"] < 1e-5
    # the parent not given: b's update is measured against the base and includes a's random part
    r = runner.invoke(app, ["drift", b, "--base", tiny_sd1, "--basis", basis, "--json"])
    assert r.exit_code == 0, r.output
    lk = json.loads(r.stdout)["states"][0]["leakage"]
    assert lk["against"] == "base" and lk["mean"] > 0.05
    # the plain table shows the leakage columns only with --basis
    r = runner.invoke(app, ["drift", a, b, "--base", tiny_sd1, "--basis", basis,
                            "--per-layer", "0"])
    assert r.exit_code == 0, r.output
    head = r.stdout.splitlines()[0].split()
    assert "leak_mean" in head and "leak_max" in head and "leak_vs" in head
    assert "parent" in r.stdout.splitlines()[2].split()
    r = runner.invoke(app, ["drift", a, b, "--base", tiny_sd1, "--per-layer", "0"])
    assert "leak_mean" not in r.stdout.splitlines()[0]


def test_drift_basis_from_other_base_exits_3(runner, tmp_path, tiny_sd1):
    from cu_cli.ckpt.checkpoint import BaseIdentity

    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    a = make_ckpt(tmp_path / "a.safetensors", base, {k: torch.ones(1)})
    basis, _ = _basis(tmp_path, base, base.shapes()[k][1],
                      ident=BaseIdentity("other", "sha256:0", "sha256:0"))
    r = runner.invoke(app, ["drift", a, "--base", tiny_sd1, "--basis", basis, "--json"])
    assert r.exit_code == 3 and "basis" in r.stderr
    # a checkpoint is not a basis
    r = runner.invoke(app, ["drift", a, "--base", tiny_sd1, "--basis", a])
    assert r.exit_code == 3
