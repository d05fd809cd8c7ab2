"""Write docs/minicanvas.md from the shipped training report (cu_cli/assets/minicanvas/report.json).

    python tools/minicanvas_doc.py
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _text_code(r: dict, cfg: dict) -> list[str]:
    tc = r.get("text_code")
    if not tc:
        return []
    f = [v["eos_and_padding"] for v in tc.values()]
    a = [v["all_positions"] for v in tc.values()]
    return [
        "## Text code of the composed style names\n",
        "Share of the style-dependent variance of a caption's token states that a palette + texture "
        "(additive) model does not explain, mean over the captions of "
        + ", ".join(tc) + f": **{100 * sum(f) / len(f):.0f} %** at the EOS and padding positions, "
        f"{100 * sum(a) / len(a):.0f} % over all positions (the prefix up to the first style "
        "word is identical in every style that shares that word: the encoder is causal). v1 of "
        "this base (jointly trained encoder, no style-code loss) was 3 % / 4 %: so additive that no linear K/V edit could "
        "remove one style without moving its word-sharing neighbours half as much. The style-code "
        f"loss (weight {cfg.get('style_code_weight', 0):g}, CosFace margin "
        f"{cfg.get('style_code_margin', 0):g}, cu_cli/minicanvas/style_code.py) gives each style a "
        "holistic component, as CLIP has for named styles (a pure one-hot style code would be "
        "53 %); the shared words still make neighbours similar at the word positions.\n",
    ]


def main() -> None:
    sys.path.insert(0, ROOT)
    from cu_cli.world.minicanvas import load_world

    w = load_world()
    with open(os.path.join(ROOT, "cu_cli", "assets", "minicanvas", "report.json")) as f:
        r = json.load(f)
    cfg, s = r["config"], r["samples"]
    size = sum(os.path.getsize(os.path.join(dp, fn))
               for dp, _, fns in os.walk(os.path.join(ROOT, "cu_cli", "assets", "minicanvas"))
               for fn in fns)
    lines = [
        "# MiniCanvas: the built-in world and pipeline\n",
        "A miniature of UnlearnCanvas (arXiv 2402.11846): every image is one object drawn in one "
        f"style, {w.image_size}×{w.image_size} RGB, captioned `{w.caption_template}`. "
        f"{len(w.objects)} objects (filled silhouettes) × {len(w.styles)} styles. A style is "
        "`<palette> <texture>` — palettes " + ", ".join(w.palettes) + "; textures "
        + ", ".join(w.textures) + " — so every style shares a word with 6 others and their text "
        "embeddings form neighbourhoods, as real artistic styles do.\n",
        "Protocol data (`cu inspect minicanvas --json`): erase orders `sequences.style` / "
        "`sequences.object` (12 each), retain sets `retain.style` / `retain.object` (4 each), and an "
        "anchor (a retained object) for every erasable object.\n",
        "## Pipeline\n",
        "Stable Diffusion v1 topology from diffusers/transformers classes, saved as a standard "
        "diffusers folder (`cu_cli/assets/minicanvas/pipeline`, loadable with "
        "`StableDiffusionPipeline.from_pretrained`): AutoencoderKL 32×32 → 4×8×8 latents, a "
        "2-layer CLIPTextModel (width 64) with a CLIPTokenizer built in code over the world's words, "
        "UNet2DConditionModel (channels 32/64/128, cross-attention dim 64), SD's DDPM schedule "
        "(scaled_linear 0.00085→0.012). Sampling: DDIM 25 steps, CFG 7.5. Object and style "
        f"classifiers: small CNNs. Shipped size {size / 1e6:.1f} MB (fp32).\n",
        "## Training (`python -m cu_cli.minicanvas.train --work DIR --out cu_cli/assets/minicanvas`)\n",
        f"Seed {cfg['seed']}; {r['data']['train_images']} rendered training images "
        f"({cfg['n_per_pair']} per pair), {r['data']['heldout_images']} held out. Classifiers "
        f"{cfg['clf_steps']} steps; VAE {cfg['vae_steps']} steps; UNet + text encoder "
        f"{r['unet']['steps']} steps at batch {cfg['unet_batch']} (AdamW {cfg['unet_lr']:g}, "
        "constant then cosine over the last third, Min-SNR-5 weighting, "
        f"{100 * cfg['caption_dropout']:.0f} % empty captions, "
        f"{100 * cfg.get('style_dropout', 0):.0f} % object-only captions from step "
        f"{cfg.get('style_dropout_start', 0)}, EMA {cfg['ema_decay']}) in "
        f"{r['unet']['seconds'] / 60:.0f} min on 2 CPU cores. "
        f"Weights shipped: {r['chosen_weights']}.\n",
        *(["History of the shipped run:\n", *[f"- {h}" for h in r.get("history", [])], ""]
          if r.get("history") else []),
        *_text_code(r, cfg),
        "| check | object | style |", "|---|---|---|",
        f"| classifiers, held-out renders | {r['object_classifier']['heldout_accuracy']:.2f} % | "
        f"{r['style_classifier']['heldout_accuracy']:.2f} % |",
        f"| classifiers on VAE reconstructions | {r['vae']['recon_object_accuracy']:.2f} % | "
        f"{r['vae']['recon_style_accuracy']:.2f} % |",
        f"| classifiers on sampled images (raw weights, {r['samples_raw']['images']} images) | "
        f"{r['samples_raw']['object']['mean']:.1f} % | {r['samples_raw']['style']['mean']:.1f} % |",
        f"| classifiers on sampled images (EMA weights) | {r['samples_ema']['object']['mean']:.1f} % | "
        f"{r['samples_ema']['style']['mean']:.1f} % |",
        f"| **shipped ({r['chosen_weights']}), min over concepts** | "
        f"**{s['object']['min']:.1f} %** | **{s['style']['min']:.1f} %** |",
        "\nSamples: every (object, style) pair, "
        f"{cfg['eval_per_pair']} seeds each, DDIM {cfg['eval_steps']}, CFG {cfg['eval_guidance']}; "
        f"{s['images_per_second']:.1f} images/s while sampling.\n",
        "## Per-concept accuracy on sampled images (shipped weights)\n",
        "| object | acc % | | style | acc % |", "|---|---|---|---|---|",
    ]
    objs = list(s["object"]["per_concept"].items())
    sty = list(s["style"]["per_concept"].items())
    for (o, a), (st, b) in zip(objs, sty):
        lines.append(f"| {o} | {a:.1f} | | {st} | {b:.1f} |")
    lines.append("\nLoss curve (mean per 100 steps): "
                 + ", ".join(f"{v:.3f}" for v in r["unet"]["loss_curve"][::5]) + "\n")
    with open(os.path.join(ROOT, "docs", "minicanvas.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
