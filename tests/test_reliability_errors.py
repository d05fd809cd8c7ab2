"""Issue 14 item 8: ordinary faults (disk full, EIO, EACCES, /proc, bad ints, binary text files,
a PNG given to inspect) are one-line errors with the right exit code, never "internal error"."""

from __future__ import annotations

import errno
import os

import pytest

from cu_cli.cli.app import app


@pytest.fixture(scope="module")
def state(tiny_sd1, tmp_path_factory):
    from tests.helpers import small_state

    return small_state(tiny_sd1, tmp_path_factory, "errors")


def _one_line_error(r, code):
    assert r.exit_code == code, r.output
    assert r.stderr.startswith("Error:") and "internal error" not in r.stderr
    assert "Traceback" not in r.output


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_disk_full_and_eio_while_writing(runner, tiny_sd1, state, tmp_path, monkeypatch,
                                         err, where):
    import builtins

    import cu_cli._util.fs as fs

    out = tmp_path / "m.safetensors"

    def boom(*a, **k):
        raise OSError(err, os.strerror(err))

    real_open = builtins.open

    class Failing:
        """The temp file object: its writes fail like a full or broken disk."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return boom if name == "write" else getattr(self.f, name)

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return Failing(f) if "w" in mode and ".cu-tmp-" in str(path) else f

    if where == "fsync":
        monkeypatch.setattr(fs.os, "fsync", boom)
    else:
        monkeypatch.setattr(fs, "open", fake_open, raising=False)
    r = runner.invoke(app, ["merge", state, "--base", tiny_sd1, "--method", "uniform",
                            "-o", str(out)])
    monkeypatch.undo()
    _one_line_error(r, 1)
    assert os.strerror(err) in r.stderr and str(out) in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # Error + optional Hint
    assert os.listdir(tmp_path) == []  # nothing under the final name, no temp


def test_eio_while_reading_is_one_line(runner, tiny_sd1, state, monkeypatch):
    import builtins

    import cu_cli.ckpt.format as fmt

    real_open = builtins.open

    def flaky(path, *a, **k):
        if str(path) == state:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(fmt, "open", flaky, raising=False)
    r = runner.invoke(app, ["inspect", state])
    _one_line_error(r, 1)
    assert "Input/output error" in r.stderr and state in r.stderr


def test_unwritable_folder_fails_before_work(runner, tiny_sd1, state, tmp_path, monkeypatch):
    import cu_cli._util.fs as fs

    real = os.open

    def denied(path, flags, *a):
        if ".cu-tmp-" in str(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real(path, flags, *a)

    monkeypatch.setattr(fs.os, "open", denied)
    import cu_cli.merge.compute as mc

    monkeypatch.setattr(mc, "run_merge", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    r = runner.invoke(app, ["merge", state, "--base", tiny_sd1, "--method", "uniform",
                            "-o", str(tmp_path / "m.safetensors")])
    _one_line_error(r, 1)
    assert "Permission denied" in r.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_output_under_proc(runner, tiny_sd1, state):
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1, "--plot", "/proc/cu-test.png"])
    _one_line_error(r, 1)
    assert "/proc/cu-test.png" in r.stderr


@pytest.mark.parametrize("opt", ["--steps", "--seeds"])
def test_eval_int_options_must_be_positive(runner, tiny_sd1, opt):
    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--erased", "Bears", opt, "0"])
    assert r.exit_code == 2 and "internal error" not in r.output


def test_binary_concepts_file(runner, tiny_sd1, tmp_path):
    f = tmp_path / "concepts.txt"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    r = runner.invoke(app, ["eval", "--base", tiny_sd1, "--erased", "Bears", "--retain-file",
                            str(f)])
    _one_line_error(r, 2)
    assert "UTF-8" in r.stderr and str(f) in r.stderr


def test_inspect_png_says_it_is_not_a_checkpoint(runner, tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    r = runner.invoke(app, ["inspect", str(png)])
    _one_line_error(r, 3)
    assert "not a safetensors checkpoint" in r.stderr and "--base-config" not in r.stderr


def test_any_oserror_from_a_command_is_one_line_naming_the_path(runner, tiny_sd1, state,
                                                                monkeypatch):
    import cu_cli.drift.compute as dc

    def eio(*a, **k):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/some/base/unet.safetensors")

    monkeypatch.setattr(dc, "run_drift", eio)
    r = runner.invoke(app, ["drift", state, "--base", tiny_sd1])
    _one_line_error(r, 1)
    assert "/some/base/unet.safetensors" in r.stderr and "Input/output error" in r.stderr
