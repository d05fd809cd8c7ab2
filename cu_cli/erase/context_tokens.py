"""Request-context tokens: the text positions of a request's own target prompts that have not yet
seen the whole concept (a cu extension; measured on MiniCanvas in docs/erase.md).

CLIP's text encoder is causal, so the state at a position depends only on the tokens up to it.
In the target prompt "a star in forest fade style", the states of "a star in forest" are the same
in every prompt that starts with those words — "a star in forest stripes style" included — and
only from "fade" (the concept's last token) on does a state carry the concept as a whole. The
method losses are indifferent to *where* an edit of the cross-attention K/V acts, and the
cheapest way to make "forest fade" unrecognisable is often to damp the shared word "forest",
which erases every forest style (measured: forest checks and forest dots drawn in neon palettes).

The context penalty keeps the K/V of those positions at the parent's: H_c = for each target
prompt, every position before the concept's last token (BOS, the words before the concept, and
the concept's leading words), and

    L_ctx = λ_c · Σ_k ‖(W_k − W_k^parent)·H_c‖²_F / (N_c · Σ_k out_k)

(ops/preserve.py with M_c = H_c·H_cᵀ/N_c). It uses only the request's own prompts — never an
evaluation retain set — and needs no extra UNet call.
"""

from __future__ import annotations

import torch


def concept_start(ids: list[int], concept_ids: list[int]) -> int | None:
    """Index of the first occurrence of ``concept_ids`` in ``ids`` (None if absent)."""
    n = len(concept_ids)
    if n == 0:
        return None
    for i in range(len(ids) - n + 1):
        if ids[i:i + n] == concept_ids:
            return i
    return None


def word_ids(pipe, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS/padding (CLIP's BPE works word by word, so these are
    the ids the words get inside a prompt)."""
    return [int(i) for i in pipe.tokenizer([text], add_special_tokens=False).input_ids[0]]


def context_states(pipe, pairs, encode=None, extent: str = "concept") -> torch.Tensor:
    """H_c as [N_c, d] over every pair's distinct target prompts (empty when no target prompt
    contains its concept's tokens). ``encode``: prompts → [B, L, d] token states (default
    ``pipe.encode_text``; an erase passes its per-request cache, which already holds them).
    ``extent``: ``concept`` (the cut above), ``prompt`` (every position before the first EOS, so
    that an edit can act only through EOS and the padding — the states that have seen the whole
    prompt), ``eos`` (through EOS: only the padding is left free)."""
    encode = encode or pipe.encode_text
    chunks, eos = [], pipe.tokenizer.eos_token_id
    for pair in pairs:
        concept = word_ids(pipe, pair.concept)
        targets = list(dict.fromkeys(pair.target_prompts))
        ids = pipe.tokenize(targets).tolist()
        with torch.no_grad():
            states = encode(targets).float()
        for row, st in zip(ids, states):
            start = concept_start(row, concept)
            if start is not None:
                end = start + len(concept) - 1
                if extent != "concept" and eos in row:
                    end = _first_eos(row, eos) + (1 if extent == "eos" else 0)
                chunks.append(st[:end])
    if not chunks:
        return torch.zeros(0)
    return torch.cat(chunks).float()


def _first_eos(row: list[int], eos: int) -> int:
    """Index of the first EOS in a token row (the last position when truncated without one)."""
    return row.index(eos) if eos in row else len(row) - 1


def summary_states(pipe, prompts: list[str], states: torch.Tensor) -> torch.Tensor:
    """[N, d]: each prompt's states from its first EOS on (EOS and the padding — the positions
    that have seen the whole prompt); a prompt without EOS (truncated) keeps its last state."""
    ids = pipe.tokenize(prompts).tolist()
    eos = pipe.tokenizer.eos_token_id
    rows = [st[_first_eos(row, eos):] for row, st in zip(ids, states)]
    return torch.cat(rows).float()
