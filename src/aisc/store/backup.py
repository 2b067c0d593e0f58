"""Backups of the whole database, and restores that prove the ledger came back intact.

A backup is one tar file: `manifest.json` (what was backed up: aisc's version, the database
kind, the Alembic revision, the time, the ledger's transaction count and head hash, and the
payload's SHA-256) and the payload, either a SQLite database copied with SQLite's online backup
API or a `pg_dump --format=custom` archive. Both are taken from one consistent moment while the
centre keeps running, and the manifest describes exactly that moment.

A restore checks the whole file before it touches the database, refuses a backup of the other
database kind or of a revision this aisc does not know, replaces the database in one
transaction, migrates an older revision up, then recomputes the ledger and compares its head
with the manifest's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from aisc import __version__
from aisc.ledger.verify import VerificationReport
from aisc.store.ledger_store import LedgerStore
from aisc.store.tables import Base, LedgerHead

FORMAT = "aisc-backup/1"
MANIFEST = "manifest.json"
PAYLOADS = {"sqlite": "database.sqlite3", "postgresql": "database.pgdump"}
KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message is one line for the operator."""


@dataclass(frozen=True)
class Manifest:
    database: str
    revision: str
    transactions: int
    head_hash: str
    created_at: str
    aisc_version: str
    payload: str
    sha256: str
    size: int
    format: str = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BackupError(f"its manifest is not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackupError(f"its manifest is not an {FORMAT} manifest")
        text_fields = ("database", "revision", "head_hash", "created_at", "aisc_version")
        number_fields = ("transactions", "size")
        for name in (*text_fields, "payload", "sha256"):
            if not isinstance(data.get(name), str):
                raise BackupError(f"its manifest lacks {name}")
        for name in number_fields:
            if type(data.get(name)) is not int or data[name] < 0:
                raise BackupError(f"its manifest lacks {name}")
        if data["database"] not in PAYLOADS or data["payload"] != PAYLOADS[data["database"]]:
            raise BackupError(f"its manifest names an unknown database {data['database']!r}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class RestoreResult:
    manifest: Manifest
    revision: str
    upgraded_from: str | None
    report: VerificationReport = field(default_factory=VerificationReport)

    @property
    def ok(self) -> bool:
        return self.report.ok


def database_kind(database_url: str) -> str:
    kind = make_url(database_url).get_backend_name()
    if kind not in PAYLOADS:
        raise BackupError(f"cannot back up or restore a {kind} database")
    return kind


# -- backup -----------------------------------------------------------------------------------


def backup(database_url: str, path: Path) -> Manifest:
    """Write a consistent backup of the database to `path`, replacing it atomically."""
    kind = database_kind(database_url)
    path = Path(path)
    if path.is_dir():
        raise BackupError(f"{path} is a directory")
    if kind == "sqlite" and path.resolve() == _sqlite_path(database_url).resolve():
        raise BackupError(f"{path} is the database itself; name another file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".aisc-backup-") as work:
            payload = Path(work) / PAYLOADS[kind]
            if kind == "sqlite":
                revision, seq, head = _sqlite_copy(_sqlite_path(database_url), payload)
            else:
                revision, seq, head = _pg_dump(database_url, payload)
            digest, size = _digest(payload)
            manifest = Manifest(
                database=kind,
                revision=revision,
                transactions=seq,
                head_hash=head,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                aisc_version=__version__,
                payload=PAYLOADS[kind],
                sha256=digest,
                size=size,
            )
            _pack(manifest, payload, path)
    except OSError as exc:
        raise BackupError(f"cannot write {path}: {exc.strerror or exc}") from None
    return manifest


def _sqlite_copy(source: Path, copy: Path) -> tuple[str, int, str]:
    if not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    # read-only, so a mistyped path is never created; the one-step backup copies a single
    # consistent snapshot while the server (WAL) keeps writing
    src = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        dst = sqlite3.connect(copy)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {source}: {exc}") from None
    finally:
        src.close()
    # the manifest describes the copy itself, not the live database that moved on
    engine = create_engine(f"sqlite:///{copy}", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return _read_state(conn, str(source))
    finally:
        engine.dispose()


def _pg_dump(database_url: str, payload: Path) -> tuple[str, int, str]:
    pg_dump = _tool("pg_dump")
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                # pg_dump reads the snapshot this transaction exports, so the manifest's head
                # is exactly the dump's, however many jobs settle meanwhile
                snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                state = _read_state(conn, _display(database_url))
                conninfo, env = _libpq(database_url)
                _run(
                    [
                        pg_dump,
                        "--format=custom",
                        "--no-password",
                        f"--snapshot={snapshot}",
                        f"--file={payload}",
                        f"--dbname={conninfo}",
                    ],
                    env,
                    "pg_dump",
                )
                return state
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot read {_display(database_url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()


def _read_state(conn: Connection, where: str) -> tuple[str, int, str]:
    tables = set(inspect(conn).get_table_names())
    if not {"alembic_version", LedgerHead.__tablename__} <= tables:
        raise BackupError(f"{where} holds no aisc database (run `aisc db upgrade` first)")
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    head = conn.execute(select(LedgerHead.seq, LedgerHead.hash).where(LedgerHead.id == 1)).first()
    if revision is None or head is None:
        raise BackupError(f"{where} holds no aisc database (run `aisc db upgrade` first)")
    return str(revision), int(head.seq), str(head.hash)


def _pack(manifest: Manifest, payload: Path, path: Path) -> None:
    """The manifest first, so it can be read without going through the payload."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                raw = manifest.to_json()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime = len(raw), int(datetime.now(UTC).timestamp())
                tar.addfile(_private(info), io.BytesIO(raw))
                tar.add(payload, arcname=manifest.payload, recursive=False, filter=_private)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _private(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Nothing of who ran the backup; readable by its owner only, as the database is."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


# -- restore ----------------------------------------------------------------------------------


def read_manifest(path: Path) -> Manifest:
    """The manifest of a backup file, without reading its payload."""
    with _open(Path(path)) as tar:
        return _manifest(tar, Path(path))


def restore(path: Path, database_url: str, force: bool = False) -> RestoreResult:
    """Replace the database with the backup at `path`, migrate it up, and verify its ledger.

    Nothing is written until the whole file has been checked; the replacement is one
    transaction, so a failure leaves the database as it was. Refuses a database that already
    holds data unless `force`."""
    path = Path(path)
    kind = database_kind(database_url)
    heads, known = _revisions(database_url)
    with _open(path) as tar:
        manifest = _manifest(tar, path)
        if manifest.database != kind:
            raise BackupError(
                f"{path} is a backup of a {KIND_NAMES[manifest.database]} database; "
                f"the configured database is {KIND_NAMES[kind]}"
            )
        if manifest.revision not in known:
            raise BackupError(
                f"{path} is at database revision {manifest.revision}, which aisc "
                f"{__version__} does not know: restore it with the aisc that made it "
                f"({manifest.aisc_version}) or a newer one"
            )
        target = _sqlite_path(database_url) if kind == "sqlite" else None
        try:
            _replace(tar, manifest, path, database_url, target, force)
        except OSError as exc:
            raise BackupError(f"cannot restore {path}: {exc.strerror or exc}") from None
    upgraded_from = None
    if manifest.revision not in heads:
        from aisc.store.migrate import upgrade

        try:
            upgrade(database_url)
        except Exception as exc:
            raise BackupError(
                f"restored revision {manifest.revision}, but migrating it up failed "
                f"({_first_line(exc)}); run `aisc db upgrade`"
            ) from None
        upgraded_from = manifest.revision
    revision, report = _verify(database_url, manifest)
    return RestoreResult(manifest, revision, upgraded_from, report)


def _replace(
    tar: tarfile.TarFile,
    manifest: Manifest,
    path: Path,
    database_url: str,
    target: Path | None,
    force: bool,
) -> None:
    # a SQLite payload is unpacked beside its target (room for one copy is needed there anyway)
    work_dir = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        work_dir = target.parent
    with tempfile.TemporaryDirectory(dir=work_dir, prefix=".aisc-restore-") as work:
        payload = Path(work) / manifest.payload
        _extract(tar, manifest, payload, path)
        if target is not None:
            _check_sqlite_payload(payload, manifest, path)
        else:
            _run([_tool("pg_restore"), "--list", str(payload)], None, "pg_restore", path)
        _refuse_data(database_url, force)
        if target is not None:
            _sqlite_restore(payload, target)
        else:
            _pg_restore(payload, database_url)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tarfile.TarFile]:
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    try:
        with tarfile.open(path, mode="r:") as tar:
            yield tar
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError(f"{path} is not a readable aisc backup ({exc})") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None


def _manifest(tar: tarfile.TarFile, path: Path) -> Manifest:
    try:
        member = tar.getmember(MANIFEST)
    except KeyError:
        raise BackupError(f"{path} is not an aisc backup: it has no {MANIFEST}") from None
    stream = tar.extractfile(member) if member.isfile() else None
    if stream is None:
        raise BackupError(f"{path} is not an aisc backup: it has no {MANIFEST}")
    try:
        return Manifest.from_json(stream.read())
    except BackupError as exc:
        raise BackupError(f"{path} is not an aisc backup: {exc}") from None


def _extract(tar: tarfile.TarFile, manifest: Manifest, dest: Path, path: Path) -> None:
    """Copy the payload out, checking its size and SHA-256 against the manifest."""
    try:
        member = tar.getmember(manifest.payload)
    except KeyError:
        raise BackupError(f"{path} is damaged: it lacks {manifest.payload}") from None
    stream = tar.extractfile(member) if member.isfile() else None
    if stream is None:
        raise BackupError(f"{path} is damaged: {manifest.payload} is not a file")
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if size != manifest.size or digest.hexdigest() != manifest.sha256:
        raise BackupError(
            f"{path} is damaged: {manifest.payload} does not match the checksum in its manifest"
        )


def _check_sqlite_payload(payload: Path, manifest: Manifest, path: Path) -> None:
    try:
        conn = sqlite3.connect(payload)
        try:
            result = conn.execute("PRAGMA integrity_check").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{path} is damaged: {exc}") from None
    if result is None or result[0] != "ok":
        raise BackupError(f"{path} is damaged: {result[0] if result else 'unreadable'}")
    engine = create_engine(f"sqlite:///{payload}", poolclass=NullPool)
    try:
        with engine.connect() as conn2:
            state = _read_state(conn2, str(path))
    finally:
        engine.dispose()
    if state != (manifest.revision, manifest.transactions, manifest.head_hash):
        raise BackupError(f"{path} is damaged: its database does not match its manifest")


def _refuse_data(database_url: str, force: bool) -> None:
    if force:
        return
    engine = _engine(database_url)
    try:
        with engine.connect() as conn:
            held = _held_data(conn)
    except SQLAlchemyError as exc:
        raise BackupError(f"cannot open {_display(database_url)}: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    if held:
        raise BackupError(
            f"{_display(database_url)} already holds data ({held}); "
            "pass --force to replace it with the backup"
        )


def _held_data(conn: Connection) -> str:
    """What the database holds beyond an empty schema, in words; empty when nothing."""
    present = set(inspect(conn).get_table_names())
    held = []
    if LedgerHead.__tablename__ in present:
        seq = conn.execute(select(LedgerHead.seq).where(LedgerHead.id == 1)).scalar()
        if seq:
            held.append(f"{seq} ledger transactions")
    for table in Base.metadata.sorted_tables:
        if table.name not in present or table.name == LedgerHead.__tablename__:
            continue
        if conn.execute(select(text("1")).select_from(table).limit(1)).first():
            held.append(table.name)
    if len(held) > 4:
        held = [*held[:4], f"{len(held) - 4} more tables"]
    return ", ".join(held)


def _sqlite_restore(payload: Path, target: Path) -> None:
    # the backup API writes the whole copy into the target as one transaction under its write
    # lock: other connections see the old database or the new one, and a failure rolls back
    try:
        src = sqlite3.connect(payload)
        try:
            dst = sqlite3.connect(target, timeout=30)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"restoring into {target} failed, nothing changed: {exc}") from None


def _pg_restore(payload: Path, database_url: str) -> None:
    """pg_restore turns the archive into SQL; psql runs it after dropping aisc's tables, all in
    one transaction. pg_restore --clean alone cannot drop tables that a newer revision added,
    whose foreign keys then block it."""
    pg_restore, psql = _tool("pg_restore"), _tool("psql")
    tables = sorted({t.name for t in Base.metadata.sorted_tables} | {"alembic_version"})
    prelude = (
        "SET client_min_messages = warning; DROP TABLE IF EXISTS "
        + ", ".join(f'"{name}"' for name in tables)
        + " CASCADE"
    )
    conninfo, env = _libpq(database_url)
    with tempfile.TemporaryFile() as convert_err, tempfile.TemporaryFile() as load_err:
        convert = subprocess.Popen(
            [
                pg_restore,
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--file=-",
                str(payload),
            ],
            stdout=subprocess.PIPE,
            stderr=convert_err,
        )
        load = subprocess.Popen(
            [
                psql,
                "--no-psqlrc",
                "--quiet",
                "--no-password",
                "--set=ON_ERROR_STOP=1",
                "--single-transaction",
                f"--dbname={conninfo}",
                f"--command={prelude}",
                "--file=-",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=load_err,
            env=env,
        )
        assert convert.stdout is not None and load.stdin is not None
        # The SQL passes through here so that psql sees the end of its input, and commits,
        # only once pg_restore has finished well; otherwise psql is killed mid-transaction
        # and PostgreSQL rolls everything back.
        psql_stopped = False
        try:
            while chunk := convert.stdout.read(CHUNK):
                load.stdin.write(chunk)
        except BrokenPipeError:  # psql stopped at an error; its own message says which
            psql_stopped = True
            convert.kill()
        convert.stdout.close()
        converted = convert.wait() == 0 and not psql_stopped
        if converted:
            with contextlib.suppress(BrokenPipeError):
                load.stdin.close()
        else:
            load.kill()
        load.wait()
        convert_err.seek(0)
        load_err.seek(0)
        convert_msg = convert_err.read().decode(errors="replace")
        load_msg = load_err.read().decode(errors="replace")
    if psql_stopped or (converted and load.returncode != 0):
        why = _error_line(load_msg) or f"psql exit {load.returncode}"
    elif not converted:
        why = _error_line(convert_msg) or f"pg_restore exit {convert.returncode}"
    else:
        return
    raise BackupError(f"restoring into {_display(database_url)} failed, nothing changed: {why}")


def _verify(database_url: str, manifest: Manifest) -> tuple[str, VerificationReport]:
    """The checks `aisc ledger verify` runs, plus: the restored head is the one the manifest
    recorded."""
    from sqlalchemy.orm import Session

    engine = _engine(database_url)
    try:
        with Session(engine) as session:
            ledger = LedgerStore(session)
            report = ledger.verify()
            revision = session.execute(text("SELECT version_num FROM alembic_version")).scalar()
            head_seq, head_hash = ledger.head()
    except SQLAlchemyError as exc:
        raise BackupError(
            f"restored, but reading {_display(database_url)} failed: {_first_line(exc)}"
        ) from None
    finally:
        engine.dispose()
    if (head_seq, head_hash) != (manifest.transactions, manifest.head_hash):
        report.fail(
            None,
            f"the restored ledger head (#{head_seq}, {head_hash[:16]}) is not the backup's "
            f"(#{manifest.transactions}, {manifest.head_hash[:16]})",
        )
    return str(revision), report


def _revisions(database_url: str) -> tuple[set[str], set[str]]:
    """The head revisions and every revision this aisc's migrations know."""
    from alembic.script import ScriptDirectory

    from aisc.store.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(database_url))
    return set(script.get_heads()), {r.revision for r in script.walk_revisions()}


# -- helpers ----------------------------------------------------------------------------------


def _engine(database_url: str) -> Engine:
    from aisc.store.db import make_engine

    return make_engine(database_url)


def _sqlite_path(database_url: str) -> Path:
    name = make_url(database_url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        raise BackupError("only a SQLite database in a file can be backed up or restored")
    return Path(name)


def _libpq(database_url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for PostgreSQL's own tools, and their environment: the
    password goes in PGPASSWORD, never on a command line that other users can read."""
    from psycopg.conninfo import make_conninfo

    url: URL = make_url(database_url)
    params: dict[str, Any] = {
        "host": url.host,
        "port": url.port,
        "user": url.username,
        "dbname": url.database,
    }
    for key, value in url.query.items():  # libpq options such as sslmode or a socket dir
        params[key] = value[-1] if isinstance(value, tuple) else value
    env = dict(os.environ)
    env.pop("PGPASSWORD", None)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None}), env


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(
            f"{name} is not installed: it comes with PostgreSQL's client programs "
            "(the Debian package postgresql-client)"
        )
    return found


def _run(args: list[str], env: dict[str, str] | None, name: str, path: Path | None = None) -> None:
    done = subprocess.run(args, capture_output=True, env=env, check=False)
    if done.returncode != 0:
        why = _error_line(done.stderr.decode(errors="replace")) or f"exit {done.returncode}"
        if path is not None:
            raise BackupError(f"{path} is damaged: {name}: {why}")
        raise BackupError(f"{name} failed: {why}")


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _display(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _error_line(stderr: str) -> str:
    """The first line that says what went wrong, from a PostgreSQL tool's output."""
    # psql prefixes each message with where in its input it was: not the operator's concern
    lines = [
        " ".join(re.sub(r"^psql:[^:]*:\d+: ", "", line).split())
        for line in stderr.splitlines()
        if line.strip()
    ]
    for line in lines:
        if "error" in line.lower() or "fatal" in line.lower():
            return line
    return lines[0] if lines else ""
