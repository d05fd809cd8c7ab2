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
from dataclasses import dataclass

from cu_cli._util.errors import CuError, UsageError

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


def replace_word(text: str, old: str, new: str, match: str = "word") -> tuple[str, bool]:
    if old == "*":
        return new, True
    if match == "substring":
        pat = re.compile(re.escape(old), re.IGNORECASE)
    else:
        pat = re.compile(r"\b" + re.escape(old) + r"\b", re.IGNORECASE)
    out, n = pat.subn(new, text)
    return out, n > 0


def infer_kind(concept: str, world) -> str:
    if world is None:
        raise UsageError(f"--kind is required for {concept!r} on this base "
                         "(style, object, celebrity or custom)")
    if concept in world.styles:
        return "style"
    if concept in world.objects:
        return "object"
    raise UsageError(f"unknown MiniCanvas concept {concept!r}; styles: {', '.join(world.styles)}; "
                     f"objects: {', '.join(world.objects)} (or pass --kind custom)")


def build_pairs(concept: str, kind: str | None, anchor: str | None, world, seed: int,
                match: str = "word", anchor_prompts: list[str] | None = None,
                need_anchor: bool = True) -> PromptPairs:
    """Target/anchor prompt pairs for one concept."""
    concept = concept.strip()
    if not concept:
        raise UsageError("empty --concept")
    kind = kind or infer_kind(concept, world)
    rng = random.Random(seed)
    if world is not None and kind in ("style", "object") and anchor_prompts is None:
        return _world_pairs(concept, kind, anchor, world)
    if kind == "style":
        anchors = anchor_prompts or [t.format(x=s) for s in SUBJECTS for t in TEMPLATES[:2]]
        targets = []
        for cap in anchors:
            if rng.random() < 0.5:
                targets.append(f"In {concept} Style, " + cap[:1].lower() + cap[1:])
            else:
                targets.append(cap.rstrip(".") + f", in {concept} Style.")
        return PromptPairs(concept, kind, anchor or "", anchors, targets)
    if not anchor and not need_anchor:  # ESD: the concept prompt is all it needs
        prompts = [t.format(x=concept) for t in OBJECT_TEMPLATES]
        return PromptPairs(concept, kind, "", prompts, prompts)
    if not anchor:
        hint = " (e.g. --anchor man or --anchor woman)" if kind == "celebrity" else ""
        raise UsageError(f"--anchor is required to erase {kind} {concept!r} on this base{hint}")
    anchors = anchor_prompts or [t.format(x=anchor) for t in OBJECT_TEMPLATES]
    targets = []
    for cap in anchors:
        new, ok = replace_word(cap, anchor, concept, match)
        targets.append(new if ok else f"A {concept} image")
    return PromptPairs(concept, kind, anchor, anchors, targets)


def _world_pairs(concept: str, kind: str, anchor: str | None, world) -> PromptPairs:
    if kind == "style":
        if concept not in world.styles:
            raise UsageError(f"{concept!r} is not a MiniCanvas style")
        objs = list(world.objects)
        return PromptPairs(concept, kind, anchor or "", [world.caption(o, anchor or None) for o in objs],
                           [world.caption(o, concept) for o in objs])
    if concept not in world.objects:
        raise UsageError(f"{concept!r} is not a MiniCanvas object")
    anchor = anchor or world.object_anchors.get(concept)
    if not anchor:
        raise CuError(f"MiniCanvas has no anchor for {concept!r} (it is a retained object); "
                      "pass --anchor")
    styles = list(world.styles)
    return PromptPairs(concept, kind, anchor, [world.caption(anchor, s) for s in styles],
                       [world.caption(concept, s) for s in styles])
