"""MiniCanvas training recipe: world -> classifiers -> VAE -> text encoder + UNet -> report.

Every stage is deterministic from ``seed``, writes its result into ``work_dir`` and is skipped when
that result exists, and the long UNet stage checkpoints every ``ckpt_every`` steps, so an
interrupted run resumes where it stopped (``python -m cu_cli.minicanvas.train --work DIR``).

Diffusion training follows DDPM (Ho et al., arXiv 2006.11239) with epsilon prediction on VAE latents
as in Latent Diffusion (Rombach et al., CVPR 2022), caption dropout for classifier-free guidance
(Ho & Salimans, arXiv 2207.12598) and Min-SNR-gamma loss weighting (Hang et al., arXiv 2303.09556),
which speeds convergence of small models markedly. The text encoder is trained jointly; with
``style_code_weight`` > 0 an auxiliary loss makes its code for the composed style names holistic
(style_code.py), as CLIP's is for named styles.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cu_cli.world.minicanvas import load_world, render_dataset
from cu_cli.minicanvas.style_code import StyleCodeHead, nonadditive_fraction, style_code_loss
from cu_cli.models.classifier import SmallCNN, load_classifier, save_classifier


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0  # seeds rendering, initialisation, batches and noise
    n_per_pair: int = 40  # renders per (object, style) pair for the training set
    n_holdout_per_pair: int = 4  # held-out renders per pair (classifier accuracy)
    clf_steps: int = 1200  # classifier steps, batch 128, Adam 2e-3 -> cosine
    vae_steps: int = 2000  # VAE steps, batch 32, Adam 1e-3 -> cosine
    vae_kl: float = 1e-6  # KL weight (SD's VAE is nearly deterministic)
    unet_steps: int = 6000  # UNet + text encoder steps, batch 128
    unet_batch: int = 128
    unet_lr: float = 3e-4  # constant for 2/3, cosine to 10 % over the last third
    caption_dropout: float = 0.1  # probability of an empty caption (CFG)
    style_dropout: float = 0.1  # probability of the object-only caption "a {object}", so that
    # style-free prompts are in distribution (SD knows unstyled images; ConAbl's style anchor)
    style_dropout_start: int = 0  # first step using it (the shipped run: see docs/minicanvas.md)
    min_snr_gamma: float = 5.0
    object_weight: str = ""  # sampling-weight multipliers, e.g. "hexagon=4" (shipped fine-tune)
    style_code_weight: float = 0.0  # weight of the holistic style-code loss (style_code.py)
    style_code_margin: float = 0.0  # its CosFace margin (0: v2's plain normalised softmax)
    ema_decay: float = 0.995  # fast EMA: a slow one trails raw weights on short runs
    ckpt_every: int = 200
    eval_per_pair: int = 2  # sampled images per pair for the report
    eval_steps: int = 25
    eval_guidance: float = 7.5
    threads: int = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _to_tensor(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255.0


def _cosine(step: int, total: int, base: float, floor: float = 0.05) -> float:
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / total)))


def _atomic_torch_save(obj, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- stages

def stage_data(work: str, cfg: TrainConfig) -> dict:
    path = os.path.join(work, "data.npz")
    if not os.path.exists(path):
        t = time.time()
        x, o, s = render_dataset(cfg.n_per_pair, cfg.seed)
        xh, oh, sh = render_dataset(cfg.n_holdout_per_pair, cfg.seed + 10_000)
        np.savez(path + ".tmp.npz", x=x, o=o, s=s, xh=xh, oh=oh, sh=sh)
        os.replace(path + ".tmp.npz", path)
        log(f"data: rendered {len(x)} train + {len(xh)} held-out images in {time.time() - t:.1f}s")
    d = np.load(path)
    return {k: d[k] for k in d.files}


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Noise and blur so classifiers judge generated images as they judge renders."""
    b = x.shape[0]
    sigma = torch.rand(b, 1, 1, 1, generator=g) * 0.08
    x = x + sigma * torch.randn(x.shape, generator=g)
    blur = torch.rand(b, generator=g) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :]) / 16
        w = k.expand(3, 1, 3, 3)
        x[blur] = F.conv2d(F.pad(x[blur], (1, 1, 1, 1), mode="replicate"), w, groups=3)
    return x.clamp(0, 1)


