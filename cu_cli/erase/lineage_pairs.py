"""The chain's earlier requests, rebuilt from a parent state's lineage.

A state written by ``cu erase`` records what it erased (``cu.erased``) and, per erase step of its
lineage, the concepts, kinds and anchors (``measured``). On a world base the prompt pairs of those
requests are a function of that record, so a later request can rebuild them exactly: the K/V
holds (``--anchor-scope chain``, ``--erased-weight``) hold them, and UCE's chain scope
(``--uce-scope chain``) re-erases them from the root base (objectives/uce.py).
"""

from __future__ import annotations

from dataclasses import replace

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.log import get_logger

log = get_logger(__name__)


def erased_before(plan) -> list[str]:
    """The concepts the parent state has erased (its ``cu.erased``; none from a base)."""
    return list(plan.parent_header.json("cu.erased", [])) if plan.parent_header else []


def lineage_kinds(header) -> set[str]:
    """The kinds of the concepts erased by the erase steps of ``header``'s lineage."""
    steps = header.json("cu.lineage", []) if header is not None else []
    return {k for st in steps if st.get("op") == "erase"
            for k in (st.get("measured") or {}).get("kinds", [])}


def lineage_pairs(plan, world, match: str, strict: str | None = None) -> list:
    """The prompt pairs of the parent's earlier erase requests, rebuilt from each lineage step's
    concepts and recorded anchors/kinds (``measured``). A step that read its anchor prompts from a
    user file cannot be rebuilt: it is skipped with a warning, or, with ``strict`` (the option
    that needs every one, for the message), a usage error — as is an erased concept that no erase
    step of the lineage names (a merged state's)."""
    from cu_cli.erase.prompts import build_pairs

    steps = plan.parent_header.json("cu.lineage", []) if plan.parent_header else []
    out, skipped = [], []
    for st in steps:
        m = st.get("measured") or {}
        if st.get("op") != "erase" or "anchors" not in m:
            continue
        if (st.get("inputs") or {}).get("anchor_prompts_sha256"):
            skipped += list(st.get("concepts", []))
            continue
        cfg = st.get("config") or {}
        for concept, anchor, kind in zip(st.get("concepts", []), m["anchors"], m["kinds"]):
            try:
                pair = build_pairs(concept, kind, anchor or None, world, seed=0, match=match,
                                   need_anchor=False, caption_with=cfg.get("caption_with"))
            except CuError:
                skipped.append(concept)
                continue
            out.append(replace(pair, solved_with=solved_with(cfg)))
    if strict:
        rebuilt = {p.concept for p in out}
        missing = [c for c in erased_before(plan) if c not in rebuilt] + skipped
        if missing:
            raise UsageError(f"{strict} re-erases every concept of the chain, but the requests "
                             f"of {', '.join(dict.fromkeys(missing))} cannot be rebuilt from the "
                             "parent's lineage (anchor prompts from a file, or a merged state)")
    elif skipped:
        log.warning("the chain's earlier prompts of %s cannot be rebuilt (anchor prompts from a "
                    "file, or no anchor); only the others are held", ", ".join(skipped))
    return out


def solved_with(cfg: dict) -> tuple | None:
    """(η, push, weighting) a UCE step erased its concepts with (None for another method): in a
    chain that mixes kinds, each kind's concepts are re-solved with their own request's push."""
    if cfg.get("method") != "uce" or cfg.get("uce_eta") is None:
        return None
    return (float(cfg["uce_eta"]), cfg.get("uce_push") or "anchor",
            cfg.get("uce_weighting") or "column")


def own_free(pairs: list, concepts: list[str]) -> list:
    """The earlier pairs without the prompts that name one of this request's own concepts (in a
    mixed stream an earlier style request's "a bolt in neon stripes style" is this object
    request's target: holding it at the parent's or the base's K/V would block the erasure)."""
    from cu_cli.erase.prompts import drop_naming

    return [kept for kept in (drop_naming(pair, concepts) for pair in pairs) if kept is not None]
