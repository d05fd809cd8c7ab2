"""The ``cu`` Typer app: registers subcommands; heavy imports happen inside command bodies.

``cu --help`` must not import torch (tested).
"""

from __future__ import annotations

import typer

from cu_cli._util.errors import EXIT_CODES_HELP
from cu_cli.cli.basis_cmd import basis_command
from cu_cli.cli.drift_cmd import drift_command
from cu_cli.cli.erase_cmd import erase_command
from cu_cli.cli.eval_cmd import eval_command
from cu_cli.cli.export_cmd import export_app
from cu_cli.cli.inspect_cmd import inspect_command
from cu_cli.cli.merge_cmd import merge_command
from cu_cli.cli.run_cmd import run_command
from cu_cli.cli.sample_cmd import sample_command

app = typer.Typer(
    name="cu",
    help="Continual unlearning for text-to-image diffusion models: erase concepts one request at "
         "a time, with regularizers that keep the rest of the model intact.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)
app.command("erase")(erase_command)
app.command("eval")(eval_command)
app.command("inspect")(inspect_command)
app.command("drift")(drift_command)
app.command("merge")(merge_command)
app.command("project-basis")(basis_command)
app.command("run")(run_command)
app.command("sample")(sample_command)
app.add_typer(export_app, name="export")


def main() -> None:
    """Console entry point: SIGINT/SIGTERM anywhere (parsing, work, printing) exit 130."""
    import sys

    from cu_cli._util.signals import Interrupted, install

    install()
    try:
        app()
    except (Interrupted, KeyboardInterrupt):
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
