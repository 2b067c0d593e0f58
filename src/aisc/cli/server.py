"""Commands that run in-process on the database: `aisc serve`, `aisc demo`, `aisc db ...`."""

from __future__ import annotations

import gc
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aisc.backends.slurm import SlurmError
from aisc.cli.output import console, fail
from aisc.config import Settings, get_settings
from aisc.domain.errors import DomainError
from aisc.domain.money import format_cents, format_rate
from aisc.logs import configure_logging, logging_config
from aisc.runtime import Runtime
from aisc.services.allocations import AllocationBalance
from aisc.services.schemes import FundPosition

db_app = typer.Typer(help="Database schema: apply migrations, show the current revision.")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(demo)
    app.add_typer(db_app, name="db")


def _settings(**overrides: object) -> Settings:
    try:
        base = get_settings()
    except ValueError as exc:
        fail(f"bad configuration: {exc}")
    return base.model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _runtime(settings: Settings, migrate: bool = True) -> Runtime:
    try:
        return Runtime.build(settings, migrate=migrate)
    except ValueError as exc:  # a bad inventory spec, for one
        fail(str(exc))
    except Exception as exc:  # the database is unreachable, typically
        fail(f"cannot open the database {settings.resolved_database_url()}: {exc}")


def _run_server(runtime: Runtime, host: str, port: int) -> None:
    import uvicorn

    from aisc.api.app import create_app

    settings = runtime.settings
    app = create_app(runtime)
    # What start-up made lives as long as the server. Frozen, the collector no longer walks it
    # in every full collection, each of which would otherwise pause all requests in flight.
    gc.collect()
    gc.freeze()
    # The event loop and the job intake's thread take turns at the interpreter lock. At the
    # default 5 ms a submission's batch waits that long each time it gives the lock up for the
    # database; 1 ms keeps its latency down under load.
    sys.setswitchinterval(0.001)
    uvicorn.run(
        app,
        host=host,
        port=port,
        # the whole process's logging, from here on: the controller's thread included
        log_config=logging_config(settings.log_format, settings.log_level),
        log_level=settings.log_level.lower(),
        access_log=False,  # the app logs each request itself, with its request id
    )


def serve(
    host: str = typer.Option(None, help="Address to listen on (AISC_HOST, or 127.0.0.1)."),
    port: int = typer.Option(None, help="Port to listen on (AISC_PORT, or 8000)."),
    migrate: bool = typer.Option(True, help="Apply database migrations before serving."),
) -> None:
    """Serve the API (docs at /docs) and run the controller that starts and meters jobs."""
    settings = _settings(host=host, port=port)
    runtime = _runtime(settings, migrate)
    console.print(
        f"aisc on http://{settings.host}:{settings.port} (API docs at /docs), "
        f"database {runtime.engine.dialect.name}, {len(runtime.inventory)} nodes"
    )
    try:
        _run_server(runtime, settings.host, settings.port)
    finally:
        runtime.close()


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply the database migrations (creates the schema on a new database)."""
    from aisc.store.migrate import current_revision, upgrade

    settings = _settings()
    url = settings.resolved_database_url()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        upgrade(url, revision)
        console.print(f"database at revision {current_revision(url)}")
    except Exception as exc:
        fail(f"migration failed on {url}: {exc}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's current migration revision."""
    from aisc.store.migrate import current_revision

    url = _settings().resolved_database_url()
    try:
        console.print(current_revision(url) or "empty (run `aisc db upgrade`)")
    except Exception as exc:
        fail(f"cannot read {url}: {exc}")


