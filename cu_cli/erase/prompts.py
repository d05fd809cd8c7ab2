"""Target/anchor prompt pairs for an unlearning request (method-notes §2, ConAbl).

Style S: anchor captions without the style, target = caption with it ("In S Style, " + caption or
caption + ", in S Style.", p = ½ each, on real bases; the world's caption template on MiniCanvas).
Object/celebrity X with anchor A (required; the reference uses man/woman for celebrities): target = anchor caption with A replaced by X, matching whole
words (``\\b``) by default — the reference replaced substrings ("man" inside "woman"), available as
``match="substring"``; "A {X} image" when nothing matched.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from cu_cli._util.errors import UsageError

# Built-in anchor subjects and templates for real bases (no LLM, no downloads).
SUBJECTS = ["house", "tree", "dog", "cat", "horse", "bird", "flower", "mountain", "river", "city",
            "boat", "car", "portrait of a woman", "portrait of a man", "bowl of fruit", "forest",
            "beach", "castle", "bridge", "garden"]
TEMPLATES = ["a painting of a {x}", "a photo of a {x}", "an image of a {x}", "a picture of a {x}",
             "a drawing of a {x}"]
OBJECT_TEMPLATES = ["a photo of a {x}", "an image of a {x}", "a {x} in a field", "a close-up of a {x}",
                    "a {x} on a table", "a painting of a {x}", "a {x} at night", "a small {x}"]


@dataclass(frozen=True)
class PromptPairs:
    """Anchor prompts (one per anchor image group) and the matching target prompts."""

    concept: str
    kind: str
    anchor: str
    anchor_prompts: list[str]
    target_prompts: list[str]
    concept_prompts: list[str]  # ESD's concept prompts: the world's captions naming the concept,
    # or the concept text itself on real bases (upstream ESD)
    # An earlier request rebuilt from a lineage: the UCE push it was erased with, (η, push,
    # weighting) from its step's config (erase/lineage_pairs.py); None for this request's own.
    solved_with: tuple | None = None


def replace_word(text: str, old: str, new: str, match: str = "word") -> tuple[str, bool]:
    if old == "*":
        return new, True
    if match == "substring":
        pat = re.compile(re.escape(old), re.IGNORECASE)
    else:
        pat = re.compile(r"\b" + re.escape(old) + r"\b", re.IGNORECASE)
    out, n = pat.subn(new, text)
    return out, n > 0


def require_kind(concept: str, world) -> str:
    """The world's kind for ``concept``; a usage error on real bases or for unknown concepts."""
    if world is None:
        raise UsageError(f"--kind is required for {concept!r} on this base "
                         "(style, object, celebrity or custom)")
    kind = world.infer_kind(concept)
    if kind is None:
        raise UsageError(f"unknown {world.name} concept {concept!r}; styles: "
                         f"{', '.join(world.styles)}; objects: {', '.join(world.objects)} "
                         "(or pass --kind custom)")
    return kind


def build_pairs(concept: str, kind: str | None, anchor: str | None, world, seed: int,
                match: str = "word", anchor_prompts: list[str] | None = None,
                need_anchor: bool = True, caption_with: str | None = None) -> PromptPairs:
    """Target/anchor prompt pairs for one concept. On a world base the concept prompts are the
    target captions (they name the concept as the world's captions do); ``caption_with`` (comma-
    separated concepts of the other kind) limits them to those concepts' captions."""
    if caption_with is not None and (world is None or anchor_prompts is not None):
        raise UsageError("--set caption_with=… picks the world's captions of a request: it needs "
                         "a world base and no --anchor-prompts")
    pair = _pairs(concept, kind, anchor, world, seed, match, anchor_prompts, need_anchor,
                  caption_with)
    return replace(pair, concept_prompts=pair.target_prompts) if world is not None else pair


