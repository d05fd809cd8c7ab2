"""Evaluation protocols as data (method-notes §10): prompt template, concept lists, sampler.

A protocol's grid at a state with erased set E (in-domain) is
    (E ∪ retain_in) × retain_cross × seeds,
one image per (in-domain concept, cross-domain concept, seed), each seeded from (seed, prompt).
Style runs: in-domain = styles, cross-domain = objects; object runs the reverse.

* ``unlearncanvas-style`` / ``unlearncanvas-object``: UnlearnCanvas (Zhang et al., arXiv
  2402.11846) lists, benchmark prompt "A {Object} image in {Style with spaces} style." (cu default;
  ``prompt_variant="cuig"`` gives the reference's "A {Object} image in {Style} style"), 100 steps,
  CFG 9.0, seeds 188, 288, 588, 688, 888, DDIM.
* ``minicanvas-style`` / ``minicanvas-object``: the same structure on the built-in world: its erase
  orders, its 4 + 4 retain sets, its caption template, DDIM 25 steps, CFG 7.5, 10 seeds (more seeds
  than UnlearnCanvas because the retain sets are smaller).
* ``minicanvas-style-wide`` / ``minicanvas-object-wide``: the same with every cross-domain concept
  of the world (16 instead of the 4 retained ones): 4x the images of each erased concept (160
  instead of 40), for comparing two states finer than one image in 40 (e.g. a LoRA export
  against its state, docs/export.md). Its RA-C scores every cross-domain concept, erased ones
  and those ``--preserve world`` holds included: for single-domain states only, and not
  comparable with the narrow protocol's RA-C.
* ``minicanvas-full``: base quality — every style × every object, 2 seeds (RA-I = mean style
  accuracy over all styles, RA-C = mean object accuracy over all objects).
"""

from __future__ import annotations

from dataclasses import dataclass

from cu_cli._util.text import concept_key

UC_STYLES = [
    "Abstractionism", "Artist_Sketch", "Blossom_Season", "Bricks", "Byzantine", "Cartoon",
    "Cold_Warm", "Color_Fantasy", "Comic_Etch", "Crayon", "Cubism", "Dadaism", "Dapple",
    "Defoliation", "Early_Autumn", "Expressionism", "Fauvism", "French", "Glowing_Sunset",
    "Gorgeous_Love", "Greenfield", "Impressionism", "Ink_Art", "Joy", "Liquid_Dreams",
    "Magic_Cube", "Meta_Physics", "Meteor_Shower", "Monet", "Mosaic", "Neon_Lines", "On_Fire",
    "Pastel", "Pencil_Drawing", "Picasso", "Pop_Art", "Red_Blue_Ink", "Rust", "Seed_Images",
    "Sketch", "Sponge_Dabbed", "Structuralism", "Superstring", "Surrealism", "Ukiyoe",
    "Van_Gogh", "Vibrant_Flow", "Warm_Love", "Warm_Smear", "Watercolor", "Winter",
]  # classifier class order (UnlearnCanvas constants/const.py: 50 styles + Seed_Images)
UC_OBJECTS = [
    "Architectures", "Bears", "Birds", "Butterfly", "Cats", "Dogs", "Fishes", "Flame", "Flowers",
    "Frogs", "Horses", "Human", "Jellyfish", "Rabbits", "Sandwiches", "Sea", "Statues", "Towers",
    "Trees", "Waterfalls",
]
UC_STYLE_SEQ = ["Abstractionism", "Byzantine", "Cartoon", "Cold_Warm", "Ukiyoe", "Van_Gogh",
                "Neon_Lines", "Picasso", "On_Fire", "Magic_Cube", "Winter", "Vibrant_Flow"]
UC_OBJECT_SEQ = ["Bears", "Birds", "Cats", "Dogs", "Fishes", "Frogs", "Jellyfish", "Rabbits",
                 "Sandwiches", "Statues", "Towers", "Waterfalls"]
UC_RETAIN_STYLES = ["Blossom_Season", "Rust", "Crayon", "Fauvism", "Superstring", "Red_Blue_Ink",
                    "Gorgeous_Love", "French", "Joy", "Greenfield", "Expressionism", "Impressionism"]
UC_RETAIN_OBJECTS = ["Architectures", "Butterfly", "Flame", "Flowers", "Horses", "Human", "Sea",
                     "Trees"]


