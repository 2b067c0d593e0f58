"""Backups and restores on the suite's database (SQLite, or PostgreSQL with pg_dump): the
restored ledger verifies and is the one backed up; bad files and wrong targets change nothing."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from aisc.cli.main import app
from aisc.ledger.transaction import GENESIS_HASH
from aisc.services import allocations, audit
from aisc.store.backup import BackupError, _libpq, backup, read_manifest, restore
from aisc.store.db import make_engine
from aisc.store.migrate import alembic_config, current_revision, upgrade
from aisc.store.tables import Allocation, Base, Job, User
from tests.builders import Centre, award, build_centre, charged_job
from tests.conftest import UowFactory, _create_pg_database

NewDatabase = Callable[[], str]


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    """Two awards, settled jobs on both, one allocation closed."""
    centre = build_centre(uow_factory)
    hku = award(centre, "HKU")
    cuhk = award(centre, "CUHK", rate_bp=9000, reason="exceptional")
    charged_job(centre, "HKU", hku, gpus=2, seconds=1234)
    charged_job(centre, "CUHK", cuhk, gpus=8, seconds=99)
    charged_job(centre, "HKU", hku, gpus=1, seconds=600)
    allocations.close_allocation(centre.uow(), centre.operator, cuhk)
    return centre


@pytest.fixture
def kind(engine: Engine) -> str:
    return engine.dialect.name


@pytest.fixture
def new_database(database_url: str, tmp_path: Path) -> Iterator[NewDatabase]:
    """Empty databases of the suite's kind, dropped afterwards."""
    drops: list[Callable[[], None]] = []
    count = 0

    def make() -> str:
        nonlocal count
        count += 1
        if make_url(database_url).get_backend_name() == "postgresql":
            url, drop = _create_pg_database(database_url)
            drops.append(drop)
            return url
        return f"sqlite:///{tmp_path / f'other{count}.db'}"

    yield make
    for drop in drops:
        drop()


