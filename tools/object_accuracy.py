"""Object-classifier accuracy of a MiniCanvas state (or the base) on captions of your choice.

    python tools/object_accuracy.py [--state STATE] [--styles "neon stripes,ocean dots"]
                                    [--objects circle,tree] [--n 20] [--seed0 1000]

Samples "a {object} in {style} style" (or the anchor caption "a {object}" with no --styles) with
the protocol's steps and guidance on seeds seed0 … seed0+n−1 — not the protocol's seeds — and
prints each caption's object accuracy and the classes it is mistaken for. A diagnostic for
docs/erase.md ("Where it falls short"): what a style chain does to the objects drawn in erased
styles, and how well the base draws an anchor caption.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import Counter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state")
    ap.add_argument("--styles", default="")
    ap.add_argument("--objects", default="circle,square,house,tree")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed0", type=int, default=1000)
    a = ap.parse_args()

    from cu_cli.ckpt.format import load_tensors
    from cu_cli.evaluate.protocols import get_protocol
    from cu_cli.models.base import resolve_base
    from cu_cli.models.classifiers import load_image_classifier
    from cu_cli.models.session import ModelSession
    from cu_cli.world.registry import get_world

    proto = get_protocol("minicanvas-style", None)
    world = get_world("minicanvas")
    session = ModelSession(resolve_base("minicanvas"), "cpu", "fp32")
    clf = load_image_classifier(proto.classifier, "object", list(proto.objects), "cpu")
    styles = [s.strip() for s in a.styles.split(",") if s.strip()] or [None]
    seeds = list(range(a.seed0, a.seed0 + a.n))
    block = (session.state(load_tensors(a.state), source=a.state) if a.state
             else contextlib.nullcontext())
    with block:
        for style in styles:
            for obj in a.objects.split(","):
                prompt = world.caption(obj, style)
                imgs = session.pipe.sample([prompt] * a.n, seeds, steps=proto.steps,
                                           guidance=proto.guidance, batch_size=a.n)
                pred = Counter(clf.classes[i] for i in clf.predict(imgs))
                print(f"{prompt:<36} {100 * pred[obj] / a.n:5.1f} %  {pred.most_common(3)}")


if __name__ == "__main__":
    main()
