"""UA on a larger sample than the protocol's 40 images per style (used in docs/erase.md).

    python benchmarks/ua_sample.py N "STYLE=STATE.safetensors" ["STYLE=STATE" ...]

For each state: "a O in STYLE style" for all 16 MiniCanvas objects × N seeds (1000…, not the
protocol's), sampled like `cu eval` (DDIM 25, CFG 7.5) and scored by the MiniCanvas style
classifier; UA = 100 − % still classified as STYLE.
"""

from __future__ import annotations

import sys

import torch

from cu_cli._util.seed import derive_seed
from cu_cli.ckpt.format import load_tensors
from cu_cli.evaluate.protocols import get_protocol
from cu_cli.models.apply import apply_state, read_state
from cu_cli.models.base import base_for_states
from cu_cli.models.classifiers import load_image_classifier
from cu_cli.world.minicanvas import load_world


def main(argv: list[str]) -> None:
    torch.set_grad_enabled(False)
    nseeds = int(argv[0])
    pairs = [a.split("=", 1) for a in argv[1:]]
    w, proto = load_world(), get_protocol("minicanvas-style", "benchmark")
    pipe = base_for_states([pairs[0][1]], None, None).load_pipeline("cpu")
    clf = load_image_classifier("minicanvas", "style", list(proto.styles), "cpu")
    keys = sorted({k for _, path in pairs for k in load_tensors(path)})
    ref = read_state(pipe, keys)
    for style, path in pairs:
        apply_state(pipe, ref, source="base")
        apply_state(pipe, load_tensors(path), source=path)
        prompts = [proto.prompt(style, o) for o in w.objects for _ in range(nseeds)]
        seeds = [derive_seed(1000 + s, proto.prompt(style, o)) for o in w.objects
                 for s in range(nseeds)]
        imgs = pipe.sample(prompts, seeds, steps=proto.steps, guidance=proto.guidance,
                           batch_size=128)
        left = sum(clf.classes[i] == style for i in clf.predict(imgs))
        print(f"{path}\t{style}\tUA {100 - 100 * left / len(prompts):.1f}\t"
              f"({left}/{len(prompts)} still {style})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
