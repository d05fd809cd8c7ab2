"""Request-context penalty (``--context-weight``, erase/context_tokens.py)."""

from __future__ import annotations

import torch

from cu_cli.erase.context_tokens import concept_start, context_states
from cu_cli.erase.defaults import resolve
from cu_cli.erase.options import EraseConfig
from cu_cli.erase.prompts import PromptPairs
from cu_cli.erase.run import EraseRequest, run_erase
from cu_cli.models.base import resolve_base
from tests.helpers import kv_change

FAST = dict(steps=12, batch=2, anchor_images=4, anchor_steps=2, lr=1e-2, kind="object",
            anchor="dog")


def test_concept_start_finds_the_token_run():
    assert concept_start([0, 5, 7, 9, 3, 1], [9, 3]) == 3
    assert concept_start([0, 5, 7, 9, 3, 1], [3, 9]) is None
    assert concept_start([0, 5], []) is None
    assert concept_start([0, 5], [5, 6]) is None


def test_context_states_are_the_positions_before_the_concepts_last_token(tiny_sd1):
    pipe = resolve_base(tiny_sd1).load_pipeline()
    pairs = [PromptPairs("neon stripes", "style", "", ["a star", "a cat"],
                         ["a star in neon stripes style", "a cat in neon stripes style",
                          "a dog"], ["neon stripes"])]  # the last one lacks the concept
    H = context_states(pipe, pairs)
    enc = pipe.encode_text(["a star in neon stripes style", "a cat in neon stripes style"])
    ids = pipe.tokenize(["a star in neon stripes style"])[0].tolist()
    neon = pipe.tokenizer(["neon"], add_special_tokens=False).input_ids[0]
    stripes = pipe.tokenizer(["stripes"], add_special_tokens=False).input_ids[0]
    cut = concept_start(ids, neon + stripes) + len(neon + stripes) - 1
    assert cut >= 4  # BOS, "a", "star", "in" (+ "neon" pieces) precede "stripes"'s last piece
    want = torch.cat([enc[0, :cut], enc[1, :cut]])  # "a cat in" has the same token count
    assert H.shape == want.shape
    assert torch.allclose(H, want.float())


