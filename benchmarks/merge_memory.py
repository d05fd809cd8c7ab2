"""Peak RSS of ``cu merge`` of full SD1.5-UNet states vs the size of one state (issue 17: ≤ 2×).

Builds, in a scratch folder, a diffusers-like base (``model_index.json``, ``unet/config.json``, one
UNet safetensors file holding **every** SD1.5 UNet tensor — 686 keys, 859.5 M parameters, 3.44 GB
in fp32 — with random weights) and N cu checkpoints of all those keys (base + small noise). All
files are written with ``write_safetensors_stream``, one tensor at a time, so building needs no
more RAM than one tensor. Then runs ``cu merge`` of the N states in a fresh child process per case
and reads the child's peak RSS from ``os.wait4`` (``ru_maxrss``, the kernel's ``getrusage`` of that
child). ``--code DIR`` runs the merge with another checkout's ``cu_cli`` (e.g. the pre-streaming
code) for comparison; ``--fraction F`` keeps only the first F of the keys (sorted) when disk or RAM
is tight.

    python benchmarks/merge_memory.py [--states 2] [--methods uniform,ties] [--code /other/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8,
             "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
             "in_channels": 4, "out_channels": 4}


def unet_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the SD1.5 UNet (built on the meta device: no memory, no weights)."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
    return {k: tuple(v.shape) for k, v in unet.state_dict().items()}


def _rand(key: str, salt: int, shape, scale: float):
    import torch

    g = torch.Generator().manual_seed(zlib.crc32(key.encode()) * 131 + salt)
    return torch.randn(shape, generator=g).mul_(scale)


def build(work: str, n: int, fraction: float) -> tuple[str, list[str], int]:
    from cu_cli.ckpt.checkpoint import BaseIdentity, write_checkpoint_stream
    from cu_cli.ckpt.format import write_safetensors_stream
    from cu_cli.ckpt.lineage import make_step
    from cu_cli.models.base import resolve_base

    shapes = unet_shapes()
    keys = sorted(shapes)[:max(1, int(round(len(shapes) * fraction)))]
    shapes = {k: shapes[k] for k in keys}
    base_dir = os.path.join(work, "base")
    os.makedirs(os.path.join(base_dir, "unet"))
    with open(os.path.join(base_dir, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline",
                   "unet": ["diffusers", "UNet2DConditionModel"]}, f)
    with open(os.path.join(base_dir, "unet", "config.json"), "w") as f:
        json.dump({"_class_name": "UNet2DConditionModel", **SD15_UNET}, f)
    write_safetensors_stream(os.path.join(base_dir, "unet", "diffusion_pytorch_model.safetensors"),
                             {k: ("F32", s) for k, s in shapes.items()},
                             lambda k: _rand(k, 0, shapes[k], 0.02), {})
    base = resolve_base(base_dir)
    ident = BaseIdentity(base.id, base.arch, base.fingerprint)  # cached for the child runs
    paths = []
    for i in range(n):
        p = os.path.join(work, f"s{i}.safetensors")

        def produce(k, i=i):
            return _rand(k, 0, shapes[k], 0.02).add_(_rand(k, i + 1, shapes[k], 1e-3))

        write_checkpoint_stream(p, {f"unet.{k}": s for k, s in shapes.items()},
                                lambda k: produce(k[len("unet."):]), ident,
                                lambda i=i: make_step("erase", concepts=[f"concept {i}"],
                                                      argv=["bench"]))
        paths.append(p)
    return base_dir, paths, sum(_numel(s) for s in shapes.values())


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def run_case(code: str, base_dir: str, paths: list[str], method: str, out: str,
             env: dict) -> dict:
    args = [sys.executable, "-m", "cu_cli", "merge", *paths, "--base", base_dir, "--method",
            method, "-o", out, "--force", "-q"]
    t = time.time()
    p = subprocess.Popen(args, env={**env, "PYTHONPATH": code}, cwd=code,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"cu merge failed ({p.returncode}):\n{err[-3000:]}")
    return {"peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "seconds": time.time() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=2)
    ap.add_argument("--methods", default="uniform,ties")
    ap.add_argument("--fraction", type=float, default=1.0, help="share of the UNet keys kept")
    ap.add_argument("--code", action="append", default=None,
                    help="checkout whose cu_cli runs the merge (repeatable; default: this one)")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temp folder)")
    a = ap.parse_args()
    codes = a.code or [ROOT]
    work = tempfile.mkdtemp(prefix="cu-merge-mem-", dir=a.workdir)
    try:
        env = {**os.environ, "XDG_CACHE_HOME": os.path.join(work, "cache"), "HF_HUB_OFFLINE": "1",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        os.environ["XDG_CACHE_HOME"] = env["XDG_CACHE_HOME"]
        t0 = time.time()
        base_dir, paths, n_params = build(work, a.states, a.fraction)
        size = os.path.getsize(paths[0]) / 1e9
        print(f"built base + {a.states} states of {n_params / 1e6:.1f} M parameters "
              f"({size:.2f} GB each) in {time.time() - t0:.0f} s", flush=True)
        for code in codes:
            for method in a.methods.split(","):
                r = run_case(code, base_dir, paths, method, os.path.join(work, "m.safetensors"),
                             env)
                print(f"code={code} method={method} states={a.states}: peak RSS "
                      f"{r['peak_rss_gb']:.2f} GB = {r['peak_rss_gb'] / size:.2f}x one state "
                      f"({size:.2f} GB), {r['seconds']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
