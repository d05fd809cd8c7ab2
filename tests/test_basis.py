"""``cu project-basis`` on the tiny SD1 pipeline (issue 5; method-notes §7.1–7.2)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from cu_cli.basis import vocab as V
from cu_cli.basis.run import AUX_MAX_SIM, greedy_dedup, split_top_m
from cu_cli.ckpt.basis import read_basis
from cu_cli.ckpt.checkpoint import BaseIdentity
from cu_cli.ckpt.format import read_cu_header
from cu_cli.cli.app import app
from cu_cli.models.base import resolve_base
from cu_cli.models.text import token_embeddings, token_spans
from tests.helpers import base_identity, kv_keys, make_ckpt


def basis(runner, tmp_path, name, *args):
    out = str(tmp_path / name)
    r = runner.invoke(app, ["project-basis", *args, "-q", "-o", out])
    return r, out


def header(path):
    h = read_cu_header(path, kind="basis")
    return h, h.json("cu.basis.concepts")


# ----------------------------------------------------------------------- extraction (models/text)

def test_prefix_spans_and_eos_fallback(tiny_sd1):
    tok = resolve_base(tiny_sd1).load_pipeline().tokenizer
    prompts = ["An image in the style of neon stripes", "An image of a cat", "an image of cat",
               "a dog in the style", "An image of"]
    ids, spans = token_spans(tok, prompts)
    words = [tok.convert_ids_to_tokens(row) for row in ids.tolist()]
    assert words[0][7:9] == ["neon</w>", "stripes</w>"] and words[0][9] == tok.eos_token
    assert spans[0] == (7, 9)  # "an image in the style of" = 6 tokens after BOS
    assert spans[1] == (5, 6) and words[1][5] == "cat</w>"
    assert spans[2] == (4, 5)  # "an image of a" does not match "cat"; "an image of" does
    # no prefix: attention_mask.sum() - 2 = the last real token before EOS
    assert spans[3] == (5, 6) and words[3][5] == "style</w>" and words[3][6] == tok.eos_token
    assert spans[4] == (3, 4)  # prefix with nothing after it falls back too


def test_embeddings_average_the_span(tiny_sd1):
    pipe = resolve_base(tiny_sd1).load_pipeline()
    prompts = ["An image in the style of neon stripes", "a dog in the style"]
    E = token_embeddings(pipe, prompts)
    with torch.no_grad():
        h = pipe.text_encoder(pipe.tokenize(prompts))[0]
    assert E.shape == (2, 16) and E.dtype == torch.float32
    assert torch.allclose(E[0], h[0, 7:9].mean(0), atol=1e-6)
    assert torch.allclose(E[1], h[1, 5], atol=1e-6)
    assert not torch.allclose(E[0], E[1])


def test_sdxl_concatenates_both_encoders(tiny_sdxl):
    pipe = resolve_base(tiny_sdxl).load_pipeline()
    E = token_embeddings(pipe, ["An image of a cat"])
    with torch.no_grad():
        ids = pipe.tokenize(["An image of a cat"])
        h1 = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    assert E.shape == (1, 32)
    assert torch.allclose(E[0, :16], h1[0, 5], atol=1e-6)


# ----------------------------------------------------------------------- candidates (basis/vocab)

def test_vocabularies_and_filters():
    for name in V.BUILTIN_FILES.values():
        items = V.read_list(name)
        assert len({i.lower() for i in items}) == len(items)
    assert len(V.read_list("styles.txt")) >= 200 and len(V.read_list("objects.txt")) >= 200
    assert V.infer_kind("van gogh") == "style" and V.infer_kind("Horse") == "object"
    assert V.infer_kind("actor") == "celebrity" and V.infer_kind("zzz") is None
    from cu_cli.world.minicanvas import load_world

    w = load_world()
    mc = V.vocab_candidates("minicanvas", w)
    assert len(mc) == 32 and mc[0].prompt == "An image in the style of neon stripes"
    assert V.infer_kind("star", w) == "object" and V.infer_kind("van gogh", w) is None
    aux = V.aux_candidates(["Monet", "An image of a red car", "a b c d e f g"], "style")
    assert [a.domain for a in aux] == ["style", "prompt", "prompt"]
    assert aux[0].prompt == "An image in the style of Monet" and aux[1].prompt == "An image of a red car"
    obj = V.Candidate("Cats", "An image of a Cats", "object", "builtin")
    assert V.excluded(obj, "cat", "object") and not V.excluded(obj, "cat", "style")
    assert V.excluded(V.Candidate("cat", "An image in the style of cat", "style", "x"), "Cat", "object")


def test_greedy_dedup_threshold():
    E = torch.tensor([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.6, 0.8]])
    assert greedy_dedup(E, 0.95) == [0, 2, 3]
    assert greedy_dedup(E, 0.5) == [0, 2]
    assert greedy_dedup(E, 1.01) == [0, 1, 2, 3]
    assert greedy_dedup(E, -1.0) == [0]


def test_split_top_m():
    doms = ["s", "s", "o", "s", "o", "s"]  # ranked by similarity, best first
    assert split_top_m(doms, 4) == [0, 1, 2, 4]  # 2 + 2, not the overall top 4 (3 styles)
    assert split_top_m(doms, 2) == [0, 2]
    assert split_top_m(doms, 3) == [0, 1, 2]  # the extra slot: "s" (next at 1) beats "o" (at 4)
    assert split_top_m(doms, 6) == split_top_m(doms, 60) == [0, 1, 2, 3, 4, 5]
    assert split_top_m(["s", "s", "s", "p"], 4) == [0, 1, 2, 3]  # p's unused slot: next overall
    assert split_top_m(["s", "s", "s", "p"], 2) == [0, 3]
    assert split_top_m(["s", "p", "s", "s", "s"], 3) == [0, 1, 2]
    assert split_top_m(["a", "b", "c", "a", "a", "b"], 4) == [0, 1, 2, 3]  # d = 3: 2 + 1 + 1
    assert split_top_m(["o"] * 5, 3) == [0, 1, 2] and split_top_m([], 3) == []


# ----------------------------------------------------------------------- CLI

def test_domain_split_minicanvas(runner, tmp_path, tiny_sd1):
    from cu_cli.world.minicanvas import load_world

    styles = set(load_world().styles)
    common = ["--base", tiny_sd1, "--vocab", "minicanvas", "--concept", "star", "--dedup", "1.5",
              "--aux-max-sim", "1.01"]
    r, out = basis(runner, tmp_path, "a.safetensors", *common, "--top-m", "6")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert len(concepts) == 6 and sum(c in styles for c in concepts) == 3  # half styles, half objects
    params = h.json("cu.basis.params")
    assert params["domains"] == {"object": {"candidates": 15, "kept": 3},
                                 "style": {"candidates": 16, "kept": 3}}
    assert params["ranked_kept"] == 6 and params["near_synonyms_dropped"] == 0
    r2, out2 = basis(runner, tmp_path, "b.safetensors", *common, "--top-m", "6", "--json")
    obj = json.loads(r2.stdout)
    assert obj["payload_sha256"] == h.payload_sha256  # deterministic
    assert [c["concept"] for c in obj["concepts"]] == concepts  # sorted by similarity, as kept
    # odd M: 3 + 2, the extra slot to the domain whose third candidate is more similar
    r, out = basis(runner, tmp_path, "c.safetensors", *common, "--top-m", "5")
    h, concepts = header(out)
    kept = {d: v["kept"] for d, v in h.json("cu.basis.params")["domains"].items()}
    assert sorted(kept.values()) == [2, 3] and len(concepts) == 5
    r, out = basis(runner, tmp_path, "d.safetensors", *common, "--top-m", "31")
    sims = {s["concept"]: s["similarity"] for s in header(out)[0].json("cu.basis.similarities")}
    third = {d: sorted((v for c, v in sims.items() if (c in styles) == (d == "style")),
                       reverse=True)[2] for d in kept}
    assert kept[max(third, key=third.get)] == 3


def test_domain_split_fills_unused_quota(runner, tmp_path, tiny_sd1):
    aux = tmp_path / "aux.txt"
    aux.write_text("dog\nhorse\nbird\nfrog\nAn image of a red car in a garden\n")
    r, out = basis(runner, tmp_path, "f.safetensors", "--base", tiny_sd1, "--concept", "cat",
                   "--kind", "object", "--vocab", "none", "--aux-file", str(aux), "--top-m", "4",
                   "--dedup", "1.5", "--aux-max-sim", "1.01")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    params = h.json("cu.basis.params")
    # named aux lines count as --kind (object), the full prompt as its own domain: 2 + 2 slots,
    # the prompt domain has one candidate, so its second slot goes to the next object
    assert params["domains"] == {"object": {"candidates": 4, "kept": 3},
                                 "prompt": {"candidates": 1, "kept": 1}}
    assert len(concepts) == 4 and "An image of a red car in a garden" in concepts


def test_near_synonym_ceiling(runner, tmp_path, tiny_sd1, monkeypatch):
    """A candidate not containing the target but embedded (almost) like it is dropped at the
    default ceiling; a parent's erased concept is never dropped however close it is."""
    import cu_cli.models.text as T

    vec = {"van gogh": [1.0, 0.0, 0.0], "vincent": [1.0, 0.05, 0.0],  # cosine 0.9988
           "monet": [0.6, 0.8, 0.0], "dali": [0.5, 0.0, 0.866], "rembrandt": [0.0, 0.0, 1.0]}

    def fake(pipe, prompts):
        rows = [vec[p.rsplit(" of ", 1)[1].lower()] + [0.0] * 13 for p in prompts]
        return torch.tensor(rows)

    monkeypatch.setattr(T, "token_embeddings", fake)
    aux = tmp_path / "aux.txt"
    aux.write_text("Vincent\nMonet\nDali\n")
    args = ["--base", tiny_sd1, "--concept", "Van Gogh", "--kind", "style", "--vocab", "none",
            "--aux-file", str(aux), "--dedup", "1.5"]
    r, out = basis(runner, tmp_path, "a.safetensors", *args, "--json")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert concepts == ["Monet", "Dali"]
    params = h.json("cu.basis.params")
    assert params["aux_max_sim"] == AUX_MAX_SIM == 0.95 and params["near_synonyms_dropped"] == 1
    assert params["domains"] == {"style": {"candidates": 2, "kept": 2}}
    assert [c["concept"] for c in json.loads(r.stdout)["concepts"]] == ["Monet", "Dali"]
    r, out = basis(runner, tmp_path, "b.safetensors", *args, "--aux-max-sim", "1.01")
    assert r.exit_code == 0 and header(out)[1] == ["Vincent", "Monet", "Dali"]
    r, out = basis(runner, tmp_path, "c.safetensors", *args, "--aux-max-sim", "0.55")
    assert header(out)[1] == ["Dali"] and header(out)[0].json("cu.basis.params")[
        "near_synonyms_dropped"] == 2
    # the parent's erased concepts are inserted first, whatever their cosine to the target
    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    parent = make_ckpt(tmp_path / "p.safetensors", base, {k: torch.full((1,), 0.01)},
                       concepts=("Vincent", "Rembrandt"))
    r, out = basis(runner, tmp_path, "d.safetensors", *args, "--from", parent, "--base", tiny_sd1)
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert concepts == ["Vincent", "Rembrandt", "Monet", "Dali"]
    assert h.json("cu.basis.params")["near_synonyms_dropped"] == 0  # Vincent is not a candidate
    # nothing but near-synonyms and no parent: exit 1 naming the flag
    r, _ = basis(runner, tmp_path, "e.safetensors", *args, "--aux-max-sim", "0.4")
    assert r.exit_code == 1 and "--aux-max-sim" in r.stderr