@dataclass(frozen=True)
class Protocol:
    name: str
    domain: str  # "style" or "object": what is erased
    erase_order: tuple[str, ...]
    retain_in: tuple[str, ...]  # in-domain retain set (RA-I)
    retain_cross: tuple[str, ...]  # cross-domain retain set (RA-C, and the grid's other axis)
    template: str  # format fields: object, style
    seeds: tuple[int, ...]
    steps: int
    guidance: float
    classifier: str  # default classifier spec
    styles: tuple[str, ...]
    objects: tuple[str, ...]

    def prompt(self, concept: str, other: str) -> str:
        obj, style = (other, concept) if self.domain == "style" else (concept, other)
        return self.template.format(object=obj, style=style, style_spaces=style.replace("_", " "))

    @property
    def in_domain(self) -> tuple[str, ...]:
        return self.styles if self.domain == "style" else self.objects

    def grid(self, erased: list[str]) -> list[tuple[str, str, int]]:
        """(in-domain concept, cross-domain concept, seed) for erased ∪ retain_in."""
        concepts = list(dict.fromkeys(list(erased) + list(self.retain_in)))
        return [(c, o, s) for c in concepts for o in self.retain_cross for s in self.seeds]

    def match(self, names: list[str], what: str = "") -> list[str]:
        """Each name in the protocol's spelling: exact, else case-, space- and
        underscore-insensitive (``Van Gogh``, ``van_gogh`` → ``Van_Gogh``). An unknown name is a
        usage error (exit 2) naming the closest spellings."""
        return [self.match_one(n, what) for n in names]

    def match_one(self, name: str, what: str = "") -> str:
        from cu_cli._util.errors import UsageError

        known = self.in_domain
        if name in known:
            return name
        key = concept_key(name)
        hits = [c for c in known if concept_key(c) == key]
        if len(hits) == 1:
            return hits[0]
        import difflib

        by_key = {concept_key(c): c for c in known}
        close = [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)]
        hint = f"; closest: {', '.join(close)}" if close else ""
        where = f"{what} " if what else ""
        raise UsageError(f"{where}{name!r} is not a {self.domain} of protocol {self.name}{hint} "
                         f"(known: {', '.join(known)})")

    def check_erased(self, erased: list[str]) -> None:
        self.match(erased)


def _minicanvas(name: str, prompt_variant: str) -> Protocol:
    """``minicanvas-style`` / ``minicanvas-object`` from the world's data (orders, retain sets,
    template, sampler)."""
    from cu_cli.world.registry import get_world

    w = get_world("minicanvas")
    domain = name.split("-", 1)[1]
    pr = w.protocol
    cross = "object" if domain == "style" else "style"
    return Protocol(
        name=name, domain=domain, erase_order=tuple(w.sequences[domain]),
        retain_in=tuple(w.retain[domain]), retain_cross=tuple(w.retain[cross]),
        template=w.caption_template, seeds=tuple(pr["seeds"]), steps=int(pr["steps"]),
        guidance=float(pr["guidance"]), classifier="minicanvas", styles=w.styles,
        objects=w.objects)


def _minicanvas_wide(name: str, prompt_variant: str) -> Protocol:
    """``minicanvas-style`` / ``-object`` with every cross-domain concept of the world."""
    from dataclasses import replace

    p = _minicanvas(name.removesuffix("-wide"), prompt_variant)
    return replace(p, name=name, retain_cross=p.objects if p.domain == "style" else p.styles)


def _minicanvas_full(name: str, prompt_variant: str) -> Protocol:
    """Base quality: every object x every style, 2 seeds."""
    from dataclasses import replace

    p = _minicanvas("minicanvas-style", prompt_variant)
    return replace(p, name=name, retain_in=p.styles, retain_cross=p.objects, seeds=p.seeds[:2])


def _unlearncanvas(name: str, prompt_variant: str) -> Protocol:
    domain = name.split("-", 1)[1]
    template = ("A {object} image in {style_spaces} style." if prompt_variant == "benchmark"
                else "A {object} image in {style} style")
    return Protocol(
        name=name, domain=domain,
        erase_order=tuple(UC_STYLE_SEQ if domain == "style" else UC_OBJECT_SEQ),
        retain_in=tuple(UC_RETAIN_STYLES if domain == "style" else UC_RETAIN_OBJECTS),
        retain_cross=tuple(UC_RETAIN_OBJECTS if domain == "style" else UC_RETAIN_STYLES),
        template=template, seeds=(188, 288, 588, 688, 888), steps=100, guidance=9.0,
        classifier="unlearncanvas", styles=tuple(UC_STYLES), objects=tuple(UC_OBJECTS))


# name -> factory(name, prompt_variant); the CLI lists these names.
PROTOCOLS = {
    "minicanvas-style": _minicanvas,
    "minicanvas-object": _minicanvas,
    "minicanvas-style-wide": _minicanvas_wide,
    "minicanvas-object-wide": _minicanvas_wide,
    "minicanvas-full": _minicanvas_full,
    "unlearncanvas-style": _unlearncanvas,
    "unlearncanvas-object": _unlearncanvas,
}
DEFAULT_PROTOCOL = "unlearncanvas-style"  # real bases (the UnlearnCanvas generator)


def get_protocol(name: str, prompt_variant: str = "benchmark") -> Protocol:
    from cu_cli._util.errors import UsageError

    if name not in PROTOCOLS:
        raise UsageError(f"--protocol {name!r}: choose {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name](name, prompt_variant)


def default_protocol(world, erased: list[str]) -> str:
    """The world's protocol for these erased concepts; UnlearnCanvas on real bases."""
    return world.default_protocol(erased) if world is not None else DEFAULT_PROTOCOL