def stage_classifier(work: str, cfg: TrainConfig, data: dict, kind: str) -> dict:
    world = load_world()
    classes = list(world.objects) if kind == "object" else list(world.styles)
    path = os.path.join(work, f"{kind}_classifier.safetensors")
    ykey = "o" if kind == "object" else "s"
    if not os.path.exists(path):
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed + (1 if kind == "object" else 2))
        torch.manual_seed(cfg.seed + 3)
        model = SmallCNN(len(classes))
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        x, y = _to_tensor(data["x"]), torch.from_numpy(data[ykey])
        model.train()
        for step in range(cfg.clf_steps):
            for grp in opt.param_groups:
                grp["lr"] = _cosine(step, cfg.clf_steps, 2e-3, 0.01)
            idx = torch.randint(0, len(x), (128,), generator=g)
            loss = F.cross_entropy(model(_augment(x[idx].clone(), g)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 200 == 0:
                log(f"{kind} classifier step {step}/{cfg.clf_steps} loss {loss.item():.4f}")
        model.eval()
        save_classifier(model, classes, path)
        log(f"{kind} classifier trained in {time.time() - t0:.0f}s")
    model, _ = load_classifier(path)
    acc = _accuracy(model, _to_tensor(data["xh"]), torch.from_numpy(data[ykey + "h"]))
    log(f"{kind} classifier held-out accuracy {acc:.2f}%")
    return {"heldout_accuracy": acc}


@torch.no_grad()
def _predict(model, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(x[i:i + 512]).argmax(1) for i in range(0, len(x), 512)])


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (_predict(model, x) == y).float().mean().item()


def stage_vae(work: str, cfg: TrainConfig, data: dict, comps: dict) -> dict:
    path = os.path.join(work, "vae.pt")
    vae = comps["vae"]
    if not os.path.exists(path):
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed + 4)
        opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
        x = _to_tensor(data["x"]) * 2 - 1
        vae.train()
        for step in range(cfg.vae_steps):
            for grp in opt.param_groups:
                grp["lr"] = _cosine(step, cfg.vae_steps, 1e-3, 0.02)
            xb = x[torch.randint(0, len(x), (32,), generator=g)]
            post = vae.encode(xb).latent_dist
            rec = vae.decode(post.sample(generator=g)).sample
            loss = F.mse_loss(rec, xb) + 0.5 * F.l1_loss(rec, xb) + cfg.vae_kl * post.kl().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 250 == 0:
                log(f"vae step {step}/{cfg.vae_steps} loss {loss.item():.5f}")
        vae.eval()
        # SD convention: scale latents to unit variance (SD1 uses 0.18215 for its VAE).
        with torch.no_grad():
            z = torch.cat([vae.encode(x[i:i + 512]).latent_dist.mean for i in range(0, min(len(x), 4096), 512)])
        scale = float(1.0 / z.std())
        _atomic_torch_save({"state": vae.state_dict(), "scaling_factor": scale,
                            "seconds": time.time() - t0}, path)
        log(f"vae trained in {time.time() - t0:.0f}s, scaling factor {scale:.4f}")
    ck = torch.load(path, weights_only=True)
    vae.load_state_dict(ck["state"])
    vae.register_to_config(scaling_factor=ck["scaling_factor"])
    vae.eval().requires_grad_(False)
    # reconstruction quality as the classifiers see it
    xh = _to_tensor(data["xh"])
    with torch.no_grad():
        rec = torch.cat([vae.decode(vae.encode(xh[i:i + 512] * 2 - 1).latent_dist.mean).sample
                         for i in range(0, len(xh), 512)])
    rec = ((rec.clamp(-1, 1) + 1) / 2 * 255).round() / 255
    res = {"scaling_factor": ck["scaling_factor"], "seconds": ck["seconds"]}
    for kind, key in (("object", "oh"), ("style", "sh")):
        model, _ = load_classifier(os.path.join(work, f"{kind}_classifier.safetensors"))
        res[f"recon_{kind}_accuracy"] = _accuracy(model, rec, torch.from_numpy(data[key]))
    log(f"vae reconstructions: object {res['recon_object_accuracy']:.2f}% "
        f"style {res['recon_style_accuracy']:.2f}%")
    return res


