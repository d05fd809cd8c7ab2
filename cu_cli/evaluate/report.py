"""Post-processing of an evaluation: retention matrix, pictures, similarity, JSON shape."""

from __future__ import annotations


def finish(result, req, grid: str | None = None, plot: str | None = None,
           similarity: bool = False) -> dict:
    """The ``--json`` object of an :class:`~cu_cli.evaluate.run.EvalResult` plus the retention
    matrix (and, when asked, the similarity analysis); writes the requested pictures."""
    proto, pipe = result.proto, result.pipe
    states = result.states
    concepts = list(dict.fromkeys([c for s in states for c in s["erased"]] + list(proto.retain_in)
                                  + list(proto.retain_cross)))
    out = result.to_json()
    out["retention"] = {"concepts": concepts,
                        "rows": [{c: s["metrics"]["per_concept"].get(c) for c in concepts}
                                 for s in states]}
    if plot:
        from cu_cli.evaluate.figures import plot_chain

        plot_chain(out, plot)
    if similarity:
        from cu_cli.evaluate.similarity import semantic_sensitivity

        base_row = next(s for s in states if s["path"] is None)
        out["similarity"] = semantic_sensitivity(pipe, proto.domain, base_row["metrics"], states,
                                                 list(proto.in_domain))
    if grid:
        _sheet(result, req, grid)
    return out


def _sheet(result, req, path: str) -> None:
    from cu_cli.evaluate.figures import contact_sheet
    from cu_cli.evaluate.run import base_images_for

    states = [s for s in result.states if s["path"] is not None] or result.states
    last = states[-1]
    grid_spec, imgs = result.images[last["path"]]
    first = {}
    for i, (c, o, s) in enumerate(grid_spec):
        first.setdefault(c, i)
    cols = [c for c in first][:10]
    base_imgs = base_images_for(result, grid_spec, req)
    rows = [("base", [base_imgs[first[c]] for c in cols])]
    for s in states:
        g, im = result.images[s["path"]]
        idx = {c: i for i, (c, _, _) in reversed(list(enumerate(g)))}
        rows.append((("state " + str(result.states.index(s))) if s["path"] else "base",
                     [im[idx[c]] if c in idx else im[0] * 0 for c in cols]))
    labels = [("x " if c in last["erased"] else "") + c for c in cols]
    contact_sheet(rows, labels, path)
