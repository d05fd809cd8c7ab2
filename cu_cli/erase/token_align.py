"""Which text positions of a target prompt a closed-form edit rewrites, and to which anchor
position (a cu extension for UCE, measured on MiniCanvas in docs/erase.md).

UCE (Gandikota et al., arXiv 2308.14761) pairs position i of the target prompt with position i
of the anchor prompt. For "a house in ocean stripes style" and its style-free anchor "a house"
that pairs the target's "in ocean" with the anchor's EOS and padding: the edit rewrites the K/V of
the word "ocean" in the context "a house in", and CLIP's text encoder is causal, so that state is
the same in every prompt that starts with those words — "a house in ocean fade style" included.
Erasing one ocean style then erases every ocean style.

``concept`` alignment: with s = the position of the concept's last token (or, when the concept's
tokens are not in the prompt, the first position where target and anchor differ),

* positions j < s keep their K/V (target v* = W_ref·c_j: a preservation constraint, r_j = 0);
* positions j ≥ s (the concept's last token, the words after it, EOS, padding) are paired with
  the anchor position a(j) = j + (eos_a − eos_t), the two prompts aligned at their EOS, clamped
  to [p, L − 1] with p the length of the prompts' common prefix. The target's EOS and padding
  then carry the anchor's, and the words between the concept and EOS take the anchor's first
  differing state.
"""

from __future__ import annotations

from dataclasses import dataclass

ALIGNMENTS = ("position", "concept")


@dataclass(frozen=True)
class Alignment:
    keep: list[int]  # target positions held at W_ref (r = 0)
    edit: list[tuple[int, int]]  # (target position, anchor position)
    concept_found: bool


def eos_index(ids: list[int], eos_id: int) -> int:
    """Position of the first EOS after BOS (the last position when truncated)."""
    for i in range(1, len(ids)):
        if ids[i] == eos_id:
            return i
    return len(ids) - 1


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def find(ids: list[int], sub: list[int]) -> int | None:
    """First index of ``sub`` in ``ids`` (None when absent or empty)."""
    n = len(sub)
    for i in range(len(ids) - n + 1) if n else ():
        if ids[i:i + n] == sub:
            return i
    return None


def align(ids_t: list[int], ids_a: list[int], concept: list[int], eos_id: int,
          mode: str = "concept") -> Alignment:
    """The positions of one (target, anchor) pair of padded token-id rows of equal length L."""
    L = len(ids_t)
    if mode == "position":
        return Alignment(keep=[], edit=[(j, j) for j in range(L)], concept_found=True)
    p = common_prefix(ids_t, ids_a)
    start = find(ids_t, concept)
    s = min(p if start is None else start + len(concept) - 1, L - 1)
    off = eos_index(ids_a, eos_id) - eos_index(ids_t, eos_id)
    edit = [(j, min(max(j + off, p), L - 1)) for j in range(s, L)]
    return Alignment(keep=list(range(s)), edit=edit, concept_found=start is not None)