def test_huge_context_weight_keeps_the_request_context_kv(tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    pipe = base.load_pipeline()
    runs = {}
    for name, w in (("plain", 0.0), ("kept", 1e6)):
        req = EraseRequest(concepts=["cat"], out=str(tmp_path / f"{name}.safetensors"),
                           cfg=EraseConfig(**FAST, context_weight=w), base=tiny_sd1, seed=1)
        runs[name] = run_erase(req)
    from cu_cli.erase.prompts import build_pairs

    pair = build_pairs("cat", "object", "dog", None, seed=1)
    prefix = context_states(pipe, [pair]).detach()
    assert prefix.shape[0] >= len(pair.target_prompts)  # at least BOS per target prompt
    plain = kv_change(runs["plain"].path, base, prefix)
    kept = kv_change(runs["kept"].path, base, prefix)
    assert plain > 1e-3
    assert kept < 0.1 * plain
    assert runs["kept"].measured["context_tokens"] == prefix.shape[0]
    assert runs["plain"].measured.get("context_tokens", 0) == 0  # off: not recorded


def test_defaults_are_minicanvas_conabl_only():
    from cu_cli.world.registry import erase_profile

    mc = resolve(EraseConfig(), erase_profile("minicanvas"))
    assert mc.context_weight > 0 and mc.conabl_eta > 0
    for cfg, world in ((EraseConfig(), None), (EraseConfig(method="esd"), "minicanvas"),
                       (EraseConfig(method="erasediff"), "minicanvas")):
        r = resolve(cfg, erase_profile(world))  # SD bases and the other methods keep the reference behaviour
        assert r.context_weight == 0.0 and r.conabl_eta == 0.0
    assert resolve(EraseConfig(context_weight=0.0),
                   erase_profile("minicanvas")).context_weight == 0.0


def test_conabl_eta_target_is_anchor_minus_eta_times_parent_concept_direction():
    """target = sg[ε_θ(anc) − η·(ε_parent(tgt) − ε_parent(anc))] (objectives/conabl.py)."""
    from types import SimpleNamespace

    from cu_cli.erase.objectives.conabl import ConAbl
    from cu_cli.models.families import Cond

    torch.manual_seed(0)
    z = torch.randn(2, 4, 3, 3)
    t = torch.tensor([10, 500])
    emb = {"tgt": torch.full((2, 5), 1.0), "anc": torch.full((2, 5), 2.0)}
    W_cur, W_par, W_base = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)

    def model(W, zz, c):  # a toy "UNet": depends on the prompt through c's first entry
        c = c.hidden if isinstance(c, Cond) else c
        return torch.einsum("ij,bjhw->bihw", W, zz) * c[:, :1, None, None]

    def make(eta, anchor="current"):
        obj = ConAbl()
        obj.data = SimpleNamespace(noised=lambda ctx, idx: (z, t, None, None))
        obj.mask = torch.ones(3, 3)
        obj.anchor_prompts, obj.target_prompts = ["anc", "anc"], ["tgt", "tgt"]
        ctx = SimpleNamespace(cfg=SimpleNamespace(conabl_eta=eta, conabl_anchor=anchor),
                              cond=lambda ps: Cond(torch.cat([emb[p][:1] for p in ps])),
                              eps=lambda zz, tt, c: model(W_cur, zz, c),
                              eps_parent=lambda zz, tt, c: model(W_par, zz, c),
                              eps_base=lambda zz, tt, c: model(W_base, zz, c))
        return obj, ctx

    # conabl_anchor picks the model of the anchor branch: current (reference), parent, base
    for eta, anchor, W_anc in ((0.0, "current", W_cur), (0.7, "current", W_cur),
                               (0.7, "parent", W_par), (0.3, "base", W_base)):
        obj, ctx = make(eta, anchor)
        got = obj.batch_loss(ctx, torch.tensor([0, 1]))
        e_tgt, e_anc = model(W_cur, z, emb["tgt"]), model(W_anc, z, emb["anc"])
        target = e_anc - eta * (model(W_par, z, emb["tgt"]) - model(W_par, z, emb["anc"]))
        want = ((e_tgt - target) ** 2).sum(dim=(1, 2, 3)).div(9).mean()
        assert torch.allclose(got, want, rtol=1e-5)


def test_context_extent_prompt_and_eos_hold_every_position_before_or_through_eos(tiny_sd1):
    """``context_extent``: ``prompt`` holds every position before EOS (the erasure then acts only
    through EOS and the padding), ``eos`` holds EOS too; ``concept`` is the default cut."""
    pipe = resolve_base(tiny_sd1).load_pipeline()
    prompts = ["a star in neon stripes style", "a cat in neon stripes style"]
    pairs = [PromptPairs("neon stripes", "style", "", ["a star", "a cat"], prompts,
                         ["neon stripes"])]
    enc = pipe.encode_text(prompts).float()
    ids = pipe.tokenize(prompts[:1])[0].tolist()
    eos = ids.index(pipe.tokenizer.eos_token_id)
    concept = context_states(pipe, pairs)
    prompt = context_states(pipe, pairs, extent="prompt")
    through = context_states(pipe, pairs, extent="eos")
    assert torch.allclose(prompt, torch.cat([enc[0, :eos], enc[1, :eos]]))
    assert torch.allclose(through, torch.cat([enc[0, :eos + 1], enc[1, :eos + 1]]))
    assert concept.shape[0] < prompt.shape[0] < through.shape[0]
    assert torch.allclose(prompt[:concept.shape[0] // 2], concept[:concept.shape[0] // 2])


def test_summary_states_are_eos_and_padding(tiny_sd1):
    """erased_extent: summary holds each earlier target from its first EOS on."""
    from cu_cli.erase.context_tokens import summary_states

    pipe = resolve_base(tiny_sd1).load_pipeline()
    prompts = ["a star in neon stripes style", "a cat"]
    enc = pipe.encode_text(prompts).float()
    ids = pipe.tokenize(prompts).tolist()
    first = [row.index(pipe.tokenizer.eos_token_id) for row in ids]
    assert first[1] < first[0]
    H = summary_states(pipe, prompts, enc)
    assert torch.allclose(H, torch.cat([enc[0, first[0]:], enc[1, first[1]:]]))
    assert H.shape[0] == 2 * enc.shape[1] - first[0] - first[1]
