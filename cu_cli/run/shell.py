"""``cu run --dry-run``: the same study as a plain bash chain of ``cu`` commands.

Every erase option of the study is passed as ``--set key=value`` (YAML spelling, the values
written so that they parse back to the same numbers), so the chain computes the same payload
hashes as ``cu run`` (tested). Evaluation and drift are printed as the commands a user would run.
"""

from __future__ import annotations

import shlex

from cu_cli.erase.optfield import spell
from cu_cli.run.execute import eval_settings
from cu_cli.run.study import eval_due
from cu_cli.run.steps import expand


def _mixed_evals(step, names: list[str], ev_flags: list[str]) -> list[str]:
    """One ``cu eval`` per protocol (each scores the state's erased concepts of its domain)."""
    q = shlex.quote
    return [" ".join(["cu eval", q(step.state), f"--protocol {q(name)}", *ev_flags, "--json -q",
                      f"> {q(step.state)}.{name}.eval.json"]) for name in names]


def shell_chain(study, out_dir: str, shown_path: str | None = None) -> str:
    q = shlex.quote
    lines = ["#!/usr/bin/env bash", f"# cu run {q(shown_path or study.path)} as a plain chain "
             f"(setting: {study.setting})", "set -euo pipefail",
             f"mkdir -p {q(out_dir)}/steps" + (f" {q(out_dir)}/merged" if study.setting ==
                                                "independent" else "")
             + (f" {q(out_dir)}/bases" if study.project_basis is not None else "")]
    common = [f"--seed {study.seed}", f"--device {q(study.device)}", "-q", "--force"]
    common += [f"--set {q(f'{k}={spell(v)}')}" for k, v in sorted(study.erase.items())]
    base = ([f"--base {q(study.base)}"] if study.base else []) + (
        [f"--base-config {q(study.base_config)}"] if study.base_config else [])
    ev = eval_settings(study)
    ev_flags = [f"--{k} {q(str(ev[k]))}" for k in ("protocol", "seeds", "steps", "guidance",
                                                   "classifier")
                if ev[k] is not None and not isinstance(ev[k], list)]
    steps = expand(study, out_dir)
    for step in steps:
        src = [f"--from {q(step.parent)}"] if step.parent else base
        if step.basis:
            bopts = study.project_basis
            lines.append(" ".join(["cu project-basis", *src, f"--concept {q(step.label)}",
                                   *([f"--top-m {bopts['top_m']}"] if "top_m" in bopts else []),
                                   "-q", "--force", f"-o {q(step.basis)}"]))
        per = ([f"--kind {q(step.kind)}"] if step.kind else []) + (
            [f"--anchor {q(step.anchor)}"] if step.anchor is not None else [])
        lines.append(" ".join(["cu erase", *src, *[f"--concept {q(c)}" for c in step.concepts],
                               *per, *([f"--basis {q(step.basis)}"] if step.basis else []),
                               *common, f"-o {q(step.out)}"]))
        if step.merge_inputs:
            m = study.merge
            lines.append(" ".join(["cu merge", *[q(p) for p in step.merge_inputs],
                                   f"--method {q(m.get('method', 'ties'))}",
                                   *([f"--lambda {m['lambda']}"] if "lambda" in m else []),
                                   *([f"--density {m['density']}"] if "density" in m else []),
                                   *([f"--keys {q(m['keys'])}"] if "keys" in m else []),
                                   "-q", "--force", f"-o {q(step.state)}"]))
        if not eval_due(study.eval, step.k, len(steps)):
            continue
        if isinstance(ev["protocol"], list):
            lines += _mixed_evals(step, ev["protocol"], ev_flags)
        else:
            lines.append(" ".join(["cu eval", q(step.state), *ev_flags, "--json -q",
                                   f"> {q(step.state)}.eval.json"]))
    lines.append(" ".join(["cu drift", *[q(s.state) for s in steps],
                           "--json", f"> {q(out_dir)}/drift.json"]))
    return "\n".join(lines) + "\n"
