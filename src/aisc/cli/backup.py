"""`aisc backup` and `aisc restore`: the configured database, in-process, no server needed."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from aisc.cli.output import console, fail
from aisc.config import get_settings
from aisc.store.backup import KIND_NAMES, BackupError, backup, restore


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)


def _database_url() -> str:
    try:
        settings = get_settings()
    except ValueError as exc:
        fail(f"bad configuration: {exc}")
    return settings.resolved_database_url()


def backup_command(
    file: Path = typer.Argument(..., help="The backup file to write (replaced if it exists)."),
) -> None:
    """Back up the database to FILE with a manifest; safe while the server runs.

    SQLite is copied with its online backup API, PostgreSQL with pg_dump, each from one
    consistent moment."""
    try:
        manifest = backup(_database_url(), file)
    except BackupError as exc:
        fail(str(exc))
    console.print(
        f"backed up {manifest.transactions} ledger transactions "
        f"(head {manifest.head_hash[:12]}…) of the {KIND_NAMES[manifest.database]} database "
        f"at revision {manifest.revision} to {escape(str(file))}",
        highlight=False,
        soft_wrap=True,
    )


def restore_command(
    file: Path = typer.Argument(..., help="A backup made by `aisc backup`."),
    force: bool = typer.Option(
        False, "--force", help="Replace a database that already holds data."
    ),
) -> None:
    """Replace the database with a backup, migrate it up and verify the ledger.

    Stop the server first. The file is checked before anything is written, the replacement is
    one transaction, and the exit status is non-zero unless the restored ledger verifies and
    its head is the one the backup recorded."""
    try:
        result = restore(file, _database_url(), force=force)
    except BackupError as exc:
        fail(str(exc))
    manifest = result.manifest
    migrated = (
        f"; migrated from revision {result.upgraded_from} to {result.revision}"
        if result.upgraded_from
        else ""
    )
    if not result.ok:
        fail(
            f"restored {file} (backed up {manifest.created_at}){migrated}, but the ledger does "
            f"not verify: {'; '.join(result.report.problems[:3])}"
        )
    console.print(
        f"restored {manifest.transactions} ledger transactions (head "
        f"{manifest.head_hash[:12]}…) from {escape(str(file))}, backed up "
        f"{manifest.created_at}{migrated}; the ledger verifies",
        highlight=False,
        soft_wrap=True,
    )
