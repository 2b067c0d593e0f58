"""`aisc slurm sync|import|show`: awards into Slurm accounts and QOS, and a cluster into aisc.
Like `aisc admin`, these work on the database itself and run Slurm's commands on this machine."""

from __future__ import annotations

import getpass
from typing import NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from aisc.backends.slurm import Qos, SlurmCli, SlurmError, SlurmUnavailable
from aisc.cli.admin import database_uow
from aisc.cli.output import console, fail
from aisc.config import get_settings
from aisc.domain.errors import DomainError
from aisc.services import slurm_sync
from aisc.services.context import SYSTEM, utcnow
from aisc.services.slurm_names import SlurmNames

slurm_app = typer.Typer(
    help="The Slurm cluster: sync awards into accounts and QOS, import a cluster, show them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(slurm_app, name="slurm")


def _slurm() -> tuple[SlurmCli, SlurmNames]:
    try:
        settings = get_settings()
    except ValueError as exc:
        fail(f"bad configuration: {exc}")
    try:
        names = SlurmNames(settings.slurm_prefix)
    except ValueError as exc:
        fail(f"AISC_SLURM_PREFIX: {exc}")
    return SlurmCli(settings.slurm_cluster, conf=settings.slurm_conf), names


def _refused(exc: Exception) -> NoReturn:
    if isinstance(exc, SlurmUnavailable):
        fail(f"Slurm is unavailable: {exc}")
    if isinstance(exc, SlurmError):
        fail(f"Slurm refused: {exc}")
    if isinstance(exc, DomainError):
        fail(exc.detail)
    raise exc


@slurm_app.command("sync")
def sync(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would change; change nothing in Slurm."
    ),
) -> None:
    """Make Slurm hold every award: accounts, Fairshare, QOS limits and user associations."""
    cli, names = _slurm()  # first: it reports bad settings
    settings = get_settings()
    uow = database_uow()
    user = settings.slurm_user or getpass.getuser()
    try:
        report = slurm_sync.sync_allocations(uow(), cli, names, user, utcnow(), dry_run=dry_run)
    except (SlurmError, DomainError) as exc:
        _refused(exc)
    if report.in_sync:
        console.print("Slurm is in sync with aisc: nothing to change.")
        return
    if dry_run:
        console.print("Dry run: nothing was changed in Slurm.")
    sections = (
        ("would create" if dry_run else "created", [str(o) for o in report.created]),
        ("drift to correct" if dry_run else "drift corrected", [str(d) for d in report.changed]),
        ("would remove" if dry_run else "removed", [str(o) for o in report.removed]),
    )
    for title, items in sections:
        if items:
            console.print(f"[bold]{title}[/] ({len(items)})")
            for item in items:
                console.print(f"  {escape(item)}", highlight=False, soft_wrap=True)
    if report.failed:
        for line in report.failed:
            console.print(f"  [red]refused[/] {escape(line)}", highlight=False, soft_wrap=True)
        fail(f"Slurm refused {len(report.failed)} command(s); the rest were applied")


@slurm_app.command("import")
def import_(
    email_domain: str = typer.Option(
        ..., "--email-domain", help="Users get the email <unix name>@DOMAIN."
    ),
    category: str = typer.Option(
        "university",
        "--category",
        help="Category of the new organisations: university, research_institute, startup, "
        "enterprise or government.",
    ),
) -> None:
    """Import an existing cluster: top-level accounts become organisations, their users members.

    Nothing in Slurm changes; running it again creates nothing new."""
    cli, names = _slurm()
    uow = database_uow()
    try:
        report = slurm_sync.import_cluster(uow(), SYSTEM, cli, email_domain, category, names)
    except (SlurmError, DomainError) as exc:
        _refused(exc)
    table = Table(title="Organisations")
    for column in ("ID", "Name", "Slurm accounts", ""):
        table.add_column(column)
    for org in report.organisations:
        table.add_row(
            str(org.org_id),
            escape(org.name),
            ", ".join(org.accounts),
            "created" if org.created else "exists",
        )
    console.print(table)
    table = Table(title="Users")
    for column in ("ID", "Slurm user", "Email", "Organisation", ""):
        table.add_column(column)
    for user in report.users:
        table.add_row(
            str(user.user_id),
            user.slurm_user,
            user.email,
            escape(user.organisation),
            "created" if user.created else "exists",
        )
    console.print(table)
    if report.projects:
        table = Table(title="Projects awaiting an award")
        for column in ("Slurm account", "Parent", "Organisation", "Users"):
            table.add_column(column)
        for p in report.projects:
            table.add_row(p.account, p.parent, escape(p.organisation), ", ".join(p.users))
        console.print(table)
    for note in report.skipped:
        console.print(f"skipped: {escape(note)}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(report.created_organisations)} organisation(s) and "
        f"{len(report.created_users)} user(s) created."
    )


def _limit(qos: Qos | None, which: str) -> str:
    if qos is None:
        return ""
    if which == "submit":
        return "" if qos.grp_submit_jobs is None else str(qos.grp_submit_jobs)
    limits = qos.grp_tres_mins if which == "mins" else qos.grp_tres_run_mins
    return slurm_sync.show_tres(limits)


@slurm_app.command("show")
def show() -> None:
    """The accounts aisc manages in Slurm: Fairshare, QOS limits and users."""
    cli, names = _slurm()
    try:
        found = slurm_sync.managed_accounts(cli, names)
    except SlurmError as exc:
        _refused(exc)
    if not found:
        console.print(f"No Slurm accounts named {names.prefix}* on cluster {cli.cluster}.")
        return
    table = Table(title=f"Slurm accounts managed by aisc ({names.prefix}*) on {cli.cluster}")
    for column in (
        "Account",
        "Parent",
        "Fairshare",
        "QOS flags",
        "GrpTRESMins",
        "GrpTRESRunMins",
        "GrpSubmitJobs",
        "Users",
    ):
        table.add_column(column, justify="right" if column == "Fairshare" else "left")
    for a in found:
        table.add_row(
            a.name,
            a.parent,
            a.fairshare,
            ",".join(a.qos.flags) if a.qos else "",
            _limit(a.qos, "mins"),
            _limit(a.qos, "run"),
            _limit(a.qos, "submit"),
            ", ".join(a.users),
        )
    console.print(table)
