"""Shared fixtures: offline guards, user state redirected to tmp, tiny pipelines on disk."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports diffusers
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get("CU_RUN_SLOW") == "1"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    for item in items:
        if "slow" in item.keywords and not (run_slow or has_cuda):
            item.add_marker(pytest.mark.skip(reason="slow: set CU_RUN_SLOW=1"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(autouse=True)
def _isolated_user_state(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.getbasetemp() / "user-state"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root / "cache"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("CU_CACHE_DIR", str(root / "cu-cache"))


@pytest.fixture(scope="session")
def tiny_sd1(tmp_path_factory) -> str:
    from tests.tiny import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny-sd1")), "sd1")


@pytest.fixture(scope="session")
def tiny_sd2(tmp_path_factory) -> str:
    from tests.tiny import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny-sd2")), "sd2")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> str:
    from tests.tiny import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny-sdxl")), "sdxl")


@pytest.fixture(scope="session")
def tiny_sdxl_sgm(tmp_path_factory) -> str:
    """SDXL block topology and encoder widths (what a single-file SDXL round trip needs)."""
    from tests.tiny import save_tiny

    return save_tiny(str(tmp_path_factory.mktemp("tiny-sdxl-sgm")), "sdxl", sgm=True)


@pytest.fixture()
def runner():
    from typer.testing import CliRunner

    return CliRunner()
