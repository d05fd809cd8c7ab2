"""Kill ``cu erase`` / ``cu merge`` subprocesses at random times and check what is left on disk.

Used by ``tests/test_reliability_faults.py`` and ``tools/reliability_report.py``. One *trial*: start
the command, send SIGKILL or SIGINT after a random delay in ``(0.3 s, 1.1·T)`` (T = the duration of
an uninterrupted run), wait, then check

* nothing partial under the final name: the output is absent, or complete with the baseline payload;
* the inputs (base files, input checkpoints) are byte-identical;
* SIGINT: exit 130 (or 0 if the run had already finished) and no temp file left;
* SIGKILL: exit -9 (or 0); a temp may remain, and the rerun must clean it;
* rerun (uninterrupted, ``--force``): exit 0, the baseline payload hash, no temp left.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERASE_ARGS = ["--kind", "object", "--anchor", "dog", "--concept", "cat", "--steps", "2",
              "--batch", "2", "--anchor-images", "4", "--anchor-steps", "2", "--seed", "7"]


def file_hash(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tree_hashes(paths: list[str]) -> dict[str, str]:
    """sha256 of every file under the given files/folders."""
    out = {}
    for p in paths:
        if os.path.isdir(p):
            for d, _, names in os.walk(p):
                for n in names:
                    out[os.path.join(d, n)] = file_hash(os.path.join(d, n))
        else:
            out[p] = file_hash(p)
    return out


def temps_of(out: str) -> list[str]:
    d, name = os.path.split(out)
    return sorted(e for e in os.listdir(d) if e.startswith(f".{name}.cu-tmp-")
                  or e.startswith(f"{name}.tmp-"))


@dataclass
class Scenario:
    """A command line writing ``out`` from ``inputs``; ``argv(out)`` builds it."""

    name: str
    args: list[str]
    inputs: list[str]
    out: str
    env: dict = field(default_factory=dict)

    def argv(self, force: bool = False, quiet: bool = True) -> list[str]:
        return [sys.executable, os.path.join(ROOT, "tests", "fault_entry.py"), *self.args,
                *(["-q"] if quiet else []), "-o", self.out] + (["--force"] if force else [])

    def run(self, force: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
        """An uninterrupted run, not quiet (its stale-temp warning is checked)."""
        return subprocess.run(self.argv(force, quiet=False), env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)


def make_env(workdir: str) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=ROOT, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               CU_CACHE_DIR=os.path.join(workdir, "cu-cache"),
               XDG_CACHE_HOME=os.path.join(workdir, "xdg"), HF_HOME=os.path.join(workdir, "hf"),
               OMP_NUM_THREADS="1", NO_COLOR="1")
    return env


def erase_scenario(base_dir: str, workdir: str) -> Scenario:
    return Scenario("erase", ["erase", "--base", base_dir, *ERASE_ARGS], [base_dir],
                    os.path.join(workdir, "erased.safetensors"), make_env(workdir))


def merge_scenario(base_dir: str, inputs: list[str], workdir: str) -> Scenario:
    return Scenario("merge", ["merge", *inputs, "--base", base_dir, "--method", "ties",
                              "--density", "0.5"], [base_dir, *inputs],
                    os.path.join(workdir, "merged.safetensors"), make_env(workdir))


def payload_of(path: str) -> str:
    from cu_cli.ckpt.format import payload_sha256, read_cu_header

    return payload_sha256(path, read_cu_header(path))


@dataclass
class Baseline:
    payload: str | None = None  # of an uninterrupted run
    seconds: float | None = None


def rerun(sc: Scenario, base: Baseline, left: list[str], problems: list[str], rec: dict) -> None:
    """Uninterrupted rerun with --force: exit 0, the baseline payload, stale temps cleaned."""
    t0 = time.time()
    r = sc.run(force=True)
    dt = time.time() - t0
    rec["rerun_exit"] = r.returncode
    if r.returncode != 0:
        problems.append(f"rerun exit {r.returncode}: {r.stderr.strip()[-300:]}")
        return
    got = payload_of(sc.out)
    if base.payload is None:
        base.payload, base.seconds = got, dt
    elif got != base.payload:
        problems.append("rerun payload differs from the uninterrupted run")
    if temps_of(sc.out):
        problems.append(f"rerun left temps {temps_of(sc.out)}")
    stale = [t for t in left if not t.endswith(f"-{rec['pid']}") or rec["signal"] == "SIGKILL"]
    if stale and "stale temporary file" not in r.stderr:
        problems.append("rerun did not report removing the stale temp")
    rec["rerun_cleaned"] = bool(stale) and "stale temporary file" in r.stderr


def trial(sc: Scenario, base: Baseline, sig: int, mode: str, rng: random.Random,
          do_rerun: bool = True) -> dict:
    """One interrupted run: ``mode`` ``"write"`` (signal while the temp is written, not yet
    renamed) or ``"random"`` (after a random delay); then checks and an optional rerun."""
    if os.path.exists(sc.out):
        os.remove(sc.out)
    before = tree_hashes(sc.inputs)
    env = dict(sc.env)
    marker = sc.out + ".paused"
    if os.path.exists(marker):
        os.remove(marker)
    if mode == "write":
        env.update(CU_FAULT_PAUSE=marker, CU_FAULT_NAME=os.path.basename(sc.out))
    p = subprocess.Popen(sc.argv(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    t0 = time.time()
    if mode == "write":
        while not os.path.exists(marker) and p.poll() is None and time.time() - t0 < 120:
            time.sleep(0.02)
        delay = time.time() - t0
    else:
        delay = rng.uniform(0.3, 1.1 * (base.seconds or 5.0))
        time.sleep(delay)
    p.send_signal(sig)
    try:
        stdout, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        stdout, err = p.communicate()
    rc = p.returncode
    problems = []
    if mode == "write" and not os.path.exists(marker):
        problems.append(f"never reached the write (exit {rc}): {err.strip()[-300:]}")
    finished = os.path.exists(sc.out)
    # the command printed its result: the signal came during interpreter shutdown, where Python
    # restores the default handlers (exit -2 then is the OS's, after a complete run)
    done_first = finished and os.path.abspath(sc.out) in stdout
    if finished:
        try:
            got = payload_of(sc.out)
            if base.payload is not None and got != base.payload:
                problems.append("output under the final name differs from the baseline")
        except Exception as e:  # a partial file would fail to parse
            problems.append(f"partial output under the final name ({e})")
        if mode == "write":
            problems.append("output appeared although the write was interrupted")
    if tree_hashes(sc.inputs) != before:
        problems.append("an input changed")
    left = temps_of(sc.out)
    own = [t for t in left if t.endswith(f"-{p.pid}")]
    if sig == signal.SIGINT:
        if rc not in (130, 0) and not (done_first and rc == -signal.SIGINT):
            problems.append(f"SIGINT exit {rc}, expected 130: {err.strip()[-300:]}")
        if rc == 130 and "Traceback" in err:
            problems.append("traceback on SIGINT")
        if own:
            problems.append(f"SIGINT left temps {own}")
    elif rc not in (-signal.SIGKILL, 0):
        problems.append(f"SIGKILL exit {rc}")
    if mode == "write" and sig == signal.SIGKILL and not own:
        problems.append("SIGKILL mid-write left no temp (was the write really interrupted?)")
    if rc == 0 and not finished:
        problems.append("exit 0 without output")
    rec = {"command": sc.name, "signal": signal.Signals(sig).name, "mode": mode,
           "delay_s": round(delay, 2), "exit": rc, "pid": p.pid, "finished_first": done_first,
           "output_complete": finished, "temps_left": len(left), "rerun_exit": None,
           "rerun_cleaned": None}
    if do_rerun:
        rerun(sc, base, left, problems, rec)
    rec["problems"] = problems
    rec["ok"] = not problems
    return rec


FAST_PLAN = [(signal.SIGKILL, "write", True), (signal.SIGINT, "write", False),
             (signal.SIGINT, "random", True)]


def slow_plan(n: int) -> list[tuple[int, str, bool]]:
    """``n`` trials cycling SIGKILL/SIGINT × write/random, each followed by a rerun."""
    combos = [(signal.SIGKILL, "write"), (signal.SIGINT, "write"), (signal.SIGKILL, "random"),
              (signal.SIGINT, "random")]
    return [(*combos[i % 4], True) for i in range(n)]


def run_plan(sc: Scenario, plan, seed: int = 0) -> list[dict]:
    """Trials in order; the first rerun doubles as the uninterrupted baseline (payload, time)."""
    base = Baseline()
    rng = random.Random(seed)
    recs = []
    for sig, mode, do_rerun in plan:
        if mode == "random" and base.seconds is None:
            rec = {}
            rerun(sc, base, [], [], rec | {"pid": -1, "signal": ""})
        recs.append(trial(sc, base, sig, mode, rng, do_rerun))
    for r in recs:
        r["baseline_s"] = round(base.seconds or 0, 2)
    return recs


def make_merge_inputs(base_dir: str, workdir: str) -> list[str]:
    """Two hand-made checkpoints on the base (16 K/V tensors and 10 K tensors), in-process."""
    import torch

    from cu_cli.models.base import resolve_base
    from tests.helpers import kv_keys, make_ckpt

    base = resolve_base(base_dir)
    keys = kv_keys(base)
    shapes = base.shapes()
    g = torch.Generator().manual_seed(0)
    a = make_ckpt(os.path.join(workdir, "in-a.safetensors"), base,
                  {k: torch.randn(shapes[k], generator=g) for k in keys}, ["cat"])
    b = make_ckpt(os.path.join(workdir, "in-b.safetensors"), base,
                  {k: torch.randn(shapes[k], generator=g) for k in keys[:10]}, ["dog"])
    return [a, b]
