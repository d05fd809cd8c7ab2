"""``cu merge``: exact TIES / task-arithmetic / uniform values on hand-made tensors, and the CLI."""

from __future__ import annotations

import json
import os

import pytest
import torch

from cu_cli.ops.merge import MERGE_METHODS, merge_states, merge_tensors
from cu_cli.ops.sparsify import magnitude, topk_mask

# ----------------------------------------------------------------------------- ops, exactly
B = torch.zeros(2, 3)
T1 = torch.tensor([[1.0, -2.0, 3.0], [0.5, 1.0, -1.0]])
T2 = torch.tensor([[-1.0, -1.0, -4.0], [0.5, 2.0, -1.0]])


def test_registry_entries():
    assert set(MERGE_METHODS) == {"uniform", "task-arithmetic", "ties"}
    for entry in MERGE_METHODS.values():
        assert callable(entry["fn"]) and entry["doc"] and entry["url"].startswith("https://arxiv")


def test_ties_sign_election_and_tie_goes_positive():
    # col 0: +1 and -1 sum to 0 -> positive wins, mean over agreeing {+1} = 1
    # col 1: -2, -1 agree -> -1.5; col 2: 3 vs -4 -> sum -1 -> negative, keeps -4
    out = merge_tensors("ties", B, [T1, T2])
    assert torch.equal(out, torch.tensor([[1.0, -1.5, -4.0], [0.5, 1.5, -1.0]]))


def test_ties_trim_and_fully_trimmed_entry():
    # density 0.5 keeps exactly 3 of 6 per model; ties in |τ| go to the lowest flat index.
    # T1 keeps 3, -2, and the first |1| (index 0); T2 keeps -4, 2 and the first |1| (index 0).
    # Entries (1,0) and (1,2) are trimmed in both models -> stay at the base (0).
    out = merge_tensors("ties", B, [T1, T2], densities=[0.5, 0.5])
    assert torch.equal(out, torch.tensor([[1.0, -2.0, -4.0], [0.0, 2.0, 0.0]]))


def test_ties_weights_and_lambda_after_disjoint_mean():
    base = torch.ones(2, 3)
    # col 0: δ = 3·1, 1·(-1) -> sum 2 > 0 -> keep 3, divide by w=3 -> 1; λ=2 -> base + 2
    out = merge_tensors("ties", base, [base + T1, base + T2], weights=[3.0, 1.0], lam=2.0)
    assert out[0, 0].item() == 1.0 + 2.0 * 1.0
    # col 2: δ = 9, -4 -> positive -> 9/3 = 3 -> base + 6
    assert out[0, 2].item() == 1.0 + 6.0


def test_exact_density_counts():
    assert int(topk_mask(torch.ones(6), 0.5).sum()) == 3  # all tied: still exactly 3
    assert torch.equal(topk_mask(torch.ones(2, 3), 0.5),
                       torch.tensor([[True, True, True], [False, False, False]]))
    x = torch.randn(10, 10)
    for d in (0.01, 0.2, 0.37, 0.8, 1.0):
        assert int((magnitude(x, d) != 0).sum()) == int(d * 100)
    assert int(topk_mask(torch.ones(3), 0.2).sum()) == 0  # k = int(0.6) = 0 trims everything
    with pytest.raises(ValueError):
        magnitude(x, 40.0)


def test_single_checkpoint_is_returned_exactly():
    base, x = torch.randn(7, 5), torch.randn(7, 5)
    for method in ("ties", "task-arithmetic"):
        assert torch.equal(merge_tensors(method, base, [x], lam=1.0, densities=[1.0]), x)
    assert torch.equal(merge_tensors("uniform", base, [x]), x)


def test_uniform_of_identical_inputs_and_weights():
    base, x = torch.randn(4, 4), torch.randn(4, 4)
    assert torch.equal(merge_tensors("uniform", base, [x, x, x], weights=[1.0, 2.0, 5.0]), x)
    a, b = torch.full((2,), 1.0), torch.full((2,), 4.0)
    assert torch.equal(merge_tensors("uniform", base[0, :2], [a, b], weights=[2.0, 1.0]),
                       torch.full((2,), 2.0))


