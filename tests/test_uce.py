"""UCE's closed form (ops/closed_form.py) on small matrices, and `cu erase --method uce` on the
tiny pipeline (issue 16)."""

from __future__ import annotations

import pytest
import torch

from cu_cli.ops.closed_form import complement, protected_directions, solve_update


def toy(seed=0, d_out=5, d=8, n=3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d_out, d, generator=g, dtype=torch.float64),
            torch.randn(d, n, generator=g, dtype=torch.float64),
            torch.randn(d_out, n, generator=g, dtype=torch.float64))


def test_solution_satisfies_the_normal_equations():
    W, C, V = toy()
    H = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    M = 0.7 * H @ H.T / 4
    dW, cond = solve_update(W, C, V, M, lam=0.3, scale=2.0)
    A = (2.0 / 3) * C @ C.T + M + 0.3 * torch.eye(8, dtype=torch.float64)
    assert torch.allclose(dW @ A, (2.0 / 3) * (V - W @ C) @ C.T, atol=1e-10)
    assert cond > 1


def test_huge_lambda_returns_w_ref_and_tiny_lambda_maps_each_target_exactly():
    W, C, V = toy()
    dW, _ = solve_update(W, C, V, None, lam=1e12)
    assert dW.abs().max() < 1e-9
    dW, _ = solve_update(W, C, V, None, lam=1e-10)
    assert torch.allclose((W + dW) @ C, V, atol=1e-6)


def test_nullspace_variant_leaves_preserved_states_unchanged():
    W, C, V = toy()
    H = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    Q = complement(protected_directions(H @ H.T, 1e-8))
    assert Q.shape == (8, 5)
    dW, _ = solve_update(W, C, V, None, lam=1e-3, Q=Q)
    assert (dW @ H).abs().max() < 1e-9 and dW.abs().max() > 1e-3


def test_a_second_request_keeps_the_first_erased_when_preserved_at_its_erased_state():
    W0, C1, V1 = toy(0, n=2)
    dW, _ = solve_update(W0, C1, V1, None, lam=1e-8)
    W1 = W0 + dW  # request 1: C1 -> V1
    _, C2, V2 = toy(5, n=2)
    M = 1e4 * C1 @ C1.T / 2  # the first concept's states, preserved toward the parent W1
    dW2, _ = solve_update(W1, C2, V2, M, lam=1e-6)
    W2 = W1 + dW2
    assert torch.allclose(W2 @ C1, V1, atol=1e-3)
    assert (W2 @ C2 - V2).norm() < 0.1 * (W1 @ C2 - V2).norm()


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_cu_erase_uce_on_the_tiny_pipeline(runner, tmp_path, family, request):
    tiny = request.getfixturevalue(f"tiny_{family}")
    from cu_cli.cli.app import app
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.ckpt.format import load_tensors
    from cu_cli.models.base import resolve_base

    out = tmp_path / "u.safetensors"
    args = ["erase", "--base", tiny, "--method", "uce", "--concept", "cat", "--kind",
            "object", "--anchor", "dog", "-q", "--seed", "3"]
    r = runner.invoke(app, [*args, "-o", str(out)])
    assert r.exit_code == 0, r.output
    step = open_checkpoint(str(out)).json("cu.lineage")[-1]
    assert step["method"] == "uce" and step["measured"]["uce"]["cond_max"] >= 1
    w = load_tensors(str(out))
    ref = resolve_base(tiny).get_tensors(sorted(w))
    assert any(not torch.equal(w[k], ref[k]) for k in w)
    r2 = runner.invoke(app, [*args, "-o", str(tmp_path / "u2.safetensors")])
    assert open_checkpoint(str(tmp_path / "u2.safetensors")).payload_sha256 == \
        open_checkpoint(str(out)).payload_sha256
    for bad, msg in ((["--l2", "5"], "--uce-lambda"), (["--uce-nullspace"], "preserved states"),
                     (["--params", "xattn"], "kv-xattn"),
                     (["--set", "uce_push=contrast"], "vocabulary")):
        r = runner.invoke(app, [*args, *bad, "-o", str(tmp_path / "bad.safetensors")])
        assert r.exit_code == 2 and msg in r.output, r.output


def test_pull_term_moves_preserved_states_toward_their_own_reference():
    """preserve_ref base: a metric part held at W_ref + D adds D·M to the normal equations, so
    with no erase pairs ΔW = D·M·(M + λI)⁻¹ (ops/closed_form.py)."""
    import torch

    from cu_cli.ops.closed_form import solve_update

    g = torch.Generator().manual_seed(3)
    W = torch.randn(5, 4, generator=g, dtype=torch.float64)
    H = torch.randn(4, 9, generator=g, dtype=torch.float64)
    M, D, lam = H @ H.T / 9, torch.randn(5, 4, generator=g, dtype=torch.float64), 0.1
    C, V = torch.zeros(4, 0, dtype=torch.float64), torch.zeros(5, 0, dtype=torch.float64)
    dW, _ = solve_update(W, C, V, M, lam, pull=D @ M)
    want = D @ M @ torch.linalg.inv(M + lam * torch.eye(4, dtype=torch.float64))
    assert torch.allclose(dW, want, atol=1e-10)
    # the preserved states end near W + D (what the base gives them), not at W
    assert ((W + dW - (W + D)) @ H).norm() < 0.2 * (D @ H).norm()


