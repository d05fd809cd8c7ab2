"""Issue 14 items 1, 7: every output goes through one check before any work and is written via a
findable temp + rename; stale temps of dead writers are removed with a warning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cu_cli._util.errors import CuError, UsageError
from cu_cli._util.fs import (atomic_write_bytes, check_output_path, check_outputs, stale_temps,
                             temp_path)
from cu_cli.cli.app import app


@pytest.fixture(scope="module")
def state(tiny_sd1, tmp_path_factory):
    from tests.helpers import small_state

    return small_state(tiny_sd1, tmp_path_factory, "outputs")


def _bytes(p) -> bytes:
    return open(p, "rb").read()


def test_drift_plot_onto_its_input_is_refused(runner, tiny_sd1, state):
    before = _bytes(state)
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", state])
    assert r.exit_code == 2 and "also an input" in r.stderr
    assert _bytes(state) == before
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", state, "--force"])
    assert r.exit_code == 2 and _bytes(state) == before  # --force never overwrites an input


def test_drift_plot_needs_force_to_overwrite(runner, tiny_sd1, state, tmp_path):
    png = tmp_path / "old.png"
    png.write_bytes(b"keep me")
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", str(png)])
    assert r.exit_code == 2 and "--force" in r.stderr and png.read_bytes() == b"keep me"
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", str(png), "--force"])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(os.listdir(tmp_path)) == ["old.png"]  # no temp left beside it


@pytest.mark.parametrize("cmd", ["drift", "eval-plot", "eval-grid"])
def test_missing_output_folder_fails_before_any_work(runner, tiny_sd1, state, tmp_path,
                                                     monkeypatch, cmd):
    import cu_cli.drift.compute as dc
    import cu_cli.evaluate.run as er

    def must_not_run(*a, **k):
        raise AssertionError("work started before the output check")

    monkeypatch.setattr(dc, "run_drift", must_not_run)
    monkeypatch.setattr(er, "run_eval", must_not_run)
    target = str(tmp_path / "no-such-dir" / "x.png")
    if cmd == "drift":
        args = ["drift", state, "--base", tiny_sd1, "--plot", target]
    else:
        args = ["eval", state, "--base", tiny_sd1, "--" + cmd.split("-")[1], target]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "does not exist" in r.stderr and str(tmp_path / "no-such-dir") in r.stderr
    assert "internal error" not in r.stderr


def test_eval_grid_and_plot_refuse_inputs_and_existing(runner, tiny_sd1, state, tmp_path,
                                                       monkeypatch):
    import cu_cli.evaluate.run as er

    monkeypatch.setattr(er, "run_eval", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    before = _bytes(state)
    r = runner.invoke(app, ["eval", state, "--base", tiny_sd1, "--grid", state])
    assert r.exit_code == 2 and "also an input" in r.stderr and _bytes(state) == before
    png = tmp_path / "p.png"
    png.write_bytes(b"old")
    r = runner.invoke(app, ["eval", state, "--base", tiny_sd1, "--plot", str(png)])
    assert r.exit_code == 2 and png.read_bytes() == b"old"
    r = runner.invoke(app, ["eval", state, "--base", tiny_sd1, "--plot", str(png), "--grid",
                            str(png), "--force"])
    assert r.exit_code == 2 and "same file" in r.stderr


@pytest.mark.parametrize("out,needle", [("", "empty"), ("   ", "empty"),
                                        ("newdir/", "not a folder")])
def test_empty_and_trailing_slash_outputs_are_usage_errors(runner, tiny_sd1, state, tmp_path,
                                                           out, needle):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = runner.invoke(app, ["merge", state, "--base", tiny_sd1, "--method", "uniform",
                                "-o", out])
    finally:
        os.chdir(cwd)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and os.listdir(tmp_path) == []


def test_symlink_output_is_refused_and_left_alone(runner, tiny_sd1, state, tmp_path):
    target = tmp_path / "real.safetensors"
    target.write_bytes(b"precious")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    for extra in ([], ["--force"]):
        r = runner.invoke(app, ["merge", state, "--base", tiny_sd1, "--method", "uniform",
                                "-o", str(link)] + extra)
        assert r.exit_code == 2 and "symbolic link" in r.stderr
        assert link.is_symlink() and target.read_bytes() == b"precious"
    # a link to an input is refused too (it would be the input under another name)
    link2 = tmp_path / "to-input.png"
    link2.symlink_to(state)
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", str(link2), "--force"])
    assert r.exit_code == 2 and _bytes(state)[:8] != b"\x89PNG\r\n\x1a\n"


def test_check_outputs_unit(tmp_path):
    a = str(tmp_path / "a.png")
    assert check_outputs({"--plot": a, "--grid": None}, force=False) == {"--plot": a}
    with pytest.raises(UsageError, match="same file"):
        check_outputs({"--plot": a, "--grid": a}, force=False)
    with pytest.raises(CuError, match="does not exist") as e:
        check_output_path(str(tmp_path / "x" / "y.png"), False)
    assert e.value.exit_code == 1
    assert os.listdir(tmp_path) == []  # the writability probe leaves nothing


def test_temp_name_is_findable_and_removed_on_failure(tmp_path):
    out = tmp_path / "m.safetensors"
    tmp = temp_path(str(out))
    assert os.path.basename(tmp) == f".m.safetensors.cu-tmp-{os.getpid()}"

    def chunks():
        yield b"part"
        assert os.path.exists(tmp)  # written beside the output under the documented name
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(str(out), chunks())
    assert os.listdir(tmp_path) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_of_dead_writers_are_removed_with_a_warning(runner, tiny_sd1, state,
                                                                tmp_path):
    out = tmp_path / "m.safetensors"
    dead = _dead_pid()
    stale = tmp_path / f".m.safetensors.cu-tmp-{dead}"
    legacy = tmp_path / f"m.safetensors.tmp-{dead}"
    live = tmp_path / f".m.safetensors.cu-tmp-{os.getppid()}"  # a running process: kept
    other = tmp_path / f".other.safetensors.cu-tmp-{dead}"  # another output's temp: kept
    for p in (stale, legacy, live, other):
        p.write_bytes(b"half-written")
    assert sorted(p for p, _ in stale_temps(str(out))) == sorted([str(stale), str(legacy)])
    from cu_cli.cli.output import setup_logging

    setup_logging()  # another test may have left the logger at -q level
    r = runner.invoke(app, ["merge", state, "--base", tiny_sd1, "--method", "uniform",
                            "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and not legacy.exists() and live.exists() and other.exists()
    assert "stale temporary file" in r.stderr and str(dead) in r.stderr
