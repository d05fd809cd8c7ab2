"""The defaults registry: which value an option takes when the user did not give it.

Precedence, first hit wins:
1. the user's value (flag, ``--set``, YAML);
2. the base's world profile for this method, then for every method (``"*"``), e.g.
   world/minicanvas_profile.py — measured values;
3. the objective's reference defaults (its paper's or the reference scripts' values,
   ``Objective.reference_defaults``);
4. the option's declared default (its ``opt()`` in the declaring group);
5. for another objective's option, that objective's reference default (so the lineage records a
   value for every field).

:func:`describe` renders the same table for ``--help`` (one source for both).
"""

from __future__ import annotations

from dataclasses import replace

from cu_cli._util.errors import UsageError
from cu_cli.erase.objectives import ERASE_OBJECTIVES
from cu_cli.erase.optfield import check, spell
from cu_cli.erase.options import DECLARED, FIELDS, OWNER, SPECS, option_label

_OBJECTIVE_OF = {o.Options: o for o in ERASE_OBJECTIVES.values() if o.Options}


def default_for(name: str, cfg, profile: dict):
    """The default of option ``name`` for ``cfg.method`` under a world ``profile``."""
    method = cfg.method or DECLARED["method"]
    for table in (profile.get(method, {}), profile.get("*", {}),
                  ERASE_OBJECTIVES[method].reference_defaults(cfg)):
        if name in table:
            return table[name]
    if DECLARED[name] is not None:
        return DECLARED[name]
    owner = _OBJECTIVE_OF.get(OWNER[name])
    if owner is not None:
        return owner.reference_defaults(cfg).get(name)
    from cu_cli.erase.regularizers import REGULARIZERS

    for reg in REGULARIZERS:
        if name in reg.defaults:
            return reg.defaults[name]
    return None


def resolve(cfg, profile: dict | None = None):
    """Fill every unset option (precedence above) and check each declared range and choice."""
    profile = profile or {}
    method = cfg.method or DECLARED["method"]
    if method not in ERASE_OBJECTIVES:
        raise UsageError(f"--method {method!r}: choose one of {', '.join(ERASE_OBJECTIVES)}")
    cfg = replace(cfg, method=method)
    fill = {n: default_for(n, cfg, profile) for n in FIELDS if getattr(cfg, n) is None}
    cfg = replace(cfg, **fill)
    for n in FIELDS:
        check(n, getattr(cfg, n), SPECS[n], option_label(n))
    if ERASE_OBJECTIVES[method].needs.anchor_images and cfg.anchor_images < 1:
        raise UsageError("--anchor-images must be >= 1")
    return cfg


def describe(name: str, profiles: dict[str, dict]) -> str:
    """``--help`` text of an option's defaults: the reference values per method, then each world's
    where they differ, e.g. ``default: 0; minicanvas: conabl 0.05``."""
    from cu_cli.erase.options import EraseConfig

    methods = [m for m, o in ERASE_OBJECTIVES.items()
               if OWNER[name] not in _OBJECTIVE_OF or _OBJECTIVE_OF[OWNER[name]] is o]

    def row(profile: dict) -> dict:
        return {m: default_for(name, EraseConfig(method=m), profile) for m in methods}

    def fmt(values: dict) -> str:
        shown = {m: _show(v) for m, v in values.items()}
        if len(set(shown.values())) == 1:
            return next(iter(shown.values()))
        return ", ".join(f"{m} {v}" for m, v in shown.items())

    ref = row({})
    parts = [f"default: {fmt(ref)}"]
    for world, profile in profiles.items():
        mine = row(profile)
        if mine != ref:
            changed = {m: v for m, v in mine.items() if v != ref[m]}
            text = (fmt(mine) if len(changed) == len(mine)
                    else ", ".join(f"{m} {_show(v)}" for m, v in changed.items()))
            parts.append(f"{world}: {text}")
    return "; ".join(parts)


def _show(v) -> str:
    return spell(v, exact=False)