def test_task_arithmetic_values():
    base = torch.tensor([1.0, 1.0, 1.0])
    a, b = torch.tensor([2.0, 1.0, 0.0]), torch.tensor([3.0, 0.0, 1.0])
    # τ_a = [1, 0, -1], τ_b = [2, -1, 0]; θ = 1 + 0.5·(2τ_a + τ_b) = 1 + 0.5·[4, -1, -2]
    out = merge_tensors("task-arithmetic", base, [a, b], weights=[2.0, 1.0], lam=0.5)
    assert torch.equal(out, torch.tensor([3.0, 0.5, 0.0]))
    # density 1/3 keeps one entry per τ: τ_a -> [1, 0, 0] (tie to lowest index), τ_b -> [2, 0, 0]
    out = merge_tensors("task-arithmetic", base, [a, b], densities=[1 / 3, 1 / 3])
    assert torch.equal(out, torch.tensor([4.0, 1.0, 1.0]))


def test_absent_key_is_a_zero_task_vector():
    base = {"k": torch.zeros(3), "j": torch.ones(2)}
    s1 = {"k": torch.tensor([1.0, 2.0, 3.0]), "j": torch.tensor([3.0, 3.0])}
    s2 = {"k": torch.tensor([1.0, -2.0, 3.0])}  # no "j": equals the base there
    out = merge_states("ties", base, [s1, s2])
    assert torch.equal(out["j"], torch.tensor([3.0, 3.0]))  # τ2 = 0 never agrees
    assert torch.equal(out["k"], torch.tensor([1.0, 2.0, 3.0]))  # (2 vs -2 tie -> +)
    assert torch.equal(merge_states("uniform", base, [s1, s2])["j"], torch.tensor([2.0, 2.0]))
    assert torch.equal(merge_states("task-arithmetic", base, [s1, s2])["j"], s1["j"])


# ----------------------------------------------------------------------------- CLI on tiny_sd1
KV = "attn2.to_k.weight"


def _write(path, base_dir, deltas: dict, concepts, fingerprint=None, scale=1.0):
    from cu_cli.ckpt.checkpoint import BaseIdentity, write_checkpoint
    from cu_cli.ckpt.lineage import make_step
    from cu_cli.models.base import resolve_base

    base = resolve_base(base_dir)
    ident = BaseIdentity(base.id, base.arch, fingerprint or base.fingerprint)
    ref = base.get_tensors(sorted(deltas))
    tensors = {k: (ref[k] + scale * d).float() for k, d in deltas.items()}
    step = make_step("erase", concepts=concepts, method="test", argv=["test"])
    write_checkpoint(str(path), tensors, ident, step, erased=list(concepts))
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tiny_sd1, tmp_path_factory):
    from cu_cli.models.base import resolve_base

    d = tmp_path_factory.mktemp("merge")
    keys = sorted(k for k in resolve_base(tiny_sd1).shapes() if k.endswith(KV))
    assert len(keys) == 16
    g = torch.Generator().manual_seed(0)
    shapes = resolve_base(tiny_sd1).shapes()
    da = {k: torch.randn(shapes[k], generator=g) for k in keys}
    db = {k: torch.randn(shapes[k], generator=g) for k in keys[:10]}  # fewer keys
    v = keys[0].replace("to_k", "to_v")
    db[v] = torch.randn(shapes[v], generator=g)  # a key only b has
    return {
        "a": _write(d / "a.safetensors", tiny_sd1, da, ["Van Gogh"]),
        "b": _write(d / "b.safetensors", tiny_sd1, db, ["Picasso", "Van Gogh"]),
        "other": _write(d / "o.safetensors", tiny_sd1, {keys[0]: da[keys[0]]}, ["Cats"],
                        fingerprint="sha256:" + "0" * 64),
        "dir": d, "keys": keys, "v": v,
    }


def _cu(runner, args):
    from cu_cli.cli.app import app

    return runner.invoke(app, args)


