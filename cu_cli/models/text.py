"""Token-level text embeddings for the projection basis (method-notes §7.2).

The UNet's cross-attention K/V see the text encoder's per-token last hidden states (no pooled
output), so a protected concept is represented by the hidden states of *its own tokens*. Per prompt
(reference ``Regularizers/Projection/src/auxiliary_embeddings.py``):

1. tokenize, padding to ``tokenizer.model_max_length``, and encode (last hidden state);
2. find the first prefix among :data:`PREFIXES` whose lower-cased BPE tokens equal the prompt's
   tokens right after BOS;
3. average the hidden states after the prefix up to the end of the real tokens (EOS and padding
   dropped);
4. no prefix (e.g. a free caption), or nothing after it: take position ``attention_mask.sum() − 2``,
   the last real token before EOS.

The states are the family adapter's ``encode(prompts).hidden`` (models/families.py): SD 1.x/2.x the
last hidden state; SDXL the penultimate hidden states of both encoders, concatenated
(d = 768 + 1280 = 2048), at the positions found with tokenizer 1 (what the SDXL UNet's K/V see).
"""

from __future__ import annotations

import torch

PREFIXES = ("an image in the style of", "an image of a", "an image of")
EXTRACTION = ("token-level: last hidden state (SDXL: penultimate of both encoders, concatenated), "
              "mean over the tokens after the first matching prefix of " + " | ".join(PREFIXES)
              + " up to EOS; no prefix: position attention_mask.sum()-2 (method-notes 7.2)")


def token_spans(tokenizer, prompts: list[str]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(input_ids [B, L], one half-open position span per prompt) following steps 1, 2 and 4."""
    enc = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    prefix_ids = [tokenizer(p.lower(), add_special_tokens=False).input_ids for p in PREFIXES]
    spans = []
    for ids, mask in zip(enc.input_ids.tolist(), enc.attention_mask.tolist()):
        n_real = int(sum(mask))
        eos = n_real - 1  # position of EOS (the last attended token)
        span = (n_real - 2, n_real - 1)
        for pre in prefix_ids:
            start = 1 + len(pre)
            if ids[1:start] == pre and start < eos:
                span = (start, eos)
                break
        spans.append(span)
    return enc.input_ids, spans


@torch.no_grad()
def token_embeddings(pipe, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """One token-level embedding per prompt: [n, d] fp32 on the CPU."""
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        _, spans = token_spans(pipe.tokenizer, chunk)
        hidden = pipe.encode(chunk).hidden
        out += [hidden[j, a:b].float().mean(0).cpu() for j, (a, b) in enumerate(spans)]
    d = out[0].shape[0] if out else pipe.unet.config.cross_attention_dim
    return torch.stack(out) if out else torch.zeros(0, d)


def concept_embeddings(pipe, concepts: list[str], template: str) -> torch.Tensor:
    """Embedding of each concept in its templated prompt (e.g. "An image of a {x}"): [n, d]."""
    return token_embeddings(pipe, [template.format(x=c) for c in concepts])