def state(url: str) -> dict[str, object]:
    """What a backup holds and a refused restore must leave exactly as it was."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "head": tuple(conn.execute(text("SELECT seq, hash FROM ledger_head")).one()),
                "transactions": conn.scalar(text("SELECT COUNT(*) FROM ledger_transactions")),
                "balances": sorted(
                    conn.execute(text("SELECT account, unit, balance FROM ledger_balances")).all()
                ),
                "allocations": conn.scalars(select(Allocation.id).order_by(Allocation.id)).all(),
                "jobs": conn.scalar(select(func.count()).select_from(Job)),
                "users": conn.scalar(select(func.count()).select_from(User)),
            }
    finally:
        engine.dispose()


def head_revision(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def schema_diff(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def repack(source: Path, dest: Path, payload: bytes | None = None, **manifest: object) -> None:
    """A backup file like `source`, with its payload and manifest fields replaced."""
    with tarfile.open(source) as tar:
        meta = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        body = tar.extractfile(meta["payload"]).read()  # type: ignore[union-attr]
    body = body if payload is None else payload
    meta.update(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    meta.update(manifest)
    with tarfile.open(dest, "w") as tar:
        for name, data in (("manifest.json", json.dumps(meta).encode()), (meta["payload"], body)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- backup and restore -----------------------------------------------------------------------


def test_a_restore_brings_back_the_backed_up_ledger_and_drops_later_rows(
    centre: Centre, database_url: str, kind: str, engine: Engine, tmp_path: Path
) -> None:
    file = tmp_path / "backups" / "centre.aisc"
    manifest = backup(database_url, file)
    before = state(database_url)
    assert manifest.database == kind
    assert manifest.revision == current_revision(database_url) == head_revision(database_url)
    assert (manifest.transactions, manifest.head_hash) == before["head"]
    assert manifest.transactions == before["transactions"] >= 10
    assert read_manifest(file) == manifest
    assert file.stat().st_mode & 0o077 == 0, "a backup holds password and token hashes"
    assert [p.name for p in file.parent.iterdir()] == ["centre.aisc"], "no temporary files left"

    # after the backup: a new award with a settled job, then a transaction destroyed
    later = award(centre, "PolyU")
    charged_job(centre, "PolyU", later, gpus=4, seconds=30)
    with engine.begin() as conn:
        conn.execute(
            text(
                "DELETE FROM ledger_transactions "
                "WHERE seq = (SELECT MAX(seq) FROM ledger_transactions)"
            )
        )
    assert not audit.verify_ledger(centre.uow(), centre.funder).ok

    result = restore(file, database_url, force=True)

    assert result.ok, result.report.problems
    assert result.upgraded_from is None and result.revision == manifest.revision
    assert state(database_url) == before
    report = audit.verify_ledger(centre.uow(), centre.funder)
    assert report.ok, report.problems
    assert (report.transactions, report.head_hash) == (manifest.transactions, manifest.head_hash)
    with centre.uow() as uow:
        assert uow.session.get(Allocation, later) is None
    assert schema_diff(database_url) == []


def test_a_backup_restores_into_a_new_database(
    centre: Centre, database_url: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    file = tmp_path / "centre.aisc"
    manifest = backup(database_url, file)
    blank, migrated = new_database(), new_database()
    upgrade(migrated)  # `aisc db upgrade` on a new machine leaves an empty schema: no --force

    for target in (blank, migrated):
        result = restore(file, target)
        assert result.ok, result.report.problems
        assert state(target) == state(database_url)
        assert result.report.head_hash == manifest.head_hash
        assert schema_diff(target) == []


def test_a_database_with_data_is_not_replaced_without_force(
    centre: Centre, database_url: str, tmp_path: Path
) -> None:
    file = tmp_path / "centre.aisc"
    backup(database_url, file)
    award(centre, "PolyU")
    before = state(database_url)

    with pytest.raises(BackupError, match=r"already holds data \(\d+ ledger transactions.*--force"):
        restore(file, database_url)

    assert state(database_url) == before


def test_the_backup_is_of_one_moment_whatever_the_server_writes_after(
    centre: Centre, database_url: str, tmp_path: Path
) -> None:
    """The manifest describes the copy, not the live database read again afterwards."""
    first = backup(database_url, tmp_path / "one.aisc")
    award(centre, "PolyU")
    second = backup(database_url, tmp_path / "one.aisc")  # replaces the first, atomically

    assert second.transactions > first.transactions
    assert read_manifest(tmp_path / "one.aisc") == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.aisc"]


def test_a_backup_is_refused_where_it_would_replace_the_database_or_a_directory(
    centre: Centre, database_url: str, kind: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    before = state(database_url)
    with pytest.raises(BackupError, match="is a directory"):
        backup(database_url, tmp_path)
    if kind == "sqlite":
        with pytest.raises(BackupError, match="is the database itself"):
            backup(database_url, Path(make_url(database_url).database or ""))
    assert state(database_url) == before

    with pytest.raises(BackupError, match=r"(holds no aisc database|no SQLite database at)"):
        backup(new_database(), tmp_path / "nothing.aisc")
    assert not (tmp_path / "nothing.aisc").exists()


# -- refusals ---------------------------------------------------------------------------------


def _missing(good: Path, bad: Path) -> None:
    pass


def _garbage(good: Path, bad: Path) -> None:
    bad.write_bytes(b"this is not a backup\n" * 100)


def _truncated(good: Path, bad: Path) -> None:
    data = good.read_bytes()
    bad.write_bytes(data[: len(data) // 2])


def _payload_altered(good: Path, bad: Path) -> None:
    data = bytearray(good.read_bytes())
    with tarfile.open(good) as tar:
        member = tar.getmember(read_manifest(good).payload)
    middle = member.offset_data + member.size // 2
    data[middle] ^= 0xFF
    bad.write_bytes(bytes(data))


def _no_manifest(good: Path, bad: Path) -> None:
    with tarfile.open(good) as src, tarfile.open(bad, "w") as dst:
        member = src.getmember(read_manifest(good).payload)
        dst.addfile(member, src.extractfile(member))


def _manifest_not_json(good: Path, bad: Path) -> None:
    with tarfile.open(bad, "w") as dst:
        info = tarfile.TarInfo("manifest.json")
        info.size = 5
        dst.addfile(info, io.BytesIO(b"{oops"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_missing, "no backup file at"),
        (_garbage, "is not a readable aisc backup"),
        (_truncated, "(is not a readable aisc backup|is damaged)"),
        (_payload_altered, "is damaged: .* does not match the checksum in its manifest"),
        (_no_manifest, "is not an aisc backup: it has no manifest.json"),
        (_manifest_not_json, "is not an aisc backup: its manifest is not JSON"),
    ],
)
def test_a_missing_or_damaged_backup_changes_nothing(
    centre: Centre,
    database_url: str,
    tmp_path: Path,
    damage: Callable[[Path, Path], None],
    message: str,
) -> None:
    good, bad = tmp_path / "good.aisc", tmp_path / "bad.aisc"
    backup(database_url, good)
    damage(good, bad)
    award(centre, "PolyU")
    before = state(database_url)

    with pytest.raises(BackupError, match=message) as refused:
        restore(bad, database_url, force=True)

    assert "\n" not in str(refused.value)
    assert state(database_url) == before


def test_a_backup_of_the_other_database_kind_is_refused(
    centre: Centre, database_url: str, kind: str, tmp_path: Path
) -> None:
    file = tmp_path / "centre.aisc"
    backup(database_url, file)
    other_sqlite = tmp_path / "elsewhere" / "aisc.db"
    other = (
        f"sqlite:///{other_sqlite}"
        if kind == "postgresql"
        else "postgresql+psycopg://aisc@127.0.0.1:1/nothing-answers-here"
    )
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    expected = (
        f"is a backup of a {names[kind]} database; the configured database is "
        f"{names['sqlite' if kind == 'postgresql' else 'postgresql']}"
    )

    with pytest.raises(BackupError, match=expected):
        restore(file, other, force=True)

    assert not other_sqlite.parent.exists(), "refused before anything was created"


def test_a_backup_from_a_newer_aisc_is_refused(
    database_url: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    newer, target = new_database(), new_database()
    upgrade(newer)
    engine = make_engine(newer)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    file = tmp_path / "newer.aisc"
    assert backup(newer, file).revision == "9999"

    with pytest.raises(BackupError, match=r"at database revision 9999, which aisc .* not know"):
        restore(file, target)

    assert tables(target) == set()


def test_a_backup_at_an_older_revision_is_migrated_up(
    centre: Centre, database_url: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    """Over a database at the newest revision: the newer tables go too, then migrations run."""
    script = ScriptDirectory.from_config(alembic_config(database_url))
    head = head_revision(database_url)
    older = script.get_revision(head).down_revision
    assert isinstance(older, str)
    old = new_database()
    upgrade(old, older)
    file = tmp_path / "old.aisc"
    assert backup(old, file).revision == older

    result = restore(file, database_url, force=True)

    assert result.ok, result.report.problems
    assert (result.upgraded_from, result.revision) == (older, head)
    assert current_revision(database_url) == head
    assert schema_diff(database_url) == []
    restored = state(database_url)
    assert restored["head"] == (0, GENESIS_HASH)
    assert restored["users"] == 0 and restored["allocations"] == []


def test_a_restore_that_fails_leaves_the_database_as_it_was(
    centre: Centre, database_url: str, kind: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    """The file is whole and matches its manifest, but its database cannot be loaded."""
    good, bad = tmp_path / "good.aisc", tmp_path / "bad.aisc"
    backup(database_url, good)
    other = new_database()
    if kind == "postgresql":
        # a table whose type lives in a schema the dump leaves out: loading fails midway,
        # after every aisc table has been dropped in the same transaction
        engine = make_engine(other)
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA elsewhere"))
            conn.execute(text("CREATE TYPE elsewhere.mood AS ENUM ('fine')"))
            conn.execute(text("CREATE TABLE public.feelings (mood elsewhere.mood)"))
        engine.dispose()
        dump = tmp_path / "partial.pgdump"
        libpq_url = make_url(other).set(drivername="postgresql").render_as_string(False)
        subprocess.run(
            ["pg_dump", "--format=custom", "--schema=public", f"--file={dump}", libpq_url],
            check=True,
        )
        repack(good, bad, dump.read_bytes())
        message = 'failed, nothing changed: ERROR: schema "elsewhere" does not exist$'
    else:
        # a sound SQLite database, but not the one the manifest describes
        upgrade(other)
        repack(good, bad, Path(make_url(other).database or "").read_bytes())
        message = "is damaged: its database does not match its manifest"
    before = state(database_url)

    with pytest.raises(BackupError, match=message):
        restore(bad, database_url, force=True)

    assert state(database_url) == before
    assert "feelings" not in tables(database_url)
    report = audit.verify_ledger(centre.uow(), centre.funder)
    assert report.ok and report.transactions == before["transactions"]


def test_postgresql_tools_get_the_password_in_the_environment_only() -> None:
    conninfo, env = _libpq(
        "postgresql+psycopg://aisc:s%40cret%20pw@db.example:5433/centre?sslmode=require"
    )
    assert "s@cret" not in conninfo and "password" not in conninfo
    assert env["PGPASSWORD"] == "s@cret pw"
    for part in ("host=db.example", "port=5433", "user=aisc", "dbname=centre", "sslmode=require"):
        assert part in conninfo.split()
    assert "PGPASSWORD" not in _libpq("postgresql+psycopg://aisc@db.example/centre")[1]


# -- the command line -------------------------------------------------------------------------


def aisc(database_url: str, home: Path, *args: str) -> Result:
    env = {"AISC_DATABASE_URL": database_url, "AISC_HOME": str(home), "COLUMNS": "300"}
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def one_line_error(result: Result, fragment: str) -> str:
    assert result.exit_code == 1, f"exit {result.exit_code}\n{result.output}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    return lines[0]


def test_the_cli_backs_up_and_restores_and_the_ledger_verifies(
    centre: Centre, database_url: str, tmp_path: Path
) -> None:
    file, home = tmp_path / "centre.aisc", tmp_path / "home"
    head_seq, head_hash = state(database_url)["head"]  # type: ignore[misc]

    done = aisc(database_url, home, "backup", str(file))
    assert done.exit_code == 0, done.output
    assert f"backed up {head_seq} ledger transactions (head {head_hash[:12]}…)" in done.stdout
    assert str(file) in done.stdout

    later = award(centre, "PolyU")
    one_line_error(aisc(database_url, home, "restore", str(file)), "pass --force")
    with centre.uow() as uow:
        assert uow.session.get(Allocation, later) is not None, "the refusal changed nothing"
    one_line_error(aisc(database_url, home, "restore", str(tmp_path / "nope")), "no backup file")

    done = aisc(database_url, home, "restore", str(file), "--force")
    assert done.exit_code == 0, done.output
    assert f"restored {head_seq} ledger transactions (head {head_hash[:12]}…)" in done.stdout
    assert "the ledger verifies" in done.stdout
    # `aisc ledger verify` asks a server; the same verification, in-process:
    report = audit.verify_ledger(centre.uow(), centre.funder)
    assert report.ok, report.problems
    assert (report.transactions, report.head_hash) == (head_seq, head_hash)
    with centre.uow() as uow:
        assert uow.session.get(Allocation, later) is None


def test_the_cli_exits_non_zero_when_the_restored_ledger_does_not_verify(
    centre: Centre, database_url: str, engine: Engine, new_database: NewDatabase, tmp_path: Path
) -> None:
    with engine.begin() as conn:  # a past transaction edited by hand before the backup
        conn.execute(text("UPDATE ledger_transactions SET memo = 'edited' WHERE seq = 2"))
    file, home = tmp_path / "centre.aisc", tmp_path / "home"
    assert aisc(database_url, home, "backup", str(file)).exit_code == 0

    line = one_line_error(
        aisc(new_database(), home, "restore", str(file)), "but the ledger does not verify"
    )
    assert "transaction #2 was altered" in line