def _encode_latents(work: str, data: dict, vae) -> tuple[torch.Tensor, torch.Tensor]:
    path = os.path.join(work, "latents.pt")
    if not os.path.exists(path):
        x = _to_tensor(data["x"]) * 2 - 1
        means, stds = [], []
        with torch.no_grad():
            for i in range(0, len(x), 512):
                d = vae.encode(x[i:i + 512]).latent_dist
                means.append(d.mean)
                stds.append(d.std)
        _atomic_torch_save({"mean": torch.cat(means), "std": torch.cat(stds)}, path)
    ck = torch.load(path, weights_only=True)
    return ck["mean"], ck["std"]


def stage_unet(work: str, cfg: TrainConfig, data: dict, comps: dict) -> dict:
    world = load_world()
    unet, te, tok = comps["unet"], comps["text_encoder"], comps["tokenizer"]
    sched = comps["noise_scheduler"]
    mean, std = _encode_latents(work, data, comps["vae"])
    scale = comps["vae"].config.scaling_factor
    styles = world.styles
    # token ids for every (object, style) caption, plus the empty caption
    captions = [world.caption(o, s) for o in world.objects for s in styles]
    ids_all = tok(captions, padding="max_length", max_length=tok.model_max_length,
                  return_tensors="pt").input_ids
    ids_empty = tok([""], padding="max_length", max_length=tok.model_max_length,
                    return_tensors="pt").input_ids[0]
    ids_obj = tok([world.caption(o, None) for o in world.objects], padding="max_length",
                  max_length=tok.model_max_length, return_tensors="pt").input_ids
    obj_of = torch.from_numpy(data["o"])
    pair = torch.from_numpy(data["o"] * len(styles) + data["s"])

    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01)
    head = None
    if cfg.style_code_weight > 0:
        head = StyleCodeHead(te.config.hidden_size, len(styles), seed=cfg.seed + 6)
    ema = {k: v.detach().clone() for k, v in _joint_state(unet, te).items()}
    alphas = sched.alphas_cumprod
    snr = alphas / (1 - alphas)
    step, losses, seconds, code_losses = 0, [], 0.0, []
    path = os.path.join(work, "unet_state.pt")
    if os.path.exists(path):
        ck = torch.load(path, weights_only=True)
        unet.load_state_dict(ck["unet"])
        te.load_state_dict(ck["te"])
        opt.load_state_dict(ck["opt"])
        ema = ck["ema"]
        step, losses, seconds = ck["step"], ck["losses"], ck["seconds"]
        log(f"unet: resumed at step {step}")
    style_of = torch.from_numpy(data["s"])
    g = torch.Generator().manual_seed(cfg.seed + 5 + step)  # resumable stream (per-resume reseed)
    weights = _sample_weights(cfg.object_weight, world.objects, data["o"])
    unet.train()
    te.train()
    t_last = time.time()
    while step < cfg.unet_steps:
        frac = step / cfg.unet_steps
        lr = cfg.unet_lr if frac < 2 / 3 else _cosine(step - 2 * cfg.unet_steps // 3,
                                                      cfg.unet_steps // 3, cfg.unet_lr, 0.1)
        for grp in opt.param_groups:
            grp["lr"] = lr
        if weights is None:
            idx = torch.randint(0, len(mean), (cfg.unet_batch,), generator=g)
        else:
            idx = torch.multinomial(weights, cfg.unet_batch, replacement=True, generator=g)
        z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scale
        ids = ids_all[pair[idx]].clone()
        r = torch.rand(cfg.unet_batch, generator=g)
        # r < caption_dropout: empty caption; then up to styleless: "a {object}"; else the full one
        styleless = cfg.caption_dropout + (cfg.style_dropout
                                           if step >= cfg.style_dropout_start else 0.0)
        style_drop = (r >= cfg.caption_dropout) & (r < styleless)
        ids[style_drop] = ids_obj[obj_of[idx][style_drop]]
        ids[r < cfg.caption_dropout] = ids_empty
        full = r >= styleless
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.unet_batch,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        zt = sched.add_noise(z0, noise, t)
        states = te(ids)[0]
        pred = unet(zt, t, encoder_hidden_states=states).sample
        w = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]  # Min-SNR-gamma, eps-prediction
        loss = (w * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        if head is not None:
            code = style_code_loss(head, states, ids, style_of[idx], te.config.eos_token_id, full,
                                   cfg.style_code_margin)
            code_losses.append(code.item())
            loss = loss + cfg.style_code_weight * code
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            for k, v in _joint_state(unet, te).items():
                ema[k].lerp_(v, 1 - cfg.ema_decay)
        losses.append(loss.item())
        step += 1
        if step % 50 == 0:
            now = time.time()
            seconds += now - t_last
            t_last = now
            log(f"unet step {step}/{cfg.unet_steps} loss(avg50) {np.mean(losses[-50:]):.4f} "
                f"lr {lr:.2e} {seconds / step:.2f}s/step"
                + (f" style-code {np.mean(code_losses[-50:]):.3f}" if head is not None else ""))
        if step % cfg.ckpt_every == 0 or step == cfg.unet_steps:
            _atomic_torch_save({"unet": unet.state_dict(), "te": te.state_dict(),
                                "opt": opt.state_dict(), "ema": ema, "step": step,
                                "losses": losses, "seconds": seconds}, path)
    unet.eval()
    te.eval()
    return {"steps": step, "seconds": seconds, "ema": ema,
            "loss_curve": [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)]}


