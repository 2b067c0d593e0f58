"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

READ_SNAPSHOT = "aisc_read_snapshot"
SQLITE_BUSY_TIMEOUT_S = 30


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={
                "timeout": SQLITE_BUSY_TIMEOUT_S,
                "check_same_thread": False,
                "factory": _SqliteConnection,
            },
        )
        _sqlite_serialised_writes(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class _WriterTurn:
    """This process's SQLite writers, one at a time.

    SQLite lets one transaction write at a time and makes the others poll in its busy handler,
    sleeping up to 100 ms between tries, so under load a writer waits far longer than the writes
    ahead of it take. Here a writer of this process waits on a lock and is woken the moment the
    one before it ends. Only a speed-up: SQLite's own lock still decides (and other processes
    still wait in the busy handler).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def take(self) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            return False  # a second connection of the same thread: SQLite decides, as before
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_S):
            return False  # a turn never given back: fall back on SQLite's busy handler
        self._owner = me
        return True

    def give_back(self) -> None:
        self._owner = None
        self._lock.release()


class _SqliteConnection(sqlite3.Connection):
    """Gives its writer's turn back as soon as its transaction ends, however it ends."""

    writers: _WriterTurn | None = None
    holds_turn = False

    def end_turn(self) -> None:
        if self.holds_turn and self.writers is not None:
            self.holds_turn = False
            self.writers.give_back()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.end_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.end_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.end_turn()


def _sqlite_serialised_writes(engine: Engine) -> None:
    """SQLite: WAL, foreign keys, and BEGIN IMMEDIATE so writers queue instead of deadlocking."""
    writers = _WriterTurn()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        if isinstance(dbapi_conn, _SqliteConnection):
            dbapi_conn.writers = writers
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read-only snapshot (see LedgerStore.snapshot) begins deferred: WAL lets it read a
        # consistent state while writers go on. Everything else takes the write lock up front.
        if conn.get_execution_options().get(READ_SNAPSHOT, False):
            conn.exec_driver_sql("BEGIN")
            return
        dbapi_conn = conn.connection.dbapi_connection
        if isinstance(dbapi_conn, _SqliteConnection) and not dbapi_conn.holds_turn:
            dbapi_conn.holds_turn = writers.take()
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            if isinstance(dbapi_conn, _SqliteConnection):
                dbapi_conn.end_turn()
            raise


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
