"""The hostile-input corpus (``tools/gen_hostile.py`` → ``tests/data/hostile/``) through ``cu
inspect``, ``cu drift`` and (a few cases) ``cu eval``: a clean non-zero exit every time, never
"internal error" or a traceback, and no file changed. ``_valid`` is the control (exit 0)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from cu_cli.cli.app import app

HERE = os.path.join(os.path.dirname(__file__), "data", "hostile")
MANIFEST = json.load(open(os.path.join(HERE, "MANIFEST.json")))
HOSTILE = sorted(k for k in MANIFEST if k != "_valid")
EVAL_CASES = ["nan_tensor", "transposed_shape", "edited_erased", "f16_claims_float32"]


@pytest.fixture()
def corpus(tmp_path):
    d = tmp_path / "hostile"
    shutil.copytree(HERE, d)
    return d


def _digest(d) -> dict:
    return {p: hashlib.sha256((d / p).read_bytes()).hexdigest() for p in sorted(os.listdir(d))}


def _clean_failure(r):
    assert r.exit_code in (1, 2, 3), r.output
    assert "internal error" not in r.output and "Traceback" not in r.output
    assert "Error:" in r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_manifest_matches_files():
    files = sorted(f[:-len(".safetensors")] for f in os.listdir(HERE) if f.endswith(".safetensors"))
    assert files == sorted(MANIFEST) and len(HOSTILE) >= 12
    assert all(os.path.getsize(os.path.join(HERE, f + ".safetensors")) < 16_384 for f in files)


@pytest.mark.parametrize("case", HOSTILE)
@pytest.mark.parametrize("cmd", ["inspect", "inspect-json", "drift"])
def test_hostile_file_is_a_clean_failure(runner, corpus, case, cmd):
    path = str(corpus / f"{case}.safetensors")
    before = _digest(corpus)
    args = {"inspect": ["inspect", path], "inspect-json": ["inspect", path, "--json"],
            "drift": ["drift", path, "--json"]}[cmd]
    r = runner.invoke(app, args)
    _clean_failure(r)
    if cmd == "inspect-json" and r.stdout:  # the report printed before failing is valid JSON
        assert json.loads(r.stdout)["integrity"] == "FAILED"
    if cmd == "inspect":
        assert "[ok]" not in r.stdout
    assert _digest(corpus) == before


@pytest.mark.parametrize("case", EVAL_CASES)
def test_hostile_file_in_eval(runner, corpus, case):
    path = str(corpus / f"{case}.safetensors")
    before = _digest(corpus)
    r = runner.invoke(app, ["eval", path, "--protocol", "minicanvas-object", "--steps", "1",
                            "--seeds", "1", "-q", "--json", "--fail-under", "ua=0"])
    _clean_failure(r)
    assert r.stdout == "" and _digest(corpus) == before


def test_control_file_is_accepted(runner, corpus):
    path = str(corpus / "_valid.safetensors")
    for args in (["inspect", path], ["drift", path, "--json"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
