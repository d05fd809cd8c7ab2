"""``cu run`` on the tiny SD1 pipeline: settings, results, resume, mismatch detection, --dry-run
equivalence, and a SIGKILL mid-study (issue 15)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cu_cli.cli.app import app
from cu_cli.ckpt.checkpoint import open_checkpoint
from tests.test_eval import fake_classifier  # noqa: F401  (fixture)

ERASE = "{steps: 2, batch: 2, anchor_images: 2, anchor_steps: 1, kind: object, anchor: Horses}"


def write_study(tmp_path, tiny, setting="sequential", every=1, extra="", name="s.yaml"):
    p = tmp_path / name
    p.write_text(f"base: {tiny}\nsetting: {setting}\nseed: 3\n"
                 "requests: [Bears, Birds, Cats]\n"
                 f"erase: {ERASE}\n"
                 f"eval: {{protocol: unlearncanvas-object, classifier: fake, seeds: 1, steps: 1, "
                 f"every: {every}}}\n" + extra)
    return str(p)


def run(runner, study, out, *args):
    r = runner.invoke(app, ["run", study, "-o", str(out), "-q", *args])
    return r


def hashes(results_path) -> list[str]:
    return [s["payload_sha256"] for s in json.load(open(results_path))["steps"]]


@pytest.mark.parametrize("setting", ["sequential", "independent", "simultaneous"])
def test_settings_run_and_record(runner, tmp_path, tiny_sd1, fake_classifier, setting):
    extra = "merge: {method: ties, lambda: 2.0, density: 0.8}\n" if setting == "independent" else ""
    study = write_study(tmp_path, tiny_sd1, setting, extra=extra)
    r = run(runner, study, tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp_path / "out" / "results.json")
    res = json.load(open(tmp_path / "out" / "results.json"))
    steps = res["steps"]
    assert [s["k"] for s in steps] == [1, 2, 3] and res["study"]["setting"] == setting
    last = open_checkpoint(steps[-1]["path"])
    assert last.json("cu.erased") == ["Bears", "Birds", "Cats"]
    if setting == "sequential":
        assert len(last.json("cu.lineage")) == 3
        assert last.json("cu.parents") == [steps[1]["payload_sha256"]]
        # each row names the plan its state was made by
        assert [s["plan_key"] for s in steps] == [
            open_checkpoint(s["path"]).json("cu.lineage")[-1]["key"] for s in steps]
    assert "cu_commit" in res
    if setting == "independent":
        assert steps[-1]["path"].endswith(os.path.join("merged", "03.safetensors"))
        assert last.json("cu.lineage")[-1]["params"]["lambda"] == 2.0
    if setting == "simultaneous":
        assert last.json("cu.lineage")[-1]["concepts"] == ["Bears", "Birds", "Cats"]
    for s in steps:
        assert set(s) >= {"ua", "ra_i", "ra_c", "per_concept", "l2", "l2_vs_parent", "seconds",
                          "peak_rss_mb", "payload_sha256"}
        assert s["l2"] > 0 and "Bears" in s["per_concept"]
    out = tmp_path / "out"
    assert (out / "results.csv").read_text().splitlines()[0].startswith("k,concept,ua")
    md = (out / "report.md").read_text()
    assert "| 3 | Cats |" in md and "retention.png" in md
    for png in ("metrics.png", "drift.png", "retention.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_resume_reuses_and_mismatch_names_the_field(runner, tmp_path, tiny_sd1, fake_classifier,
                                                    monkeypatch):
    study = write_study(tmp_path, tiny_sd1)
    out = tmp_path / "out"
    assert run(runner, study, out).exit_code == 0
    first = hashes(out / "results.json")
    timing = [(s["seconds"], s["erase_seconds"], s["eval_seconds"])
              for s in json.load(open(out / "results.json"))["steps"]]
    import cu_cli.erase.run as R

    calls = []
    real = R.run_erase
    monkeypatch.setattr(R, "run_erase", lambda req, **kw: calls.append(req) or real(req, **kw))
    r = run(runner, study, out)
    assert r.exit_code == 0, r.output
    assert calls == [] and hashes(out / "results.json") == first  # all reused
    again = json.load(open(out / "results.json"))["steps"]
    # a resumed run reports what each step cost when computed, not the time of the reuse
    assert [(s["erase_seconds"], s["eval_seconds"]) for s in again] == [t[1:] for t in timing]
    assert all(abs(s["seconds"] - t[0]) < 1.0 for s, t in zip(again, timing))
    changed = study
    text = open(changed).read().replace("steps: 2,", "steps: 2, lr: 0.001,")
    open(changed, "w").write(text)
    r = run(runner, changed, out)
    assert r.exit_code == 1 and "config.lr" in r.output and "--force" in r.output
    r = run(runner, changed, out, "--force")
    assert r.exit_code == 0, r.output
    assert len(calls) == 3 and hashes(out / "results.json")[0] != first[0]


def _env():
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return env


def test_dry_run_chain_gives_the_same_hashes(runner, tmp_path, tiny_sd1, fake_classifier):
    study = write_study(tmp_path, tiny_sd1, every=0)
    r = run(runner, study, tmp_path / "a")
    assert r.exit_code == 0, r.output
    script = runner.invoke(app, ["run", study, "-o", str(tmp_path / "b"), "--dry-run"]).stdout
    assert script.count("cu erase ") == 3 and "--from" in script
    script = "\n".join(ln for ln in script.splitlines() if not ln.startswith(("cu eval",
                                                                             "cu drift")))
    subprocess.run(["bash", "-c", script], check=True, env=_env(), capture_output=True)
    for s in json.load(open(tmp_path / "a" / "results.json"))["steps"]:
        b = s["path"].replace(str(tmp_path / "a"), str(tmp_path / "b"))
        assert open_checkpoint(b).payload_sha256 == s["payload_sha256"]


def test_bad_study_files_exit_2(runner, tmp_path, tiny_sd1):
    bad = {"nosuch: 1\n": "unknown key nosuch", "setting: parallel\nrequests: [a]\n": "setting",
           "requests: [a]\nerase: {lr: fast}\n": "erase: lr",
           "requests: [a]\nerase: {learning_rate: 1}\n": "erase.learning_rate",
           "sequence: minicanvas-style\nrequests: [a]\n": "exactly one"}
    for i, (text, msg) in enumerate(bad.items()):
        p = tmp_path / f"b{i}.yaml"
        p.write_text(text)
        r = runner.invoke(app, ["run", str(p), "-o", str(tmp_path / f"o{i}"), "-q"])
        assert r.exit_code == 2 and msg in r.output, (text, r.output)


def test_sigkill_mid_study_then_rerun_matches(tmp_path, tiny_sd1):
    study = write_study(tmp_path, tiny_sd1, every=0)
    cmd = [sys.executable, "-m", "cu_cli", "run", study, "-q"]
    subprocess.run(cmd + ["-o", str(tmp_path / "clean")], check=True, env=_env(),
                   capture_output=True)
    want = hashes(tmp_path / "clean" / "results.json")
    out = tmp_path / "killed"
    p = subprocess.Popen(cmd + ["-o", str(out)], env=_env(), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "steps" / "02-birds.safetensors").exists():
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)  # in step 2 or 3: step 1 is done, the rest is not
    p.wait()
    done = os.listdir(out / "steps")
    assert not [f for f in done if f.endswith(".safetensors") and ".tmp" in f]
    subprocess.run(cmd + ["-o", str(out)], check=True, env=_env(), capture_output=True)
    assert hashes(out / "results.json") == want


def test_eval_at_lists_requests_and_rejects_bad_values(tmp_path):
    """``eval: {at: [...]}`` evaluates the listed requests and the last; a non-list is exit 2."""
    from cu_cli._util.errors import UsageError
    from cu_cli.run.study import eval_due, load_study

    assert [k for k in range(1, 13) if eval_due({"at": [1, 3, 6, 9]}, k, 12)] == [1, 3, 6, 9, 12]
    assert [k for k in range(1, 6) if eval_due({"every": 2}, k, 5)] == [2, 4, 5]
    assert not any(eval_due({"every": 0}, k, 4) for k in range(1, 5))
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: minicanvas\nsetting: sequential\nsequence: minicanvas-style\n"
                   "eval: {at: 3}\n")
    with pytest.raises(UsageError, match="eval.at"):
        load_study(str(bad))


def test_mixed_stream_scores_each_domain_with_its_protocol(runner, tmp_path, tiny_sd1,
                                                           fake_classifier):
    """A stream of an object then a style with ``eval.protocol`` a list: each state is scored by
    both protocols on its erased concepts of their domain; the combined UA is over every erased
    concept; report, csv and the dry-run chain carry the per-protocol scores (issue 19 stretch)."""
    p = tmp_path / "mixed.yaml"
    p.write_text(f"base: {tiny_sd1}\nseed: 3\n"
                 "requests: [{concept: Bears, kind: object, anchor: Horses}, "
                 "{concept: Van_Gogh, kind: style}]\n"
                 "erase: {steps: 2, batch: 2, anchor_images: 2, anchor_steps: 1}\n"
                 "eval: {protocol: [unlearncanvas-style, unlearncanvas-object], classifier: fake, "
                 "seeds: 1, steps: 1}\n")
    r = run(runner, str(p), tmp_path / "out")
    assert r.exit_code == 0, r.output
    s1, s2 = json.load(open(tmp_path / "out" / "results.json"))["steps"]
    assert s1["evals"]["unlearncanvas-style"]["erased"] == []
    assert s1["evals"]["unlearncanvas-style"]["ua"] is None
    assert s1["evals"]["unlearncanvas-object"]["erased"] == ["Bears"]
    assert s2["evals"]["unlearncanvas-style"]["erased"] == ["Van_Gogh"]
    obj, sty = s2["evals"]["unlearncanvas-object"], s2["evals"]["unlearncanvas-style"]
    assert s2["ua"] == pytest.approx(
        100 - (obj["per_concept"]["Bears"] + sty["per_concept"]["Van_Gogh"]) / 2)
    assert s2["ra_i"] == pytest.approx((obj["ra_i"] + sty["ra_i"]) / 2)
    assert s2["per_concept"]["Bears"] == obj["per_concept"]["Bears"]
    assert s2["per_concept"]["Van_Gogh"] == sty["per_concept"]["Van_Gogh"]
    out = tmp_path / "out"
    assert "ua@unlearncanvas-object" in (out / "results.csv").read_text().splitlines()[0]
    assert "Per protocol" in (out / "report.md").read_text()
    script = runner.invoke(app, ["run", str(p), "-o", str(tmp_path / "b"), "--dry-run"]).stdout
    evals = [ln for ln in script.splitlines() if ln.startswith("cu eval")]
    assert len(evals) == 4 and sum("--protocol unlearncanvas-object" in ln for ln in evals) == 2
    # cu eval of the mixed state with one domain's protocol: that domain's concept only, a warning
    r = runner.invoke(app, ["eval", s2["path"], "--protocol", "unlearncanvas-object",
                            "--classifier", "fake", "--seeds", "1", "--steps", "1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["states"][0]["erased"] == ["Bears"]
    assert "Van_Gogh" in r.stderr and "not scored" in r.stderr


def test_mixed_protocol_list_must_name_protocols(runner, tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("requests: [a]\neval: {protocol: [minicanvas-style, nosuch]}\n")
    r = runner.invoke(app, ["run", str(p), "-o", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 2 and "eval.protocol" in r.output


def test_seed_shift_moves_every_protocol_seed_and_is_checked(tmp_path):
    """eval seed_shift / cu eval --seed-shift: the protocol's grid on seeds it never used (a
    held-out check); the study key must be an integer (exit 2 otherwise)."""
    from cu_cli._util.errors import UsageError
    from cu_cli.evaluate.protocols import get_protocol
    from cu_cli.evaluate.run import EvalRequest, _override
    from cu_cli.run.study import load_study

    proto = get_protocol("minicanvas-style")
    moved = _override(proto, EvalRequest(seed_shift=100000))
    assert moved.seeds == tuple(s + 100000 for s in proto.seeds)
    assert not set(moved.seeds) & set(proto.seeds)
    assert _override(proto, EvalRequest(seeds=2, seed_shift=7)).seeds == tuple(
        s + 7 for s in proto.seeds[:2])
    assert _override(proto, EvalRequest()).seeds == proto.seeds
    path = tmp_path / "s.yaml"
    path.write_text("base: minicanvas\nsequence: minicanvas-style\neval: {seed_shift: 1000}\n")
    assert load_study(str(path)).eval["seed_shift"] == 1000
    path.write_text("base: minicanvas\nsequence: minicanvas-style\neval: {seed_shift: many}\n")
    with pytest.raises(UsageError, match="seed_shift must be an integer"):
        load_study(str(path))
    path.write_text("base: minicanvas\nsequence: minicanvas-style\neval: {seed_shift: -5}\n")
    with pytest.raises(UsageError, match="seed_shift must be >= 0"):
        load_study(str(path))
