"""How compositional are MiniCanvas's style names in the text encoder? (docs/results.md, #19)

    python tools/style_additivity.py [--base minicanvas] [--json OUT]

A style is "palette texture" (4 × 4). Cross-attention K/V are linear in each token state h, so if
the states were additive, h(p, t) = a_p + b_t, then every K/V edit that sends the 12 erased styles
of a Latin-square protocol to one erased rendering would send the 4 held-out styles there too:
h(p', t') = h(p', t) + h(p, t') − h(p, t) for any erased p×t, p'×t and p×t'. What a K/V edit can
keep of a held-out style is therefore bounded by the *interaction* part of its states,

    I(p, t) = h(p, t) − mean_t h(p, ·) − mean_p h(·, t) + mean h(·, ·)   (two-way ANOVA residual),

per token position (the style's second word, "style", EOS) and object. This prints, per style,
‖I‖ / ‖h − mean h‖ (the share of the style signal that is not palette + texture), averaged over
the 16 objects, and the same share for a second template the study never uses. It reads only the
base's text encoder and the world's vocabulary — no protocol, image or classifier.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TEMPLATES = ("a {object} in {style} style", "{style} picture of a {object}")


def interaction_share(hidden, n_pal: int, n_tex: int):
    """hidden: [n_pal, n_tex, D] (one position, one object) → [n_pal, n_tex] share ‖I‖/‖h − h̄‖."""
    grand = hidden.mean((0, 1), keepdim=True)
    row = hidden.mean(1, keepdim=True)
    col = hidden.mean(0, keepdim=True)
    inter = hidden - row - col + grand
    return inter.norm(dim=-1) / (hidden - grand).norm(dim=-1).clamp_min(1e-12)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="minicanvas")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from cu_cli.models.base import resolve_base
    from cu_cli.world.registry import get_world

    world = get_world("minicanvas")
    palettes, textures = list(world.palettes), list(world.textures)
    pipe = resolve_base(args.base).load_pipeline()
    out = {"base": args.base, "templates": {}}
    for template in TEMPLATES:
        rows = {}
        for obj in world.objects:
            prompts = [template.format(object=obj, style=f"{p} {t}")
                       for p in palettes for t in textures]
            ids = pipe.tokenize(prompts)
            with torch.no_grad():
                h = pipe.encode_text(prompts).float()  # [16, L, D]
            eos_id = pipe.tokenizer.eos_token_id
            # positions: the texture word (last word of the style), "style"/next word, EOS
            tex_id = [pipe.tokenizer(t, add_special_tokens=False).input_ids[-1] for t in textures]
            pos = {}
            for k, row in enumerate(ids.tolist()):
                t = textures[k % len(textures)]
                tpos = row.index(tex_id[textures.index(t)])
                epos = row.index(eos_id)
                pos[k] = {"texture word": tpos, "next word": tpos + 1, "EOS": epos}
            for name in ("texture word", "next word", "EOS"):
                hs = torch.stack([h[k, pos[k][name]] for k in range(len(prompts))])
                share = interaction_share(hs.view(len(palettes), len(textures), -1),
                                          len(palettes), len(textures))
                rows.setdefault(name, []).append(share)
        table = {}
        for name, shares in rows.items():
            s = torch.stack(shares).mean(0)  # over objects
            table[name] = {f"{p} {t}": round(float(s[i, j]), 3)
                           for i, p in enumerate(palettes) for j, t in enumerate(textures)}
            table[name]["mean"] = round(float(s.mean()), 3)
        out["templates"][template] = table
        print(f"template {template!r}: interaction share ‖I‖/‖h − h̄‖, mean over objects")
        for name, tab in table.items():
            print(f"  {name:12s} mean {tab['mean']:.3f}  min {min(v for k, v in tab.items() if k != 'mean'):.3f}"
                  f"  max {max(v for k, v in tab.items() if k != 'mean'):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
