"""CLI manners: help without torch, stdout only results, one-line errors with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from cu_cli.cli.app import app
from cu_cli.models.base import resolve_base
from tests.helpers import kv_keys, make_ckpt


def test_help_lists_commands_without_importing_torch():
    code = ("import sys; from typer.testing import CliRunner; from cu_cli.cli.app import app; "
            "r = CliRunner().invoke(app, ['--help']); print(r.stdout); "
            "print('TORCH', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "TORCH False" in out.stdout
    for cmd in ("inspect", "drift"):
        assert cmd in out.stdout


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "cu_cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "drift" in out.stdout


def test_usage_error_exit_2(runner):
    r = runner.invoke(app, ["drift", "--per-layer", "-3", "x.safetensors"])
    assert r.exit_code == 2


def test_missing_file_exit_1_one_line(runner, tmp_path, tiny_sd1):
    r = runner.invoke(app, ["drift", "--base", tiny_sd1, str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.strip().startswith("Error:") and len(r.stderr.strip().splitlines()) == 1


def test_corrupt_file_exit_3(runner, tmp_path, tiny_sd1):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    r = runner.invoke(app, ["inspect", str(bad)])
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output and r.stderr.startswith("Error:")


def test_wrong_base_exit_3(runner, tmp_path, tiny_sd1, tiny_sdxl):
    base = resolve_base(tiny_sd1)
    p = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)})
    r = runner.invoke(app, ["drift", "--base", tiny_sdxl, p])
    assert r.exit_code == 3
    assert "differs from base" in r.stderr


def test_inspect_state_json(runner, tmp_path, tiny_sd1):
    base = resolve_base(tiny_sd1)
    a = make_ckpt(tmp_path / "a.safetensors", base, {kv_keys(base)[0]: torch.ones(1)}, ["cat"])
    r = runner.invoke(app, ["inspect", a, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    for key in ("payload_sha256", "base_fingerprint", "parents", "lineage", "erased"):
        assert key in info
    assert info["erased"] == ["cat"] and info["integrity"] == "ok"
    plain = runner.invoke(app, ["inspect", a])
    assert "lineage" in plain.stdout and "cat" in plain.stdout


def test_inspect_base_groups(runner, tiny_sd1):
    r = runner.invoke(app, ["inspect", tiny_sd1, "--groups", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["family"] == "sd1"
    assert info["groups"]["kv-xattn"]["tensors"] == 32  # SD1.x topology: 16 blocks x (k, v)
    assert info["groups"]["xattn"]["tensors"] == 80


def test_family_detection(tiny_sd1, tiny_sd2, tiny_sdxl):
    assert resolve_base(tiny_sd1).family == "sd1"
    assert resolve_base(tiny_sd2).family == "sd2"
    assert resolve_base(tiny_sdxl).family == "sdxl"


def test_hub_id_is_refused_without_network(runner):
    r = runner.invoke(app, ["inspect", "runwayml/stable-diffusion-v1-5"])
    assert r.exit_code == 1 and "never downloads" in r.stderr
