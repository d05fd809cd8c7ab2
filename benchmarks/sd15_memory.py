"""Peak RSS of `cu erase` on a random-weight SD1.5-topology pipeline (859.5 M-parameter UNet,
CLIP-L-sized text encoder) on a CPU, for N anchor images: peak memory must not grow with N
(sampling in batches, VAE decode in slices; issue 17). Each run is a fresh `cu erase` process;
the peak comes from its lineage (``measured.peak_memory_mb``, the process's ru_maxrss).

    python benchmarks/sd15_memory.py --resolution 512 --anchors 2,16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--anchors", default="2,16")
    ap.add_argument("--anchor-steps", type=int, default=2)
    ap.add_argument("--dtype", default="fp32")
    args = ap.parse_args()
    from benchmarks.gpu import save
    from cu_cli.ckpt.checkpoint import open_checkpoint

    with tempfile.TemporaryDirectory(prefix="cu-sd15-") as d:
        base = os.path.join(d, "sd15")
        info = save("sd1", base, 1, args.resolution)
        print(f"SD1.5 topology, UNet {info['unet_params'] / 1e6:.1f} M parameters, "
              f"{args.resolution} px, {args.dtype}", flush=True)
        env = {**os.environ, "CU_CACHE_DIR": os.path.join(d, "cache"),
               "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for n in [int(x) for x in args.anchors.split(",")]:
            out = os.path.join(d, f"o{n}.safetensors")
            t0 = time.time()
            r = subprocess.run([sys.executable, "-m", "cu_cli", "erase", "--base", base,
                                "--concept", "cat", "--kind", "object", "--anchor", "dog",
                                "--steps", "1", "--batch", "1", "--anchor-images", str(n),
                                "--anchor-steps", str(args.anchor_steps), "--dtype", args.dtype,
                                "--device", "cpu", "-q", "-o", out],
                               env=env, capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-2000:])
                raise SystemExit(r.returncode)
            step = open_checkpoint(out).json("cu.lineage")[-1]
            m = step["measured"]
            print(json.dumps({"anchor_images": n, "peak_rss_gb": round(m["peak_memory_mb"] / 1024, 2),
                              "wall_s": round(time.time() - t0, 1),
                              "loop_s": m["loop_seconds"], "device": step["device"],
                              "dtype": step["dtype"]}), flush=True)


if __name__ == "__main__":
    main()