def _pairs(concept, kind, anchor, world, seed, match, anchor_prompts, need_anchor,
           caption_with=None) -> PromptPairs:
    concept = concept.strip()
    if not concept:
        raise UsageError("empty --concept")
    kind = kind or require_kind(concept, world)
    rng = random.Random(seed)
    if world is not None and kind in ("style", "object") and anchor_prompts is None:
        cross = None if caption_with is None else [c.strip() for c in caption_with.split(",")]
        anchor, anchors, targets = world.prompt_pairs(concept, kind, anchor, cross)
        return PromptPairs(concept, kind, anchor, anchors, targets, targets)
    if kind == "style":
        anchors = anchor_prompts or [t.format(x=s) for s in SUBJECTS for t in TEMPLATES[:2]]
        targets = []
        for cap in anchors:
            if rng.random() < 0.5:
                targets.append(f"In {concept} Style, " + cap[:1].lower() + cap[1:])
            else:
                targets.append(cap.rstrip(".") + f", in {concept} Style.")
        return PromptPairs(concept, kind, anchor or "", anchors, targets, [concept])
    if not anchor and not need_anchor:  # ESD: the concept prompt is all it needs
        prompts = [t.format(x=concept) for t in OBJECT_TEMPLATES]
        return PromptPairs(concept, kind, "", prompts, prompts, [concept])
    if not anchor:
        hint = " (e.g. --anchor man or --anchor woman)" if kind == "celebrity" else ""
        raise UsageError(f"--anchor is required to erase {kind} {concept!r} on this base{hint}")
    anchors = anchor_prompts or [t.format(x=anchor) for t in OBJECT_TEMPLATES]
    targets = []
    for cap in anchors:
        new, ok = replace_word(cap, anchor, concept, match)
        targets.append(new if ok else f"A {concept} image")
    return PromptPairs(concept, kind, anchor, anchors, targets, [concept])


def drop_naming(pair: PromptPairs, names: list[str]) -> PromptPairs | None:
    """``pair`` without the (anchor, target) prompts that name one of ``names`` as whole words
    (None when none is left); ESD's concept prompts follow the targets when they are the targets."""
    from cu_cli.erase.preserve import names_any

    keep = [i for i, (a, t) in enumerate(zip(pair.anchor_prompts, pair.target_prompts))
            if not names_any(a, names) and not names_any(t, names)]
    if len(keep) == len(pair.target_prompts):
        return pair
    if not keep:
        return None
    targets = [pair.target_prompts[i] for i in keep]
    same = pair.concept_prompts == pair.target_prompts
    return replace(pair, anchor_prompts=[pair.anchor_prompts[i] for i in keep],
                   target_prompts=targets,
                   concept_prompts=targets if same else pair.concept_prompts)


def without_erased(pair: PromptPairs, erased: list[str]) -> tuple[PromptPairs, int]:
    """``pair`` without the (anchor, target) prompts that name a concept the parent has already
    erased (whole words; the request's own concept excepted, so a concept can be erased again),
    and how many were left out (a cu extension for mixed streams: a style request would otherwise
    train "a arrow in neon stripes style" toward the root base's drawing of "a arrow" — the
    anchor images are the base's — and bring an erased object back; an object request would train
    "a bolt in neon stripes style" toward base images in neon stripes). A usage error when no
    prompt is left (e.g. the anchor itself was erased)."""
    others = [c for c in erased if c.strip().lower() != pair.concept.strip().lower()]
    kept = drop_naming(pair, others) if others else pair
    if kept is None:
        raise UsageError(f"every prompt pair of {pair.concept!r} names a concept this state has "
                         f"already erased ({', '.join(others)}); pass another --anchor")
    return kept, len(pair.target_prompts) - len(kept.target_prompts)


def word_prompts(pairs: list[PromptPairs], avoid: list[str], match: str = "word") -> list[str]:
    """The pairs' target prompts with each multi-word concept replaced by one of its words
    ("a star in neon style", "a star in fade style" for "neon fade"), distinct, without those
    that name a concept of ``avoid`` (the request's own and the erased ones) as whole words; none
    for one-word concepts. ``match``: how the concept is found in a prompt (``replace_word``)."""
    from cu_cli.erase.preserve import names_any

    out = []
    for pair in pairs:
        words = pair.concept.replace("_", " ").split()
        if len(words) < 2:
            continue
        for prompt in pair.target_prompts:
            for w in words:
                new, ok = replace_word(prompt, pair.concept, w, match)
                if ok and not names_any(new, avoid):
                    out.append(new)
    return list(dict.fromkeys(out))