def test_chain_scope_makes_each_state_the_simultaneous_edit_from_the_base(runner, tmp_path,
                                                                         tiny_sd1):
    """--uce-scope chain: request 2 from request 1's state re-solves both concepts from the root
    base, so its K/V equal the one-shot two-concept edit (the column order aside); without
    --reg-ref base, or when an earlier request cannot be rebuilt, a usage error."""
    from cu_cli.cli.app import app
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.ckpt.format import load_tensors

    common = ["--base", tiny_sd1, "--method", "uce", "--kind", "object", "--anchor", "dog",
              "-q", "--seed", "3", "--reg-ref", "base"]

    def erase(name, *args):
        out = tmp_path / f"{name}.safetensors"
        r = runner.invoke(app, ["erase", *common, *args, "-o", str(out)])
        assert r.exit_code == 0, r.output
        return str(out)

    first = erase("a", "--concept", "cat")
    chain = erase("b", "--from", first, "--concept", "bird", "--uce-scope", "chain")
    both = erase("ab", "--concept", "cat", "--concept", "bird")
    step = open_checkpoint(chain).json("cu.lineage")[-1]["measured"]["uce"]
    assert step["scope"] == "chain" and sorted(step["concepts_solved"]) == ["bird", "cat"]
    wc, wb = load_tensors(chain), load_tensors(both)
    assert sorted(wc) == sorted(wb)
    assert all(torch.allclose(wc[k], wb[k], atol=1e-5) for k in wc)
    # the request scope stacks on the parent instead: a different state
    stacked = load_tensors(erase("s", "--from", first, "--concept", "bird"))
    assert any(not torch.allclose(stacked[k], wb[k], atol=1e-4) for k in wb)

    r = runner.invoke(app, ["erase", *common[:-2], "--from", first, "--concept", "bird",
                            "--uce-scope", "chain", "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2 and "--reg-ref base" in r.output, r.output
    anchors = tmp_path / "anchors.txt"
    anchors.write_text("a photo of a dog\na dog\n")
    from_file = erase("f", "--concept", "cat", "--anchor-prompts", str(anchors))
    r = runner.invoke(app, ["erase", *common, "--from", from_file, "--concept", "bird",
                            "--uce-scope", "chain", "-o", str(tmp_path / "y.safetensors")])
    assert r.exit_code == 2 and "cannot be rebuilt" in r.output and "cat" in r.output, r.output
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


def test_concept_weighting_gives_each_concept_the_weight_of_a_request_of_its_own():
    """uce_weighting concept: w_e = N / N_c(e), so each concept's columns sum to N (the solve's
    s/N then gives each concept s); one concept, or column weighting: no reweighting."""
    from cu_cli.erase.objectives.uce import _column_weights

    w = _column_weights([0, 0, 0, 1], "concept") ** 2
    assert torch.allclose(w, torch.tensor([4 / 3, 4 / 3, 4 / 3, 4.0]))
    assert torch.isclose(w[:3].sum(), w[3:].sum())
    assert torch.allclose(_column_weights([0, 0, 0], "concept"), torch.ones(3))
    assert _column_weights([0, 0, 1], "column") is None
    # weighted solve == the solve on duplicated columns (concept 1's single column counted 3x)
    W, C, V = toy(n=4)
    sw = _column_weights([0, 0, 0, 1], "concept")
    a, _ = solve_update(W, C * sw.double(), V * sw.double(), None, lam=0.3)
    dup = torch.cat([C[:, :3], C[:, 3:].repeat(1, 3)], 1)
    b, _ = solve_update(W, dup, torch.cat([V[:, :3], V[:, 3:].repeat(1, 3)], 1), None, lam=0.3)
    assert not torch.allclose(a, b)  # per column: 1/3, 1/3, 1/3, 1 vs 1/6 ... and 3/6
    c, _ = solve_update(W, dup, torch.cat([V[:, :3], V[:, 3:].repeat(1, 3)], 1), None, lam=0.3,
                        scale=2.0)
    assert torch.allclose(a, c, atol=1e-8)


def test_balanced_weights_keep_the_total_and_equalise_what_is_left_of_each_edit():
    """ops/balance.py: IRLS toward equal residual fractions ρ_c; Σ_c N_c w_c stays N, and the
    concept the column weighting leaves least erased gets more weight each round."""
    from cu_cli.ops.balance import W_MAX, rebalance

    counts = torch.tensor([3, 1])
    w = rebalance(torch.ones(2), torch.tensor([0.2, 0.6]), counts)
    assert torch.isclose((counts * w).sum(), torch.tensor(4.0, dtype=torch.float64))
    assert w[1] > 1 > w[0]
    assert torch.allclose(rebalance(torch.ones(2), torch.tensor([0.3, 0.3]), counts),
                          torch.ones(2, dtype=torch.float64))
    assert rebalance(torch.ones(2), torch.tensor([1e-9, 1.0]), torch.tensor([1, 1])).max() <= W_MAX
    # on a toy two-concept edit with a preserve metric, rounds of rebalancing narrow the spread
    g = torch.Generator().manual_seed(3)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    C = torch.randn(6, 4, generator=g, dtype=torch.float64)
    C[:, 2:] = C[:, :2] * 0.2 + 0.8 * C[:, 2:]
    V = torch.randn(4, 4, generator=g, dtype=torch.float64)
    H = C[:, 2:] + 0.05 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    M = 2.0 * H @ H.T  # a hold that conflicts with concept 1's columns
    owner = torch.tensor([0, 0, 1, 1])
    before = torch.zeros(2, dtype=torch.float64).index_add_(0, owner, ((W @ C - V) ** 2).sum(0))

    def fractions(weights):
        sw = weights.sqrt()[owner]
        dW, _ = solve_update(W, C * sw, V * sw, M, lam=0.1)
        r = (((W + dW) @ C - V) ** 2).sum(0)
        return torch.zeros(2, dtype=torch.float64).index_add_(0, owner, r) / before

    weights = torch.ones(2, dtype=torch.float64)
    rho0 = fractions(weights)
    for _ in range(6):
        weights = rebalance(weights, fractions(weights), torch.tensor([2, 2]))
    rho = fractions(weights)
    assert (rho.max() - rho.min()) < 0.5 * (rho0.max() - rho0.min())
    assert rho.max() < rho0.max()


def test_contrast_push_uses_same_length_siblings_and_leaves_shared_positions_unpushed():
    """erase/contrast.py: c̄ = the mean state of the prompt with the concept replaced by each
    sibling of its kind; with a causal encoder the positions before the concept equal c̄ (no
    push), a sibling of another token length is left out, a prompt without the concept has none."""
    from types import SimpleNamespace

    from cu_cli.erase.contrast import sibling_states
    from cu_cli.erase.prompts import replace_word

    assert replace_word("a star in neon stripes style", "neon stripes", "ember dots") == \
        ("a star in ember dots style", True)
    assert not replace_word("a starfish in neon style", "star", "moon")[1]
    vocab = {w: i + 2 for i, w in enumerate("a star moon in neon ember ocean deep stripes dots "
                                             "fade style".split())}
    L, EOS = 10, 1
    g = torch.Generator().manual_seed(0)
    table = torch.randn(len(vocab) + 2, 5, generator=g)

    def tokenize(prompts):
        rows = [[0] + [vocab[w] for w in p.split()] + [EOS] for p in prompts]
        return torch.tensor([r + [EOS] * (L - len(r)) for r in rows])

    def embed(prompts):
        return table[tokenize(prompts)].cumsum(1)  # causal: state j sees tokens ≤ j

    world = SimpleNamespace(concepts=lambda kind: ["neon stripes", "ember dots", "ocean fade",
                                                   "ocean deep dots"])
    ctx = SimpleNamespace(world=world, pipe=SimpleNamespace(tokenize=tokenize), embed=embed,
                          cfg=SimpleNamespace(match="word"))
    pair = SimpleNamespace(concept="neon stripes", kind="style")
    prompts = ["a star in neon stripes style", "a moon in ember dots style"]
    bar = sibling_states(ctx, pair, prompts, tokenize(prompts).tolist(), EOS)
    assert bar[1] is None
    want = embed(["a star in ember dots style", "a star in ocean fade style"]).mean(0)
    assert torch.allclose(bar[0], want)  # "ocean deep dots" (one token longer) is left out
    h = embed(prompts[:1])[0]
    assert torch.allclose(bar[0][:4], h[:4]) and not torch.allclose(bar[0][4:], h[4:])


def test_minicanvas_chain_preset_pushes_away_from_sibling_styles(runner, tmp_path):
    """The MiniCanvas style chain preset uses uce_push both: every target prompt finds siblings
    (no fallback to the anchor push), the lineage records it, and the state differs from the
    anchor push's."""
    from cu_cli.cli.app import app
    from cu_cli.ckpt.checkpoint import open_checkpoint

    args = ["erase", "--preset", "chain", "--concept", "neon stripes", "-q", "--seed", "0"]
    both, anchor = tmp_path / "both.safetensors", tmp_path / "anchor.safetensors"
    r = runner.invoke(app, [*args, "-o", str(both)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*args, "--set", "uce_push=anchor", "-o", str(anchor)])
    assert r.exit_code == 0, r.output
    u = open_checkpoint(str(both)).json("cu.lineage")[-1]["measured"]["uce"]
    assert u["push"] == "both" and u["push_fallback_prompts"] == 0 and u["weighting"] == "balanced"
    assert open_checkpoint(str(both)).payload_sha256 != open_checkpoint(str(anchor)).payload_sha256
