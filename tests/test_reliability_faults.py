"""Fault injection on the tiny pipeline (issue 14): ``cu erase`` and ``cu merge`` killed with
SIGKILL and SIGINT mid-write and at random times, and ENOSPC/EIO injected at write.

After each interrupted run: nothing partial under the final name, inputs byte-identical, SIGINT →
exit 130 with its temp removed, and the rerun gives the uninterrupted run's payload hash (and
reports removing a SIGKILL's stale temp). Default: 3 trials per command (``faults.FAST_PLAN``);
``CU_RUN_SLOW=1`` adds 20 trials per command with a rerun after each.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from tests import faults


@pytest.fixture(scope="module")
def merge_inputs(tiny_sd1, tmp_path_factory):
    return faults.make_merge_inputs(tiny_sd1, str(tmp_path_factory.mktemp("fault-inputs")))


def _assert_all_ok(recs):
    bad = [r for r in recs if not r["ok"]]
    assert not bad, bad
    assert any(r["rerun_exit"] == 0 for r in recs)


def test_erase_interrupted_fast(tiny_sd1, tmp_path):
    recs = faults.run_plan(faults.erase_scenario(tiny_sd1, str(tmp_path)), faults.FAST_PLAN)
    _assert_all_ok(recs)
    kill_write = recs[0]
    assert kill_write["exit"] == -9 and kill_write["temps_left"] == 1
    assert kill_write["rerun_cleaned"]  # the rerun removed the stale temp and said so
    assert recs[1]["exit"] == 130 and recs[1]["temps_left"] == 0


def test_merge_interrupted_fast(tiny_sd1, merge_inputs, tmp_path):
    recs = faults.run_plan(faults.merge_scenario(tiny_sd1, merge_inputs, str(tmp_path)),
                           faults.FAST_PLAN)
    _assert_all_ok(recs)
    assert recs[0]["rerun_cleaned"] and recs[1]["exit"] == 130


@pytest.mark.slow
def test_erase_interrupted_loop(tiny_sd1, tmp_path):
    _assert_all_ok(faults.run_plan(faults.erase_scenario(tiny_sd1, str(tmp_path)),
                                   faults.slow_plan(20), seed=1))


@pytest.mark.slow
def test_merge_interrupted_loop(tiny_sd1, merge_inputs, tmp_path):
    _assert_all_ok(faults.run_plan(faults.merge_scenario(tiny_sd1, merge_inputs, str(tmp_path)),
                                   faults.slow_plan(20), seed=1))


INJECT = """
import errno, os, sys
sys.path.insert(0, {root!r})
err = getattr(errno, {err!r})
def failing_fsync(fd):
    raise OSError(err, os.strerror(err))
os.fsync = failing_fsync
from cu_cli.cli.app import main
sys.argv = ["cu"] + {args!r}
main()
"""


@pytest.mark.parametrize("err", ["ENOSPC", "EIO"])
def test_injected_write_error_in_a_subprocess(tiny_sd1, merge_inputs, tmp_path, err):
    out = tmp_path / "m.safetensors"
    args = ["merge", *merge_inputs, "--base", tiny_sd1, "--method", "uniform", "-o", str(out)]
    code = INJECT.format(root=faults.ROOT, err=err, args=args)
    before = faults.tree_hashes(merge_inputs)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=faults.make_env(str(tmp_path)), timeout=300)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("Error: writing") and os.strerror(getattr(errno, err)) in lines[0]
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert not out.exists() and faults.temps_of(str(out)) == []
    assert faults.tree_hashes(merge_inputs) == before