def demo(
    home: Path = typer.Option(
        Path(".aisc-demo"), help="Directory for the demo's database and job logs (reset each run)."
    ),
    serve_after: bool = typer.Option(
        True, "--serve/--no-serve", help="Keep serving the demo centre after the scenario."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to serve on."),
    port: int = typer.Option(8000, help="Port to serve on."),
) -> None:
    """Seed a demo centre, run real jobs through the controller, print the money, then serve it."""
    from aisc import demo as scenario
    from aisc.services import allocations, audit, invoices, schemes

    settings = _settings(home=home, host=host, port=port)
    if settings.database_url:
        fail("the demo runs on its own SQLite database; unset AISC_DATABASE_URL")
    if home.exists():
        shutil.rmtree(home)
    settings = settings.model_copy(update={"controller_interval_s": 0.2, "detect_gpus": False})
    if settings.backend == "slurm" and "AISC_SLURM_PREFIX" not in os.environ:
        # the demo's own names, cleared each run like its home directory
        settings = settings.model_copy(update={"slurm_prefix": "aisc_demo_"})
    if "AISC_LOG_FORMAT" not in os.environ:
        settings = settings.model_copy(update={"log_format": "text"})  # a person is watching
    # the scenario reports its own progress; serving afterwards logs at the configured level
    quiet = "WARNING" if "AISC_LOG_LEVEL" not in os.environ else settings.log_level
    configure_logging(settings.log_format, quiet)
    runtime = _runtime(settings)
    try:
        if runtime.slurm is not None and runtime.slurm_names is not None:
            from aisc.services.slurm_reset import remove_managed

            remove_managed(runtime.slurm, runtime.slurm_names)
        centre = scenario.seed(runtime)
        for event in centre.events:
            console.print(f"  {event}")
        runtime.sync_slurm()  # on Slurm, the awards become accounts and QOS before jobs go in
        demo_jobs = scenario.submit_jobs(runtime, centre)
        for refusal in demo_jobs.refused:
            console.print(f"  [yellow]{refusal}[/]")
        with Progress(
            TextColumn("running jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("jobs", total=len(demo_jobs.submitted))
            scenario.run_until_done(
                runtime,
                centre,
                demo_jobs,
                lambda done, _total: progress.update(task, completed=done),
                timeout_s=600 if runtime.slurm is not None else 120,  # Slurm counts minutes
            )
        _print_jobs(runtime)
        _print_fund(schemes.fund_positions(runtime.uow(), centre.funder))
        _print_allocations(allocations.list_allocations(runtime.uow(), centre.operator))
        month = datetime.now(UTC).strftime("%Y-%m")
        table = Table(title=f"Invoices for {month}")
        for col in ("organisation", "jobs", "charge", "subsidy", "co-pay (owed)"):
            table.add_column(col, justify="right" if col != "organisation" else "left")
        for key in ("hu", "kiar", "lantern"):
            org_id = centre.applicants[key].org_id
            assert org_id is not None
            inv = invoices.monthly_invoice(runtime.uow(), centre.operator, org_id, month)
            table.add_row(
                inv.org_name,
                str(len(inv.lines)),
                f"HK${format_cents(inv.charge_cents)}",
                f"HK${format_cents(inv.subsidy_cents)}",
                f"HK${format_cents(inv.copay_cents)}",
            )
        console.print(table)
        report = audit.verify_ledger(runtime.uow(), centre.funder)
        console.print(
            ("[green]" if report.ok else "[red]") + "ledger verification: " + report.summary()
        )
        tokens = home / "demo-tokens.json"
        scenario.save_tokens(centre, tokens)
    except DomainError as exc:
        runtime.close()
        fail(f"the demo scenario was refused: {exc.detail}")
    except TimeoutError as exc:
        runtime.close()
        fail(str(exc))
    except SlurmError as exc:
        runtime.close()
        fail(f"Slurm: {exc}")
    if not report.ok:
        runtime.close()
        raise typer.Exit(1)
    if not serve_after:
        runtime.close()
        return
    operator_token = centre.tokens[centre.operator.name]
    console.print(
        f"\nServing the demo centre on http://{host}:{port}: the portal is at / (sign in as "
        f"operator@aisc.example, auditor@itc.example, ada.ng@panel.example or "
        f"mei.chan@harbour-u.example with the password {scenario.DEMO_PASSWORD!r}); "
        "API docs at /docs. "
        f"Tokens for every demo user are in {tokens}. Try, in another terminal:\n"
        f"  export AISC_URL=http://{host}:{port} AISC_TOKEN={operator_token}\n"
        "  aisc queue; aisc nodes; aisc fund; aisc ledger verify"
    )
    try:
        _run_server(runtime, host, port)
    finally:
        runtime.close()


def _print_jobs(runtime: Runtime) -> None:
    from aisc.services import jobs
    from aisc.services.context import SYSTEM

    table = Table(title="Jobs")
    for col in ("id", "name", "gpus", "state", "node", "reason"):
        table.add_column(col)
    for job in sorted(jobs.list_jobs(runtime.uow(), SYSTEM, limit=1000), key=lambda j: j.id):
        colour = {"completed": "green", "failed": "red", "timeout": "yellow"}.get(job.state, "")
        state = f"[{colour}]{job.state}[/]" if colour else job.state
        table.add_row(str(job.id), job.name, str(job.gpus), state, job.node or "", job.reason[:60])
    console.print(table)


def _print_fund(positions: list[FundPosition]) -> None:
    table = Table(title="Fund")
    for col in ("scheme", "total", "available", "committed", "spent", "adds up"):
        table.add_column(col, justify="right" if col != "scheme" else "left")
    for p in positions:
        adds_up = p.total_cents == p.available_cents + p.committed_cents + p.spent_cents
        table.add_row(
            p.name,
            *(
                f"HK${format_cents(v)}"
                for v in (p.total_cents, p.available_cents, p.committed_cents, p.spent_cents)
            ),
            "yes" if adds_up else "[red]NO[/]",
        )
    console.print(table)


def _print_allocations(balances: list[AllocationBalance]) -> None:
    table = Table(title="Allocations")
    for col in (
        "id",
        "project",
        "rate",
        "GPU-h granted",
        "GPU-h used",
        "subsidy committed",
        "subsidy spent",
    ):
        table.add_column(col)
    for b in balances:
        a = b.allocation
        table.add_row(
            str(a.id),
            a.name[:40],
            format_rate(a.rate_bp),
            f"{b.granted_gpu_seconds / 3600:,.0f}",
            f"{b.used_gpu_seconds / 3600:,.4f}",
            f"HK${format_cents(a.commitment_cents)}",
            f"HK${format_cents(b.subsidy_spent_cents)}",
        )
    console.print(table)
