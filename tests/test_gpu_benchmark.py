"""benchmarks/gpu.py stays runnable (smallest size on the CPU), and the true SD1.5 topology with
random weights runs one erase step on the CPU (slow)."""

from __future__ import annotations

import pytest


def test_gpu_benchmark_runs_at_the_smallest_size(capsys):
    from benchmarks.gpu import main

    out = main(["--device", "cpu", "--width", "40", "--resolution", "64", "--sample-steps", "2",
                "--repeat", "1", "--json"])
    rows = out["rows"]
    assert [(r["family"], r["phase"]) for r in rows] == [
        ("sd1", "erase step"), ("sd1", "sample 2 steps"),
        ("sdxl", "erase step"), ("sdxl", "sample 2 steps")]
    assert all(r["cu_s"] > 0 and r["plain_s"] > 0 and r["ratio"] > 0 for r in rows)
    assert '"rows"' in capsys.readouterr().out


@pytest.mark.slow
def test_true_sd15_topology_one_erase_step_on_cpu(runner, tmp_path):
    from benchmarks.gpu import save
    from cu_cli.cli.app import app
    from cu_cli.ckpt.checkpoint import open_checkpoint

    base = str(tmp_path / "sd15")
    info = save("sd1", base, 1, 128)  # the true widths and depths, 128 px (16x16 latents)
    assert info["unet_params"] == 859_520_964
    out = str(tmp_path / "o.safetensors")
    r = runner.invoke(app, ["erase", "--base", base, "--concept", "cat", "--kind", "object",
                            "--anchor", "dog", "--steps", "1", "--batch", "1", "--anchor-images",
                            "2", "--anchor-steps", "2", "--device", "cpu", "-q", "-o", out])
    assert r.exit_code == 0, r.output
    h = open_checkpoint(out)
    step = h.json("cu.lineage")[-1]
    assert len(h.tensors) == 32 and step["device"] == "cpu" and step["dtype"] == "fp32"
    assert step["measured"]["peak_memory_mb"] < 8 * 1024
