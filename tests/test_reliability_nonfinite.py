"""Issue 14 item 2: a NaN/inf never gets ``[ok]``, a score, a gate pass, a copy or bare JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cu_cli._util.errors import CuError, IncompatibleError
from cu_cli.cli.app import app
from tests.rawst import read_raw, set_f32, write_raw


@pytest.fixture(scope="module")
def files(tiny_sd1, tmp_path_factory):
    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(tiny_sd1)
    k = kv_keys(base)[0]
    d = tmp_path_factory.mktemp("nonfinite")
    good = make_ckpt(d / "good.safetensors", base, {k: torch.ones(base.shapes()[k]) * 0.01},
                     ["Bears"])
    header, data = read_raw(good)
    out = {"good": good, "key": k, "dir": d}
    for name, v in (("nan", math.nan), ("inf", math.inf)):
        # hashes recomputed: the value is the only defect
        out[name] = write_raw(d / f"{name}.safetensors", header, set_f32(header, data, k, 3, v))
    return out


def _same(path):
    return open(path, "rb").read()


@pytest.mark.parametrize("which", ["nan", "inf"])
def test_inspect_reports_nonfinite_as_failure(runner, files, which):
    r = runner.invoke(app, ["inspect", files[which]])
    assert r.exit_code == 3, r.output
    assert "[ok]" not in r.stdout and files["key"] in r.stderr and "non-finite" in r.stderr
    r = runner.invoke(app, ["inspect", files[which], "--json"])
    assert r.exit_code == 3
    info = json.loads(r.stdout)
    assert info["integrity"] == "FAILED" and files["key"] in info["problems"][0]
    assert runner.invoke(app, ["inspect", files["good"]]).exit_code == 0


def test_drift_refuses_nan_and_json_is_never_bare_nan(runner, tiny_sd1, files):
    for extra in ([], ["--json"]):
        r = runner.invoke(app, ["drift", files["nan"], "--base", tiny_sd1] + extra)
        assert r.exit_code == 3, r.output
        assert files["key"] in r.stderr and "NaN" not in r.stdout


def test_merge_refuses_nan_input_and_writes_nothing(runner, tiny_sd1, files, tmp_path):
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["merge", files["good"], files["nan"], "--base", tiny_sd1,
                            "--method", "uniform", "-o", str(out)])
    assert r.exit_code == 3 and files["key"] in r.stderr and not out.exists()


@pytest.mark.parametrize("args", [
    ["merge", "GOOD", "--method", "uniform", "--weight", "inf"],
    ["merge", "GOOD", "--method", "task-arithmetic", "--lambda", "nan"],
    ["merge", "GOOD", "--method", "ties", "--density", "nan"],
    ["drift", "GOOD", "--tol", "inf"],
    ["eval", "GOOD", "--guidance", "nan"],
    ["eval", "GOOD", "--guidance", "-inf"],
])
def test_nonfinite_float_options_are_usage_errors(runner, tiny_sd1, files, tmp_path, args):
    args = [files["good"] if a == "GOOD" else a for a in args] + ["--base", tiny_sd1]
    if args[0] == "merge":
        args += ["-o", str(tmp_path / "x.safetensors")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "finite" in r.output
    assert not (tmp_path / "x.safetensors").exists()


def test_merge_config_inf_weight_is_refused(runner, tiny_sd1, files, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"method: uniform\nmodels:\n  - path: {files['good']}\n    weight: .inf\n")
    r = runner.invoke(app, ["merge", "--config", str(cfg), "--base", tiny_sd1,
                            "-o", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2 and "finite" in r.stderr


def test_eval_refuses_nan_state_even_with_a_gate(runner, tiny_sd1, files, monkeypatch):
    from cu_cli.models import classifiers as C

    def factory(arg, domain, classes):
        return C.Classifier("const", list(classes), lambda x: torch.ones(len(x), len(classes)))

    monkeypatch.setitem(C.CLASSIFIERS, "const", {"doc": "test", "factory": factory, "url": None})
    r = runner.invoke(app, ["eval", files["nan"], "--base", tiny_sd1, "--protocol",
                            "unlearncanvas-object", "--classifier", "const", "--seeds", "1",
                            "--steps", "1", "--fail-under", "ua=50", "-q", "--json"])
    assert r.exit_code == 3, r.output
    assert files["key"] in r.stderr and r.stdout == ""


def test_write_refuses_nonfinite_tensor_naming_it(tmp_path):
    from cu_cli.ckpt.format import write_safetensors

    out = tmp_path / "x.safetensors"
    with pytest.raises(CuError, match="unet.bad") as e:
        write_safetensors(str(out), {"unet.ok": torch.ones(2),
                                     "unet.bad": torch.tensor([1.0, float("inf")])}, {})
    assert e.value.exit_code == 1 and not isinstance(e.value, IncompatibleError)
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_nonfinite_naming_the_key(files):
    from cu_cli.ckpt.format import load_tensors

    with pytest.raises(IncompatibleError, match=files["key"]):
        load_tensors(files["nan"])


def test_json_output_refuses_nonfinite(capsys):
    from cu_cli.cli.output import print_json

    with pytest.raises(CuError, match=r"\$\.states\[0\]\.l2"):
        print_json({"states": [{"l2": float("nan")}]}, "drift")
    assert capsys.readouterr().out == ""


def test_gates_never_pass_a_nan_metric():
    from cu_cli._util.errors import UsageError
    from cu_cli.evaluate.metrics import check_gates, parse_gates

    states = [{"path": "a", "metrics": {"ua": float("nan")}}]
    assert check_gates(states, {"ua": 50.0}) != []
    with pytest.raises(UsageError):
        parse_gates("ua=nan")
