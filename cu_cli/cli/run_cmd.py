"""``cu run``: a whole study from one YAML file; prints the results file's path."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.output import (DebugOpt, ForceOpt, JsonOpt, QuietOpt, VerboseOpt, err_console,
                               handle_errors, print_json, print_paths, progress_enabled,
                               setup_logging)


@handle_errors
def run_command(
    study: Annotated[str, typer.Argument(help="Study YAML (see docs/run.md).")],
    out: Annotated[Optional[str], typer.Option(
        "-o", "--out", help="Output folder (default: ./<study name>).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the equivalent bash chain of cu commands and exit.")] = False,
    only_step: Annotated[Optional[int], typer.Option(
        "--only-step", help="Run steps 1..N only (earlier ones are reused when they match).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override an erase option of the study, key=value (e.g. steps=1).")] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    debug: DebugOpt = False,
):
    from cu_cli.erase.options import parse_set
    from cu_cli.run.study import load_study

    setup_logging(quiet, verbose)
    st = load_study(study, overrides=parse_set(set_))
    if dry_run:  # paths as given, so the script runs from where the user typed it
        from cu_cli.run.shell import shell_chain

        sys.stdout.write(shell_chain(st, out or st.name, shown_path=study))
        return
    out_dir = os.path.abspath(out or st.name)
    results = _run(st, out_dir, force, only_step, quiet)
    if json_out:
        print_json(results, "run")
    else:
        print_paths(os.path.join(out_dir, "results.json"))


def _run(st, out_dir: str, force: bool, only_step, quiet: bool) -> dict:
    from cu_cli.run.execute import run_study
    from cu_cli.run.report import write_report

    if not progress_enabled(quiet):
        results = run_study(st, out_dir, force=force, only_step=only_step, argv=sys.argv)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("study"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[what]}"), console=err_console(),
                      transient=True) as bar:
            task = bar.add_task("run", total=len(st.requests), what="")

            def progress(kind, k, n, label):
                bar.update(task, completed=k - 1, what=f"request {k}: {label}")

            results = run_study(st, out_dir, force=force, only_step=only_step, argv=sys.argv,
                                progress=progress)
    write_report(results, out_dir)
    return results


run_command.__doc__ = (
    "Run a study from one YAML file: a sequence of requests in the sequential, independent + "
    "merge, or simultaneous setting, each state evaluated and its drift measured; resumable "
    "(an existing output is reused only when its lineage matches the planned step); writes "
    "DIR/results.json, results.csv and report.md with plots.\n\n" + EXIT_CODES_HELP)
