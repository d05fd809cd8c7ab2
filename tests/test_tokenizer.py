"""Guards for the two transformers pitfalls in conventions.md §4."""

from __future__ import annotations

import torch

from cu_cli.ckpt.keys import canonical_key, module_key
from tests.tiny import tiny_components


def test_different_prompts_give_different_ids_and_embeddings():
    c = tiny_components()
    tok, te = c["tokenizer"], c["text_encoder"]
    prompts = ["a star in neon stripes style", "a circle in neon dots style", "van gogh"]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
              return_tensors="pt").input_ids
    assert len({tuple(r.tolist()) for r in ids}) == 3
    assert (ids[:, 1] != tok.eos_token_id).all()  # not BOS + padding only
    with torch.no_grad():
        emb = te(ids)[0]
    assert not torch.allclose(emb[0], emb[1]) and not torch.allclose(emb[0], emb[2])


def test_text_model_prefix_written_and_both_read():
    c = tiny_components()
    own = set(c["text_encoder"].state_dict())
    name = next(iter(own))
    key = canonical_key("text_encoder", name)
    assert key.startswith("text_encoder.text_model.")
    rel = key.split(".", 1)[1]
    assert module_key(rel, own) == name
    stripped = rel[len("text_model."):]
    assert module_key(stripped, own) == name