def test_minicanvas_vocab_path_json_and_determinism(runner, tmp_path, tiny_sd1):
    args = ["--base", tiny_sd1, "--vocab", "minicanvas", "--concept", "star"]
    r, out = basis(runner, tmp_path, "a.safetensors", *args)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"{out}\n"
    h, concepts = header(out)
    assert "star" not in concepts and 0 < len(concepts) <= 31
    assert h.metadata["cu.basis.target"] == "star" and h.json("cu.basis.params")["kind"] == "object"
    C, _ = read_basis(out, base_identity(resolve_base(tiny_sd1)))
    assert C.shape == (16, len(concepts))
    U = torch.nn.functional.normalize(C.T.double(), dim=1)
    cos = U @ U.T - 2 * torch.eye(len(concepts), dtype=torch.float64)
    assert float(cos.max()) < 0.95  # de-duplicated
    r2, out2 = basis(runner, tmp_path, "b.safetensors", *args, "--json")
    assert r2.exit_code == 0, r2.output
    obj = json.loads(r2.stdout)
    assert obj["path"] == out2 and obj["payload_sha256"] == h.payload_sha256  # deterministic
    sims = [c["similarity"] for c in obj["concepts"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == len(concepts)
    assert not any(c.get("erased") for c in obj["concepts"])
    info = json.loads(runner.invoke(app, ["inspect", out, "--json"]).stdout)
    assert info["kind"] == "basis" and info["basis"]["concepts"] == concepts


def test_builtin_vocab_never_includes_target(runner, tmp_path, tiny_sd1):
    r, out = basis(runner, tmp_path, "vg.safetensors", "--base", tiny_sd1, "--concept", "Van Gogh",
                   "--top-m", "50", "--dedup", "1.5")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert len(concepts) == 50 and h.json("cu.basis.params")["kind"] == "style"
    assert not [c for c in concepts if "van gogh" in c.lower()]
    r, _ = basis(runner, tmp_path, "z.safetensors", "--base", tiny_sd1, "--concept", "zzz")
    assert r.exit_code == 2 and "--kind" in r.stderr


def test_min_sim_and_aux_duplicates(runner, tmp_path, tiny_sd1):
    aux = tmp_path / "aux.txt"
    aux.write_text("# comment\ndog\nDog\ndog \nhorse\nAn image of a cat and a dog\n")
    # the tiny random encoder puts dog/horse at cosine >= 0.95 to cat: no near-synonym ceiling here
    r, out = basis(runner, tmp_path, "x.safetensors", "--base", tiny_sd1, "--concept", "cat",
                   "--kind", "object", "--vocab", "none", "--aux-file", str(aux),
                   "--aux-max-sim", "1.01")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert concepts == ["horse", "dog"] or concepts == ["dog", "horse"]  # full prompt had "cat"
    sims = h.json("cu.basis.similarities")
    best = max(s["similarity"] for s in sims)
    r, out = basis(runner, tmp_path, "y.safetensors", "--base", tiny_sd1, "--concept", "cat",
                   "--kind", "object", "--vocab", "none", "--aux-file", str(aux),
                   "--aux-max-sim", "1.01", "--min-sim", str(best - 1e-4))
    assert r.exit_code == 0 and len(header(out)[1]) == 1
    # the ceiling on real (tiny-encoder) cosines: just below the best drops exactly that one
    top = max(sims, key=lambda s: s["similarity"])
    r, out = basis(runner, tmp_path, "z.safetensors", "--base", tiny_sd1, "--concept", "cat",
                   "--kind", "object", "--vocab", "none", "--aux-file", str(aux),
                   "--aux-max-sim", str(top["similarity"] - 1e-4))
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert top["concept"] not in concepts and len(concepts) == 1
    params = h.json("cu.basis.params")
    assert params["near_synonyms_dropped"] == 1
    assert params["aux_max_sim"] == pytest.approx(top["similarity"] - 1e-4)
    # the default ceiling drops both here (cosine >= 0.95 on the tiny encoder): nothing left, exit 1
    r, _ = basis(runner, tmp_path, "w.safetensors", "--base", tiny_sd1, "--concept", "cat",
                 "--kind", "object", "--vocab", "none", "--aux-file", str(aux))
    assert r.exit_code == 1 and "--aux-max-sim" in r.stderr


def test_empty_candidates_exit_1(runner, tmp_path, tiny_sd1):
    aux = tmp_path / "aux.txt"
    aux.write_text("cat\nCats\nwildcat\n")
    r, out = basis(runner, tmp_path, "e.safetensors", "--base", tiny_sd1, "--concept", "cat",
                   "--kind", "object", "--vocab", "none", "--aux-file", str(aux))
    assert r.exit_code == 1 and r.stderr.startswith("Error:") and not os.path.exists(out)
    r, _ = basis(runner, tmp_path, "f.safetensors", "--base", tiny_sd1, "--concept", "cat",
                 "--kind", "object", "--vocab", "none")
    assert r.exit_code == 1


def test_erased_concepts_first_and_base_from_parent(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    parent = make_ckpt(tmp_path / "p.safetensors", base, {k: torch.full((1,), 0.01)},
                       concepts=("neon stripes", "dog"))
    r, out = basis(runner, tmp_path, "b.safetensors", "--from", parent, "--concept", "star",
                   "--vocab", "minicanvas", "--json")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert concepts[:2] == ["neon stripes", "dog"]
    assert h.json("cu.basis.prompts")[:2] == ["An image in the style of neon stripes",
                                              "An image of a dog"]
    flagged = {c["concept"] for c in json.loads(r.stdout)["concepts"] if c.get("erased")}
    assert flagged == {"neon stripes", "dog"}
    r, out = basis(runner, tmp_path, "c.safetensors", "--from", parent, "--concept", "star",
                   "--vocab", "minicanvas", "--no-include-erased")
    assert r.exit_code == 0 and header(out)[1][0] != "neon stripes"
    # a parent made from another base: exit 3
    bad = make_ckpt(tmp_path / "q.safetensors", base, {k: torch.zeros(1)},
                    ident=BaseIdentity(tiny_sd1, "sha256:0", "sha256:0"))
    r, _ = basis(runner, tmp_path, "d.safetensors", "--from", bad, "--concept", "star",
                 "--vocab", "minicanvas")
    assert r.exit_code == 3, r.output


def test_erase_uses_basis_and_refuses_other_base(runner, tmp_path, tiny_sd1, tiny_sdxl):
    r, b = basis(runner, tmp_path, "b.safetensors", "--base", tiny_sd1, "--concept", "cat",
                 "--kind", "object", "--top-m", "20")
    assert r.exit_code == 0, r.output
    common = ["erase", "--base", tiny_sd1, "--concept", "cat", "--steps", "1", "--batch", "1",
              "--anchor-images", "2", "--anchor-steps", "1", "--kind", "object", "--anchor",
              "dog", "-q"]
    r = runner.invoke(app, [*common, "--basis", b, "-o", str(tmp_path / "e.safetensors")])
    assert r.exit_code == 0, r.output
    r, other = basis(runner, tmp_path, "x.safetensors", "--base", tiny_sdxl, "--concept", "cat",
                     "--kind", "object", "--top-m", "5")
    assert r.exit_code == 0, r.output
    assert read_basis(other)[0].shape[0] == 32  # SDXL: both encoders concatenated
    r = runner.invoke(app, [*common, "--basis", other, "-o", str(tmp_path / "f.safetensors")])
    assert r.exit_code == 3 and "basis" in r.stderr


MINICANVAS = os.path.join(os.path.dirname(__file__), "..", "cu_cli", "assets", "minicanvas",
                          "pipeline", "model_index.json")


@pytest.mark.skipif(not os.path.exists(MINICANVAS), reason="MiniCanvas weights not installed")
def test_minicanvas_base_defaults(runner, tmp_path):
    r, out = basis(runner, tmp_path, "m.safetensors", "--concept", "neon stripes")
    assert r.exit_code == 0, r.output
    h, concepts = header(out)
    assert h.json("cu.basis.params")["vocab"] == "minicanvas" and "neon stripes" not in concepts
    r, _ = basis(runner, tmp_path, "n.safetensors", "--concept", "neon stripes", "--vocab", "builtin")
    assert r.exit_code == 2
