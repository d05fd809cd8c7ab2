"""Semantic sensitivity (Lee et al., arXiv 2511.07970; method-notes §12): does a retained concept
lose more accuracy the closer its text embedding is to the erased concepts?

For each state and each retained in-domain concept r: drop = acc_base(r) − acc_state(r) and
sim = max_e cos(emb(r), emb(e)) over the state's erased concepts e, with token-level concept
embeddings (models/text.py). Pearson r over all (sim, drop) points. The paper reports r = −0.627
between retention and similarity, i.e. a positive r between *drop* and similarity.
"""

from __future__ import annotations

import math

TEMPLATES = {"style": "An image in the style of {x}", "object": "An image of a {x}"}


def pearson(xs: list[float], ys: list[float]) -> float | None:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def semantic_sensitivity(pipe, domain: str, base_metrics: dict, states: list[dict],
                         concepts: list[str]) -> dict:
    from cu_cli.models.text import concept_embeddings

    emb = concept_embeddings(pipe, concepts, TEMPLATES[domain])
    emb = emb / emb.norm(dim=1, keepdim=True)
    index = {c: i for i, c in enumerate(concepts)}
    points = []
    for s in states:
        if s["path"] is None or not s["erased"]:
            continue
        for r, acc in s["metrics"]["per_concept"].items():
            if r in s["erased"] or r not in index or r not in base_metrics["per_concept"]:
                continue
            sim = max(float(emb[index[r]] @ emb[index[e]]) for e in s["erased"])
            points.append({"state": s["path"], "concept": r, "similarity": sim,
                           "drop": base_metrics["per_concept"][r] - acc})
    r = pearson([p["similarity"] for p in points], [p["drop"] for p in points])
    return {"pearson_r_drop_vs_similarity": r, "points": points, "n": len(points)}
