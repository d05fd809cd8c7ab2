"""cu vs plain diffusers on random-weight SD1.5- and SDXL-topology pipelines: one erase step and a
50-step sample, with peak memory (issue 17; docs/benchmarks.md "GPU").

    python benchmarks/gpu.py                       # GPU: SD1.5 at 512², SDXL at 1024², bf16
    python benchmarks/gpu.py --device cpu --width 40 --resolution 64 --steps 4   # reduced, CPU

``--width D`` divides every channel width by D (1 = the true topology: SD1.5 UNet 859.5 M
parameters, SDXL 2.57 G). For each topology a random-weight pipeline is saved to a temporary
folder, then

- **erase step**: cu's ConAbl step (``erase.run.prepare`` on that folder, then
  ``engine.update(objective.loss(...))``: a no-grad anchor forward and a trained forward+backward
  at ``--batch``, AdamW on the kv-xattn group) vs the same work written directly against diffusers
  (``unet(...)`` twice, MSE, backward, ``torch.optim.AdamW``), both under the same dtype/autocast;
- **sample**: ``Pipeline.sample`` (cu's DDIM + CFG) vs ``StableDiffusion[XL]Pipeline.__call__``
  with a DDIM scheduler, ``--sample-steps`` steps, one image.

Prints a table (median of ``--repeat`` timings after one warm-up) with the ratio cu / plain and the
peak memory: ``torch.cuda.max_memory_allocated`` per phase on a GPU, the process's peak RSS on a
CPU (monotone: it reports the largest phase so far). ``--json`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _w(c: int, width: int) -> int:
    return max(8, (c // width) // 8 * 8)


def components(family: str, width: int, resolution: int):
    """Random-weight components of the SD1.5 or SDXL topology, channels divided by ``width``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from cu_cli.models.minicanvas_arch import build_tokenizer

    tok = build_tokenizer(list("abcdefghijklmnopqrstuvwxyz") + ["cat", "dog", "photo", "of", "a"])
    tok.model_max_length = 77
    full = width == 1

    def clip(hidden, layers, heads, proj=None):
        cfg = CLIPTextConfig(vocab_size=49408 if full else len(tok) + 8, hidden_size=hidden,
                             intermediate_size=4 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, max_position_embeddings=77,
                             bos_token_id=0, eos_token_id=1, pad_token_id=1,
                             **({"projection_dim": proj} if proj else {}))
        return (CLIPTextModelWithProjection if proj else CLIPTextModel)(cfg)

    torch.manual_seed(0)
    te_dim = _w(768, width)
    te = clip(te_dim, 12 if full else 2, max(1, te_dim // 64))
    vae_ch = [_w(c, width) for c in (128, 256, 512, 512)]
    extra, te2_dim = {}, 0
    if family == "sdxl":
        te2_dim = _w(1280, width)
        te2 = clip(te2_dim, 32 if full else 2, max(1, te2_dim // 64), proj=te2_dim)
        extra = dict(text_encoder_2=te2, tokenizer_2=tok)
        ch = [_w(c, width) for c in (320, 640, 1280)]
        heads = [max(1, c // 64) for c in ch]
        time_dim = 256 if full else 8
        unet = UNet2DConditionModel(
            sample_size=resolution // 8, block_out_channels=ch, layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10) if full else (1, 1, 2),
            attention_head_dim=heads, cross_attention_dim=te_dim + te2_dim,
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=time_dim,
            projection_class_embeddings_input_dim=te2_dim + 6 * time_dim,
            norm_num_groups=min(32, ch[0] // 2))
    else:
        ch = [_w(c, width) for c in (320, 640, 1280, 1280)]
        unet = UNet2DConditionModel(
            sample_size=resolution // 8, block_out_channels=ch, layers_per_block=2,
            cross_attention_dim=te_dim, attention_head_dim=8 if full else 2,
            norm_num_groups=min(32, ch[0] // 2))
    vae = AutoencoderKL(block_out_channels=vae_ch, latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=min(32, vae_ch[0] // 2), sample_size=resolution)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return dict(unet=unet, vae=vae, text_encoder=te, tokenizer=tok, scheduler=sched, **extra)


def save(family: str, folder: str, width: int, resolution: int) -> dict:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    c = components(family, width, resolution)
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(**c)
    else:
        pipe = StableDiffusionPipeline(**c, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return {"unet_params": sum(p.numel() for p in c["unet"].parameters())}


class Meter:
    def __init__(self, device: str):
        import torch

        self.torch, self.cuda = torch, device.startswith("cuda")

    def reset(self):
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def peak_gb(self) -> float:
        if self.cuda:
            return round(self.torch.cuda.max_memory_allocated() / 2**30, 2)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def timed(fn, meter: Meter, repeat: int) -> tuple[float, float]:
    """(median seconds after one warm-up call, peak GB)."""
    meter.reset()
    fn()
    meter.sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        meter.sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), meter.peak_gb()


def bench_erase(folder: str, args, meter: Meter) -> dict:
    import torch

    from cu_cli.erase.options import EraseConfig
    from cu_cli.erase.plan import EraseRequest, plan_erase
    from cu_cli.erase.run import prepare

    cfg = EraseConfig(kind="object", anchor="dog", steps=10**6, batch=args.batch,
                      anchor_images=args.batch, anchor_steps=1, anchor_guidance=6.0)
    plan = plan_erase(EraseRequest(concepts=["cat"], out=os.path.join(folder, "o.safetensors"),
                                   base=folder, cfg=cfg, seed=0, device=args.device,
                                   dtype=args.dtype))
    with torch.enable_grad():
        work = prepare(plan)
        ctx, obj, engine = work.ctx, work.objective, work.engine
        ctx.unet.train()
        cu_s, cu_gb = timed(lambda: engine.update(obj.loss(ctx, 0)), meter, args.repeat)
        for h in work.hooks:
            h.remove()
        # the same work, written directly against diffusers
        pipe = ctx.pipe
        params = list(ctx.trainable.values())
        opt = torch.optim.AdamW(params, lr=1e-5)
        c_t, c_a = ctx.cond(["a photo of a cat"] * args.batch), ctx.cond(["a photo of a dog"]
                                                                          * args.batch)
        kw_t, kw_a = pipe.adapter.unet_kwargs(c_t), pipe.adapter.unet_kwargs(c_a)
        z = torch.randn((args.batch,) + pipe.latent_shape, device=pipe.device)
        t = torch.randint(0, 1000, (args.batch,), device=pipe.device)

        def plain():
            with pipe.autocast():
                with torch.no_grad():
                    target = pipe.unet(z, t, **kw_a).sample
                out = pipe.unet(z, t, **kw_t).sample
            loss = torch.nn.functional.mse_loss(out.float(), target.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        plain_s, plain_gb = timed(plain, meter, args.repeat)
        ctx.unet.eval()
    del work, ctx, obj, engine, opt
    return {"cu_s": cu_s, "plain_s": plain_s, "cu_peak_gb": cu_gb, "plain_peak_gb": plain_gb}


def bench_sample(folder: str, family: str, args, meter: Meter) -> dict:
    import diffusers
    import torch

    from cu_cli.models.base import resolve_base
    from cu_cli.models.families import get_family
    from cu_cli.models.precision import torch_dtype

    base = resolve_base(folder)
    pipe = base.load_pipeline(args.device, args.dtype)
    cu_s, cu_gb = timed(lambda: pipe.sample(["a photo of a cat"], [0], steps=args.sample_steps,
                                            guidance=7.5), meter, args.repeat)
    base._pipeline = None
    del pipe
    fam = get_family(family)
    ref = getattr(diffusers, fam.pipeline_class).from_pretrained(
        folder, local_files_only=True, dtype=torch_dtype(args.dtype), **fam.load_kwargs())
    ref.set_progress_bar_config(disable=True)
    ref = ref.to(args.device)
    plain_s, plain_gb = timed(lambda: ref("a photo of a cat", num_inference_steps=args.sample_steps,
                                          guidance_scale=7.5, output_type="np",
                                          generator=torch.Generator().manual_seed(0)),
                              meter, args.repeat)
    return {"cu_s": cu_s, "plain_s": plain_s, "cu_peak_gb": cu_gb, "plain_peak_gb": plain_gb}


def main(argv=None) -> dict:
    import torch

    from cu_cli.models.base import quiet_libraries
    from cu_cli.models.precision import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None, help="default: bf16 on a GPU, fp32 on a CPU")
    ap.add_argument("--width", type=int, default=None, help="channel divisor (1 = true size; "
                    "default 1 on a GPU, 40 on a CPU)")
    ap.add_argument("--resolution", type=int, default=None,
                    help="pixels (default: 512 SD1.5 / 1024 SDXL on a GPU, 64 on a CPU)")
    ap.add_argument("--families", default="sd1,sdxl")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--sample-steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    args.device = resolve_device(args.device)
    gpu = args.device != "cpu"
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    width = args.width or (1 if gpu else 40)
    quiet_libraries()
    torch.manual_seed(0)
    meter = Meter(args.device)
    rows = []
    for family in args.families.split(","):
        res = args.resolution or ((1024 if family == "sdxl" else 512) if gpu else 64)
        with tempfile.TemporaryDirectory(prefix=f"cu-bench-{family}-") as d:
            info = save(family, d, width, res)
            for phase, fn in (("erase step", lambda: bench_erase(d, args, meter)),
                              (f"sample {args.sample_steps} steps",
                               lambda: bench_sample(d, family, args, meter))):
                r = fn()
                rows.append({"family": family, "phase": phase, "resolution": res,
                             "width_divisor": width, "unet_params": info["unet_params"],
                             "dtype": args.dtype, "device": args.device, "batch": args.batch,
                             **{k: round(v, 4) for k, v in r.items()},
                             "ratio": round(r["cu_s"] / r["plain_s"], 3)})
    out = {"device": args.device, "torch": torch.__version__, "rows": rows,
           "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None}
    if args.json:
        print(json.dumps(out))
    else:
        mem = "peak GPU GB" if args.device.startswith("cuda") else "peak RSS GB (process)"
        print(f"| family | phase | px | UNet params | dtype | cu s | plain s | cu/plain | {mem} "
              "cu / plain |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['family']} | {r['phase']} | {r['resolution']} | "
                  f"{r['unet_params'] / 1e6:.1f} M | {r['dtype']} | {r['cu_s']:.3f} | "
                  f"{r['plain_s']:.3f} | {r['ratio']:.2f}x | {r['cu_peak_gb']} / "
                  f"{r['plain_peak_gb']} |")
    return out


if __name__ == "__main__":
    main()
