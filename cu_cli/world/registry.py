"""Built-in worlds as plugins: name -> :class:`WorldEntry` (no torch, no numpy at import).

A world is a procedural data set with its own concept vocabulary and evaluation protocols
(MiniCanvas, a miniature of UnlearnCanvas). Code outside the world never compares names; it asks
the world object (:class:`World`) what it needs:

- ``infer_kind(concept)`` — style | object | None;
- ``prompt_pairs(concept, kind, anchor)`` — (anchor, anchor prompts, target prompts) from its
  caption template;
- ``preserve_prompts(targets)`` — what ``--preserve world`` keeps (its protocol retain sets held
  out, so RA measures generalisation);
- ``keep_prompts(kind, erased)`` — the vocabulary hold of ``--keep-weight``: the concepts of
  that kind not erased, in captions that avoid the evaluation grid;
- ``default_protocol(erased)`` — the ``cu eval`` protocol for a state;
- ``concepts(kind)`` — the world's concepts of a kind (its vocabulary: UCE's contrast push);
- ``basis_vocab`` and ``basis_max_sim`` — the ``cu project-basis`` candidate vocabulary and its
  near-synonym ceiling;
- the entry's ``erase_defaults`` — measured ``cu erase`` defaults per method (``"*"``: all
  methods), overriding each objective's reference defaults (erase/defaults.py), and its
  ``erase_presets`` — named option sets for ``--preset`` (erase/presets.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from cu_cli.world import minicanvas_profile


class World(Protocol):
    name: str
    basis_vocab: str
    basis_max_sim: float

    def infer_kind(self, concept: str) -> str | None: ...

    def prompt_pairs(self, concept: str, kind: str, anchor: str | None,
                     cross: list[str] | None = None) -> tuple[str, list[str], list[str]]: ...

    def preserve_prompts(self, targets: list[str]) -> list[str]: ...

    def keep_prompts(self, kind: str, erased: list[str], plain: bool = False) -> list[str]: ...

    def default_protocol(self, erased: list[str]) -> str: ...

    def concepts(self, kind: str) -> list[str]: ...


@dataclass(frozen=True)
class WorldEntry:
    name: str
    doc: str
    module: str  # imported on first use (numpy/PIL)
    erase_defaults: dict  # method | "*" -> {option: value}
    erase_presets: dict  # preset name -> {kind | "*" -> {option: value}} (erase/presets.py)

    def load(self) -> World:
        return importlib.import_module(self.module).load_world()


WORLDS: dict[str, WorldEntry] = {
    "minicanvas": WorldEntry(
        name="minicanvas", doc="16 objects x 16 styles at 32x32 (docs/minicanvas.md)",
        module="cu_cli.world.minicanvas", erase_defaults=minicanvas_profile.ERASE_DEFAULTS,
        erase_presets=minicanvas_profile.ERASE_PRESETS),
}


def get_world(name: str | None) -> World | None:
    """The loaded world of a base (``Base.world``), or None for real bases."""
    return WORLDS[name].load() if name else None


def erase_profile(name: str | None) -> dict:
    """The world's erase defaults (empty for real bases: the reference defaults apply)."""
    return WORLDS[name].erase_defaults if name else {}


def erase_presets(name: str | None) -> dict:
    """The world's ``--preset`` option sets (empty for real bases: none is measured there)."""
    return WORLDS[name].erase_presets if name else {}