def _sample_weights(spec: str, objects: tuple, obj_of: np.ndarray) -> torch.Tensor | None:
    """Per-image sampling weights from "name=w,name=w" (None: uniform sampling)."""
    if not spec:
        return None
    mult = np.ones(len(objects))
    for item in spec.split(","):
        name, _, w = item.partition("=")
        if name.strip() not in objects:
            raise ValueError(f"object_weight: unknown object {name.strip()!r}")
        mult[objects.index(name.strip())] = float(w)
    return torch.from_numpy(mult[obj_of]).float()


def _joint_state(unet, te) -> dict:
    state = {f"unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"te.{k}": v for k, v in te.state_dict().items()})
    return state


def _load_joint(unet, te, state: dict) -> None:
    unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
    te.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("te.")})


def evaluate_samples(pipe, work: str, cfg: TrainConfig) -> dict:
    """Sample ``eval_per_pair`` images per pair with the protocol's sampler; classify."""
    world = load_world()
    styles = world.styles
    prompts, seeds, yo, ys = [], [], [], []
    for oi, o in enumerate(world.objects):
        for si, s in enumerate(styles):
            for r in range(cfg.eval_per_pair):
                prompts.append(world.caption(o, s))
                seeds.append(10_000 + (oi * len(styles) + si) * cfg.eval_per_pair + r)
                yo.append(oi)
                ys.append(si)
    t0 = time.time()
    imgs = pipe.sample(prompts, seeds, steps=cfg.eval_steps, guidance=cfg.eval_guidance)
    dt = time.time() - t0
    x = _to_tensor(imgs)
    res = {"images": len(prompts), "sampling_seconds": dt, "images_per_second": len(prompts) / dt}
    for kind, y, names in (("object", yo, world.objects), ("style", ys, styles)):
        clf, _ = load_classifier(os.path.join(work, f"{kind}_classifier.safetensors"))
        pred = _predict(clf, x)
        y = torch.tensor(y)
        per = {n: 100.0 * (pred[y == i] == i).float().mean().item() for i, n in enumerate(names)}
        res[kind] = {"mean": float(np.mean(list(per.values()))), "min": min(per.values()),
                     "per_concept": per}
    return res


