"""Bootstrap commands that work on the database directly, before any token exists."""

from __future__ import annotations

from collections.abc import Callable

import typer

from aisc.cli.output import console, fail
from aisc.config import get_settings
from aisc.domain.errors import DomainError
from aisc.services import accounts
from aisc.services.context import SYSTEM
from aisc.store.uow import UnitOfWork

admin_app = typer.Typer(
    help="Set-up on the database itself (no server needed): the first operator and tokens."
)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


def database_uow() -> Callable[[], UnitOfWork]:
    """Units of work on the configured database, migrated first; one-line failure otherwise."""
    from aisc.store.db import make_engine, make_session_factory
    from aisc.store.migrate import upgrade

    try:
        settings = get_settings()
    except ValueError as exc:
        fail(f"bad configuration: {exc}")
    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url()
    try:
        upgrade(url)
    except Exception as exc:
        fail(f"cannot open the database {url}: {exc}")
    factory = make_session_factory(make_engine(url))
    return lambda: UnitOfWork(factory)


@admin_app.command("create-user")
def create_user(
    name: str = typer.Argument(..., help="Full name."),
    email: str = typer.Argument(..., help="Email address (unique)."),
    role: str = typer.Option("operator", help="applicant, reviewer, operator or funder."),
    org_id: int = typer.Option(None, "--org", help="Organisation id (required for applicants)."),
    slurm_user: str = typer.Option(
        None,
        "--slurm-user",
        help="Their Unix user name on the Slurm cluster (gets associations in their "
        "organisation's allocation accounts).",
    ),
) -> None:
    """Create a user and print a first API token for them."""
    uow = database_uow()
    try:
        user = accounts.create_user(uow(), SYSTEM, name, email, role, org_id, slurm_user)
        token = accounts.issue_token(uow(), SYSTEM, user.id, "admin")
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"user {user.id} ({user.role}) created; API token (shown once):")
    console.print(token, highlight=False, soft_wrap=True)


@admin_app.command("issue-token")
def issue_token(
    email: str = typer.Argument(..., help="The user's email."),
    label: str = typer.Option("", help="A note to recognise the token by."),
) -> None:
    """Issue a new API token for an existing user."""
    from sqlalchemy import select

    from aisc.store.tables import User

    uow = database_uow()
    with uow() as u:
        user = u.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        fail(f"no user with email {email}")
    token = accounts.issue_token(uow(), SYSTEM, user.id, label)
    console.print(token, highlight=False, soft_wrap=True)


@admin_app.command("set-password")
def set_password(
    email: str = typer.Argument(..., help="The user's email."),
    password: str = typer.Option(
        ...,
        prompt=True,
        hide_input=True,
        confirmation_prompt=True,
        envvar="AISC_NEW_PASSWORD",
        help="The new password (asked for when not given; or AISC_NEW_PASSWORD).",
    ),
) -> None:
    """Set a user's password for the web portal; their portal sessions end."""
    from aisc.services import sessions

    uow = database_uow()
    try:
        user = sessions.user_by_email(uow(), email)
        sessions.set_password(uow(), SYSTEM, user.id, password)
    except DomainError as exc:
        fail(exc.detail)
    console.print(f"password set for {user.email}; they can sign in to the portal")
