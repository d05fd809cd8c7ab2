"""Named option sets (``--preset``): a world's measured configuration for a use, applied to every
option the user did not give.

A preset sits between the user's values and the world's per-method defaults (erase/defaults.py):
the user's flags, ``--set`` and YAML keys win, the preset fills what they leave unset, and the
defaults registry fills the rest. Names are declared here (so ``--preset`` has fixed choices and
``cu --help`` imports nothing); the values belong to each world (``WorldEntry.erase_presets``,
e.g. world/minicanvas_profile.py), per concept kind, because they are measured there:
``{name: {kind | "*": {option: value}}}`` — an empty set for a kind means that kind's
single-request defaults are also its chain settings (measured so).

- ``none`` — no preset (the declared default).
- ``chain`` — the settings for a stream of requests (docs/erase.md, "The chain preset"); on
  MiniCanvas, for styles and for objects (each kind with its own measured push), the
  closed-form UCE edit in chain scope (state k is the simultaneous edit of the chain's k concepts
  from the root base) with the vocabulary hold (a cu extension, issue 19).
- ``auto`` — ``chain`` where the base's world declares it for the request's kind and every earlier
  erase request of the parent's lineage was a ``chain`` request of the same kind; ``none``
  otherwise (a chain that mixes kinds or methods keeps the defaults from its first switch). What
  ``cu run``'s sequential setting asks for when a study gives no erase option. The lineage
  records the resolved name.

A real (SD) base has no presets: ``--preset chain`` on it is a usage error, not a silent no-op.
"""

from __future__ import annotations

from dataclasses import replace

from cu_cli._util.errors import UsageError

PRESET_NAMES = ("none", "chain", "auto")


def _values(presets: dict, name: str, kind: str | None) -> dict | None:
    table = presets.get(name)
    if table is None:
        return None
    return table.get(kind, table.get("*"))


def earlier_requests(header) -> list[tuple[str | None, str | None]]:
    """(resolved preset, kind) of every erase step in ``header``'s lineage (none from a base)."""
    steps = header.json("cu.lineage", []) if header is not None else []
    return [((st.get("config") or {}).get("preset"), (st.get("config") or {}).get("kind"))
            for st in steps if st.get("op") == "erase"]


def apply_preset(cfg, presets: dict[str, dict], base_name: str = "this base",
                 kind: str | None = None, earlier: list | None = None):
    """``cfg`` with its preset's values for ``kind`` in every field the user left unset (``None``)
    and ``preset`` resolved to the name applied (``auto`` → ``chain`` or ``none``, rule above;
    ``earlier`` = :func:`earlier_requests` of the parent)."""
    name = cfg.preset or "none"
    if name == "auto":
        fits = all(p == "chain" and k == kind for p, k in earlier or [])
        name = "chain" if fits and _values(presets, "chain", kind) is not None else "none"
    if name == "none":
        return replace(cfg, preset="none")
    values = _values(presets, name, kind)
    if values is None:
        have = ", ".join(sorted(presets)) or "none"
        raise UsageError(f"--preset {name}: {base_name} declares no such preset for "
                         f"{kind or 'this'} requests (it has: {have}); give the options "
                         f"explicitly (docs/erase.md, 'The chain preset')")
    method = values.get("method")
    if method is not None and cfg.method is not None and cfg.method != method:
        raise UsageError(f"--preset {name} is a --method {method} configuration for {kind} "
                         f"requests; drop --method {cfg.method} or --preset {name}")
    fill = {k: v for k, v in values.items() if getattr(cfg, k) is None}
    return replace(cfg, preset=name, **fill)
