"""MiniCanvas world: a procedural objects x styles renderer (a miniature of UnlearnCanvas).

UnlearnCanvas (Zhang et al., arXiv 2402.11846) pairs 20 objects with 50 artistic styles. MiniCanvas
keeps the design — every image is one object drawn in one style, with a caption naming both — at
32x32 RGB so that a Stable-Diffusion-architecture pipeline can be trained and evaluated on a CPU.

A style is ``"<palette> <texture>"`` (e.g. ``"neon stripes"``): the palette fixes the colours, the
texture the background pattern. Styles therefore share words with their neighbours, so their text
embeddings form neighbourhoods, as real artistic styles do. Objects are filled silhouettes in the
palette's foreground colour. Rendering is deterministic given a ``numpy.random.Generator``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down (anti-aliasing)


@dataclass(frozen=True)
class World:
    """Concept lists and protocol data of the MiniCanvas world (from ``minicanvas.json``)."""

    objects: tuple[str, ...]
    textures: tuple[str, ...]
    palettes: dict
    image_size: int
    caption_template: str
    anchor_only_template: str
    sequences: dict
    retain: dict
    object_anchors: dict
    protocol: dict

    @property
    def styles(self) -> tuple[str, ...]:
        """All styles, ``"<palette> <texture>"``, palette-major order."""
        return tuple(f"{p} {t}" for p in self.palettes for t in self.textures)

    def caption(self, obj: str, style: str | None) -> str:
        """Training/evaluation caption, e.g. ``"a star in neon stripes style"``."""
        if style is None:
            return self.anchor_only_template.format(object=obj)
        return self.caption_template.format(object=obj, style=style)

    def vocabulary(self) -> list[str]:
        """Every word used in captions (for the built-in tokenizer)."""
        words: set[str] = set()
        for text in [self.caption_template, self.anchor_only_template]:
            words.update(w for w in text.replace("{object}", "").replace("{style}", "").split())
        words.update(self.objects)
        words.update(self.textures)
        words.update(self.palettes)
        return sorted(words)

    # ------------------------------------------------------------ the World plugin interface
    name = "minicanvas"
    basis_vocab = "minicanvas"  # cu project-basis candidates: this world's concepts
    basis_max_sim = 2.0  # no near-synonym ceiling (composed names share words by design)

    def infer_kind(self, concept: str) -> str | None:
        if concept in self.styles:
            return "style"
        if concept in self.objects:
            return "object"
        return None

    def prompt_pairs(self, concept: str, kind: str, anchor: str | None,
                     cross: list[str] | None = None):
        """(anchor, anchor prompts, target prompts) from the caption template: a style is erased
        from every object's caption (anchor: the unstyled caption, or ``anchor`` as a style); an
        object from every style's caption, its anchor object substituted. ``cross``: only the
        captions with these concepts of the other kind (``--set caption_with``)."""
        from cu_cli._util.errors import CuError, UsageError

        other = self.objects if kind == "style" else self.styles
        if cross is not None:
            bad = [c for c in cross if c not in other]
            if bad or not cross:
                raise UsageError(f"caption_with {', '.join(map(repr, bad)) or '(empty)'}: not "
                                 f"{'an object' if kind == 'style' else 'a style'} of MiniCanvas "
                                 f"({', '.join(other)})")
            other = [c for c in other if c in set(cross)]
        if kind == "style":
            if concept not in self.styles:
                raise UsageError(f"{concept!r} is not a MiniCanvas style")
            return (anchor or "", [self.caption(o, anchor or None) for o in other],
                    [self.caption(o, concept) for o in other])
        if concept not in self.objects:
            raise UsageError(f"{concept!r} is not a MiniCanvas object")
        anchor = anchor or self.object_anchors.get(concept)
        if not anchor:
            raise CuError(f"MiniCanvas has no anchor for {concept!r} (it is a retained object); "
                          "pass --anchor")
        return (anchor, [self.caption(anchor, s) for s in other],
                [self.caption(concept, s) for s in other])

    def preserve_prompts(self, targets: list[str]) -> list[str]:
        """Every caption "a {object} in {style} style" and "a {object}" whose object and style are
        neither a target nor in the protocol retain sets (held out, so that RA measures how the
        penalty generalises to concepts it never saw). Previously erased concepts stay in: their
        prompts' K/V are kept at the parent's (erased) state."""
        held_out = (set(targets) | set(self.retain.get("style", []))
                    | set(self.retain.get("object", [])))
        objects = [o for o in self.objects if o not in held_out]
        styles = [s for s in self.styles if s not in held_out]
        prompts = [self.caption(o, s) for o in objects for s in styles]
        return prompts + [self.caption(o, None) for o in objects]

    def keep_prompts(self, kind: str, erased: list[str], plain: bool = False) -> list[str]:
        """The vocabulary hold (``--keep-weight``): every concept of the request's kind that
        ``erased`` (the chain's erased concepts and this request's) does not name, each in a
        caption with every concept of the other kind that is neither erased nor in that kind's
        protocol retain set — "a moon in neon dots style" for a style chain. The retained
        concepts of the request's own kind are held (they are the model's vocabulary); no
        caption of the evaluation grid (retain cross-domain concepts) is. ``plain``: an object is
        also held in its caption without a style ("a tree"), a context no erasure removes."""
        other = "object" if kind == "style" else "style"
        gone = set(erased)
        own = [c for c in (self.styles if kind == "style" else self.objects) if c not in gone]
        cross = [c for c in (self.objects if kind == "style" else self.styles)
                 if c not in gone and c not in set(self.retain.get(other, []))]
        if kind == "style":
            return [self.caption(o, s) for s in own for o in cross]
        bare = [self.caption(o, None) for o in own] if plain else []
        return [self.caption(o, s) for o in own for s in cross] + bare

    def concepts(self, kind: str) -> list[str]:
        """Every style or every object of the world (its vocabulary of that kind)."""
        return list(self.styles if kind == "style" else self.objects)

    def default_protocol(self, erased: list[str]) -> str:
        """The object protocol when every erased concept is an object, else the style one."""
        from cu_cli._util.text import concept_key

        objects = {concept_key(o) for o in self.objects}
        if erased and all(concept_key(c) in objects for c in erased):
            return "minicanvas-object"
        return "minicanvas-style"

    def as_dict(self) -> dict:
        """JSON-ready description (used by ``cu inspect minicanvas --json``)."""
        return {
            "objects": list(self.objects),
            "styles": list(self.styles),
            "textures": list(self.textures),
            "palettes": list(self.palettes),
            "caption_template": self.caption_template,
            "sequences": self.sequences,
            "retain": self.retain,
            "object_anchors": self.object_anchors,
            "protocol": self.protocol,
        }


@lru_cache(maxsize=1)
def load_world() -> World:
    """Load the packaged world definition."""
    data = json.loads(resources.files("cu_cli.world").joinpath("minicanvas.json").read_text())
    return World(
        objects=tuple(data["objects"]),
        textures=tuple(data["textures"]),
        palettes=data["palettes"],
        image_size=int(data["image_size"]),
        caption_template=data["caption_template"],
        anchor_only_template=data["anchor_only_template"],
        sequences=data["sequences"],
        retain=data["retain"],
        object_anchors=data["object_anchors"],
        protocol=data["protocol"],
    )


# ---------------------------------------------------------------- shapes (unit square [-1, 1]^2)

def _regular(n: int, r: float = 1.0, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * i / n), r * math.sin(phase + 2 * math.pi * i / n))
            for i in range(n)]


def _star() -> list[tuple[float, float]]:
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * i / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


# Each shape: list of (op, kind, geometry); op "+" paints, "-" erases; kind "poly" or "ellipse".
SHAPES: dict[str, list[tuple[str, str, object]]] = {
    "circle": [("+", "ellipse", (-0.9, -0.9, 0.9, 0.9))],
    "square": [("+", "poly", [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)])],
    "triangle": [("+", "poly", [(0.0, -0.95), (0.95, 0.8), (-0.95, 0.8)])],
    "star": [("+", "poly", _star())],
    "hexagon": [("+", "poly", _regular(6, 0.95, 0.0))],
    "diamond": [("+", "poly", [(0.0, -1.0), (0.7, 0.0), (0.0, 1.0), (-0.7, 0.0)])],
    "cross": [("+", "poly", [(-0.3, -0.95), (0.3, -0.95), (0.3, -0.3), (0.95, -0.3), (0.95, 0.3),
                             (0.3, 0.3), (0.3, 0.95), (-0.3, 0.95), (-0.3, 0.3), (-0.95, 0.3),
                             (-0.95, -0.3), (-0.3, -0.3)])],
    "ring": [("+", "ellipse", (-0.95, -0.95, 0.95, 0.95)), ("-", "ellipse", (-0.5, -0.5, 0.5, 0.5))],
    "moon": [("+", "ellipse", (-0.9, -0.9, 0.9, 0.9)), ("-", "ellipse", (-0.35, -1.0, 1.25, 0.6))],
    "heart": [("+", "ellipse", (-0.95, -0.75, 0.05, 0.25)), ("+", "ellipse", (-0.05, -0.75, 0.95, 0.25)),
              ("+", "poly", [(-0.92, -0.1), (0.92, -0.1), (0.0, 0.95)])],
    "arrow": [("+", "poly", [(-0.95, -0.25), (0.1, -0.25), (0.1, -0.7), (0.95, 0.0), (0.1, 0.7),
                             (0.1, 0.25), (-0.95, 0.25)])],
    "bolt": [("+", "poly", [(0.15, -1.0), (-0.6, 0.1), (-0.05, 0.1), (-0.2, 1.0), (0.6, -0.2),
                            (0.05, -0.2)])],
    "house": [("+", "poly", [(0.0, -0.95), (0.9, -0.1), (-0.9, -0.1)]),
              ("+", "poly", [(-0.65, -0.15), (0.65, -0.15), (0.65, 0.9), (-0.65, 0.9)]),
              ("-", "poly", [(-0.18, 0.35), (0.18, 0.35), (0.18, 0.9), (-0.18, 0.9)])],
    "tree": [("+", "poly", [(0.0, -1.0), (0.75, 0.45), (-0.75, 0.45)]),
             ("+", "poly", [(-0.17, 0.4), (0.17, 0.4), (0.17, 1.0), (-0.17, 1.0)])],
    "flower": [("+", "ellipse", (cx - 0.38, cy - 0.38, cx + 0.38, cy + 0.38))
               for cx, cy in _regular(5, 0.55)] + [("-", "ellipse", (-0.2, -0.2, 0.2, 0.2))],
    "fish": [("+", "ellipse", (-0.75, -0.5, 0.55, 0.5)),
             ("+", "poly", [(0.35, 0.0), (0.98, -0.6), (0.98, 0.6)]),
             ("-", "ellipse", (-0.55, -0.2, -0.35, 0.0))],
}


def _shape_mask(name: str, size: int, cx: float, cy: float, scale: float, angle: float) -> np.ndarray:
    """Anti-aliased float mask in [0, 1] of one object at the given pose."""
    big = size * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    half = big * scale / 2
    ca, sa = math.cos(angle), math.sin(angle)

    def tf(x: float, y: float) -> tuple[float, float]:
        return (cx * big + half * (x * ca - y * sa), cy * big + half * (x * sa + y * ca))

    for op, kind, geom in SHAPES[name]:
        fill = 255 if op == "+" else 0
        if kind == "poly":
            draw.polygon([tf(x, y) for x, y in geom], fill=fill)
        else:  # ellipse: rotate its centre only (axis-aligned ellipses are nearly rotation-free here)
            x0, y0, x1, y1 = geom
            ex, ey = tf((x0 + x1) / 2, (y0 + y1) / 2)
            rx, ry = half * (x1 - x0) / 2, half * (y1 - y0) / 2
            draw.ellipse((ex - rx, ey - ry, ex + rx, ey + ry), fill=fill)
    img = img.resize((size, size), Image.BOX)
    return np.asarray(img, dtype=np.float32) / 255.0


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Weight map in [0, 1] mixing bg1 (0) and bg2 (1)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = rng.uniform(0, 8)
    if name == "stripes":  # horizontal bands, period 8 px
        return (np.floor((yy + phase) / 4) % 2).astype(np.float32)
    if name == "checks":  # 8 px checkerboard
        ph2 = rng.uniform(0, 8)
        return ((np.floor((yy + phase) / 8) + np.floor((xx + ph2) / 8)) % 2).astype(np.float32)
    if name == "dots":  # dots of radius ~2.2 px on an 8 px lattice
        ph2 = rng.uniform(0, 8)
        dy = (yy + phase) % 8 - 4
        dx = (xx + ph2) % 8 - 4
        return np.clip(2.7 - np.sqrt(dx * dx + dy * dy), 0, 1).astype(np.float32)
    if name == "fade":  # smooth diagonal gradient
        t = (xx + yy) / (2 * (size - 1))
        return (t if rng.random() < 0.5 else 1 - t).astype(np.float32)
    raise KeyError(name)


def render(obj: str, style: str, rng: np.random.Generator, world: World | None = None) -> np.ndarray:
    """Render one ``size x size x 3`` uint8 image of ``obj`` in ``style`` (pose/colour jittered)."""
    world = world or load_world()
    size = world.image_size
    palette_name, texture = style.split(" ", 1)
    pal = world.palettes[palette_name]
    jitter = lambda c: np.clip(np.asarray(c, np.float32) + rng.uniform(-14, 14, 3), 0, 255)  # noqa: E731
    bg1, bg2, fg = jitter(pal["bg1"]), jitter(pal["bg2"]), jitter(pal["fg"])
    w = _texture(texture, size, rng)[..., None]
    background = bg1 * (1 - w) + bg2 * w
    mask = _shape_mask(obj, size, cx=0.5 + rng.uniform(-0.08, 0.08), cy=0.5 + rng.uniform(-0.08, 0.08),
                       scale=rng.uniform(0.62, 0.78), angle=rng.uniform(-0.25, 0.25))[..., None]
    img = background * (1 - mask) + fg * mask
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_dataset(n_per_pair: int, seed: int, world: World | None = None):
    """All (object, style) pairs, ``n_per_pair`` renders each.

    Returns ``(images uint8 [N,32,32,3], object_idx [N], style_idx [N])`` in a fixed order.
    """
    world = world or load_world()
    rng = np.random.default_rng(seed)
    styles = world.styles
    imgs, o_idx, s_idx = [], [], []
    for oi, obj in enumerate(world.objects):
        for si, style in enumerate(styles):
            for _ in range(n_per_pair):
                imgs.append(render(obj, style, rng, world))
                o_idx.append(oi)
                s_idx.append(si)
    return np.stack(imgs), np.asarray(o_idx, np.int64), np.asarray(s_idx, np.int64)
