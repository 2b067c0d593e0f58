"""Entry point: `aisc serve`, `aisc demo`, `aisc db ...`, `aisc admin ...` and the API commands."""

from __future__ import annotations

import logging

import typer

from aisc import __version__
from aisc.cli import admin, backup, commands, server, sim, slurm
from aisc.cli.output import console

app = typer.Typer(
    name="aisc",
    help="Run a publicly subsidised AI supercomputing centre: apply, review, award, "
    "run jobs, meter, subsidise and invoice.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"aisc {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the server does."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


server.register(app)
admin.register(app)
backup.register(app)
commands.register(app)
sim.register(app)
slurm.register(app)


if __name__ == "__main__":
    app()