def test_cli_ties_merge_header_and_values(runner, tiny_sd1, ckpts, tmp_path):
    from cu_cli.ckpt.checkpoint import open_checkpoint
    from cu_cli.ckpt.format import load_tensors
    from cu_cli.models.base import resolve_base

    out = tmp_path / "m.safetensors"
    r = _cu(runner, ["merge", ckpts["a"], ckpts["b"], "--base", tiny_sd1, "--method", "ties",
                     "--lambda", "1.5", "--density", "0.5", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert r.stdout == str(out.resolve()) + "\n"
    h, ha, hb = (open_checkpoint(p) for p in (str(out), ckpts["a"], ckpts["b"]))
    lineage = h.json("cu.lineage")
    assert len(lineage) == 1 and lineage[0]["op"] == "merge"
    assert lineage[0]["parents"] == [ha.payload_sha256, hb.payload_sha256]
    assert h.json("cu.parents") == [ha.payload_sha256, hb.payload_sha256]
    assert lineage[0]["inputs"] == [ha.json("cu.lineage"), hb.json("cu.lineage")]
    assert lineage[0]["params"] == {"method": "ties", "lambda": 1.5, "weights": [1.0, 1.0],
                                    "densities": [0.5, 0.5], "keys": None}
    assert h.json("cu.erased") == ["Van Gogh", "Picasso"]
    assert set(h.tensors) == set(ckpts["keys"]) | {ckpts["v"]}
    base = resolve_base(tiny_sd1)
    got = load_tensors(str(out))
    ta, tb = load_tensors(ckpts["a"]), load_tensors(ckpts["b"])
    for k in got:
        want = merge_tensors("ties", base.get_tensors([k])[k], [ta.get(k), tb.get(k)],
                             densities=[0.5, 0.5], lam=1.5)
        assert torch.equal(got[k], want), k


def test_cli_single_input_roundtrip_json_and_keys(runner, tiny_sd1, ckpts, tmp_path):
    from cu_cli.ckpt.format import load_tensors

    out = tmp_path / "one.safetensors"
    r = _cu(runner, ["merge", ckpts["b"], "--base", tiny_sd1, "--method", "task-arithmetic",
                     "--keys", r"attn2\.to_k", "--json", "-o", str(out)])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["path"] == str(out.resolve()) and obj["method"] == "task-arithmetic"
    assert obj["keys"] == 10 and obj["erased"] == ["Picasso", "Van Gogh"]
    assert [i["path"] for i in obj["inputs"]] == [ckpts["b"]]
    assert obj["payload_sha256"].startswith("sha256:")
    assert "left at the base" in r.stderr  # the to_v key is filtered out
    got, want = load_tensors(str(out)), load_tensors(ckpts["b"])
    assert set(got) == {k for k in want if "to_k" in k}
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_cli_config_and_overrides(runner, tiny_sd1, ckpts, tmp_path):
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(f"method: uniform\nmodels:\n  - path: {ckpts['a']}\n    weight: 2\n"
                   f"  - path: {ckpts['b']}\n")
    out = tmp_path / "u.safetensors"
    r = _cu(runner, ["merge", "--config", str(cfg), "--base", tiny_sd1, "-o", str(out)])
    assert r.exit_code == 0, r.output
    from cu_cli.ckpt.checkpoint import open_checkpoint

    assert open_checkpoint(str(out)).json("cu.lineage")[0]["params"]["weights"] == [2.0, 1.0]
    out2 = tmp_path / "u2.safetensors"
    r = _cu(runner, ["merge", "--config", str(cfg), "--base", tiny_sd1, "--weight", "1",
                     "--weight", "3", "-o", str(out2)])
    assert r.exit_code == 0, r.output
    assert open_checkpoint(str(out2)).json("cu.lineage")[0]["params"]["weights"] == [1.0, 3.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: ties\nmergekit_option: 1\n")
    r = _cu(runner, ["merge", ckpts["a"], "--config", str(bad), "--base", tiny_sd1,
                     "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2 and "mergekit_option" in r.stderr


def test_cli_different_base_exits_3(runner, tiny_sd1, ckpts, tmp_path):
    r = _cu(runner, ["merge", ckpts["a"], ckpts["other"], "--base", tiny_sd1, "--method", "ties",
                     "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 3, r.output
    assert r.stdout == "" and not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("extra", [
    ["--method", "ties", "--topk", "40"],  # a percentage
    ["--method", "ties", "--weight", "1"],  # one weight for two inputs
    ["--method", "ties", "--weight", "1", "--weight", "0"],  # weight must be > 0
    ["--method", "uniform", "--lambda", "2"],  # uniform takes no λ
    ["--method", "ties", "--density", "0.5", "--topk", "0.5"],
    ["--method", "ties", "--keys", "("],  # bad regex
    ["--method", "ties", "--keys", "nothing-matches"],
    ["--method", "nope"],
    [],  # no method
])
def test_cli_usage_errors_exit_2(runner, tiny_sd1, ckpts, tmp_path, extra):
    out = tmp_path / "x.safetensors"
    r = _cu(runner, ["merge", ckpts["a"], ckpts["b"], "--base", tiny_sd1, "-o", str(out)] + extra)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and not out.exists()


def test_cli_output_checks(runner, tiny_sd1, ckpts, tmp_path):
    args = ["merge", ckpts["a"], ckpts["b"], "--base", tiny_sd1, "--method", "ties", "-o"]
    r = _cu(runner, args + [ckpts["a"]])
    assert r.exit_code == 2 and "also an input" in r.stderr
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"old")
    r = _cu(runner, args + [str(out)])
    assert r.exit_code == 2 and out.read_bytes() == b"old"
    r = _cu(runner, args + [str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert os.path.getsize(out) > 100


# ------------------------------------------------ streaming write == the in-memory write (issue 17)
@pytest.mark.parametrize("method,extra", [
    ("ties", ["--lambda", "1.5", "--density", "0.5"]),
    ("task-arithmetic", ["--lambda", "0.7", "--density", "0.8", "--weight", "2", "--weight", "1"]),
    ("uniform", ["--weight", "1", "--weight", "3"]),
])
def test_streamed_merge_payload_equals_in_memory_write(runner, tiny_sd1, ckpts, tmp_path, method,
                                                       extra):
    """The streamed output has the payload hash the pre-streaming code wrote: the merged dict
    built in memory with the same merge functions, written with ``write_checkpoint``."""
    from cu_cli.ckpt.checkpoint import BaseIdentity, open_checkpoint, write_checkpoint
    from cu_cli.ckpt.format import load_tensors, payload_sha256
    from cu_cli.ckpt.lineage import make_step
    from cu_cli.models.base import resolve_base

    out = tmp_path / "m.safetensors"
    r = _cu(runner, ["merge", ckpts["a"], ckpts["b"], "--base", tiny_sd1, "--method", method,
                     "-o", str(out)] + extra)
    assert r.exit_code == 0, r.output
    h = open_checkpoint(str(out))  # header hash and payload hash verified
    params = h.json("cu.lineage")[0]["params"]
    base = resolve_base(tiny_sd1)
    ta, tb = load_tensors(ckpts["a"]), load_tensors(ckpts["b"])
    fn = MERGE_METHODS[method]["fn"]
    merged = {k: fn(base.get_tensors([k])[k], (ta.get(k), tb.get(k)), params["weights"],
                    params["densities"], params["lambda"]).to(torch.float32)
              for k in sorted(set(ta) | set(tb))}
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)
    old = tmp_path / "old.safetensors"
    want = write_checkpoint(str(old), merged, ident, make_step("merge", argv=["t"]),
                            erased=h.json("cu.erased"))
    assert h.payload_sha256 == want == payload_sha256(str(out))
    got = load_tensors(str(out))
    assert set(got) == set(merged) and all(torch.equal(got[k], merged[k]) for k in got)
    ho = open_checkpoint(str(old))
    assert ho.tensors == h.tensors  # same entries and offsets
    assert h.data_start % 8 == 0 and os.path.getsize(out) - h.data_start == \
        os.path.getsize(old) - ho.data_start
    step = h.json("cu.lineage")[0]
    assert step["wall_seconds"] is not None and step["peak_memory_mb"] > 0