def run(work: str, out: str | None, cfg: TrainConfig) -> dict:
    from cu_cli.models.minicanvas_arch import build_components, save_pipeline
    from cu_cli.models.pipeline import Pipeline

    torch.set_num_threads(cfg.threads)
    os.makedirs(work, exist_ok=True)
    t_start = time.time()
    world = load_world()
    report: dict = {"config": asdict(cfg)}
    data = stage_data(work, cfg)
    report["data"] = {"train_images": int(len(data["x"])), "heldout_images": int(len(data["xh"]))}
    report["object_classifier"] = stage_classifier(work, cfg, data, "object")
    report["style_classifier"] = stage_classifier(work, cfg, data, "style")
    comps = build_components(world.vocabulary(), seed=cfg.seed)
    report["vae"] = stage_vae(work, cfg, data, comps)
    res = stage_unet(work, cfg, data, comps)
    ema = res.pop("ema")
    report["unet"] = res
    pipe = Pipeline(tokenizer=comps["tokenizer"], text_encoder=comps["text_encoder"],
                    unet=comps["unet"], vae=comps["vae"],
                    scheduler_config=dict(comps["noise_scheduler"].config)).eval_mode()
    raw = _joint_state(comps["unet"], comps["text_encoder"])
    raw = {k: v.clone() for k, v in raw.items()}
    report["samples_raw"] = evaluate_samples(pipe, work, cfg)
    log(f"raw weights: object {report['samples_raw']['object']['mean']:.1f}% "
        f"style {report['samples_raw']['style']['mean']:.1f}%")
    _load_joint(comps["unet"], comps["text_encoder"], ema)
    report["samples_ema"] = evaluate_samples(pipe, work, cfg)
    log(f"ema weights: object {report['samples_ema']['object']['mean']:.1f}% "
        f"style {report['samples_ema']['style']['mean']:.1f}%")
    score = lambda r: min(r["object"]["mean"], r["style"]["mean"])  # noqa: E731
    chosen = "ema" if score(report["samples_ema"]) >= score(report["samples_raw"]) else "raw"
    if chosen == "raw":
        _load_joint(comps["unet"], comps["text_encoder"], raw)
    report["chosen_weights"] = chosen
    report["text_code"] = {o: nonadditive_fraction(comps["text_encoder"], comps["tokenizer"], world, o)
                           for o in ("star", "house")}
    report["samples"] = report[f"samples_{chosen}"]
    report["wall_seconds_this_run"] = time.time() - t_start
    pipe_dir = os.path.join(work, "pipeline")
    shutil.rmtree(pipe_dir, ignore_errors=True)
    save_pipeline(pipe_dir, comps)
    with open(os.path.join(work, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    if out:
        export(work, out)
    return report


def export(work: str, out: str) -> None:
    """Copy the trained pipeline, classifiers and report into ``out`` (the packaged assets)."""
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".pipeline.tmp-{os.getpid()}")
    shutil.copytree(os.path.join(work, "pipeline"), tmp)
    shutil.rmtree(os.path.join(out, "pipeline"), ignore_errors=True)
    os.replace(tmp, os.path.join(out, "pipeline"))
    for name in ("object_classifier.safetensors", "style_classifier.safetensors", "report.json"):
        shutil.copy2(os.path.join(work, name), os.path.join(out, name))
    log(f"exported to {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the MiniCanvas pipeline and classifiers.")
    p.add_argument("--work", required=True, help="work directory (resumable)")
    p.add_argument("--out", default=None, help="export directory (e.g. cu_cli/assets/minicanvas)")
    for f, v in asdict(TrainConfig()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=v)
    a = vars(p.parse_args(argv))
    work, out = a.pop("work"), a.pop("out")
    cfg = TrainConfig(**a)
    report = run(work, out, cfg)
    print(json.dumps({k: report["samples"][k]["mean"] for k in ("object", "style")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
