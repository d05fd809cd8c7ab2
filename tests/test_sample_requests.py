"""Every file in sample_requests/ is a valid `cu erase --config` (keys known, values resolve)."""

from __future__ import annotations

import glob
import os

import pytest

from cu_cli.erase.params import build_config, load_yaml, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(ROOT, "sample_requests", "*.yaml")))


def test_there_are_sample_requests():
    assert len(FILES) >= 3


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_sample_request_resolves(path):
    values = load_yaml(path)
    cfg, extra = build_config(values, {}, allowed_extra={"concepts", "basis", "base", "from", "seed"})
    assert extra.get("concepts"), "a sample request names its concepts"
    world = None if extra.get("base") else "minicanvas"
    resolved = resolve(cfg, world)
    assert resolved.steps >= 1 and resolved.lr > 0
