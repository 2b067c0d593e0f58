"""Shared fixtures. The suite runs on SQLite by default and on PostgreSQL when
AISC_TEST_DATABASE_URL names one (scripts/test runs it both ways)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from aisc.api.app import create_app
from aisc.config import Settings
from aisc.ledger.transaction import GENESIS_HASH
from aisc.runtime import Runtime
from aisc.services import accounts
from aisc.services.context import SYSTEM, Actor
from aisc.store.db import make_engine, make_session_factory
from aisc.store.migrate import upgrade
from aisc.store.tables import Base
from aisc.store.uow import UnitOfWork
from tests.servers import serve_in_thread

UowFactory = Callable[[], UnitOfWork]


def _create_pg_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A throwaway database per test session, so runs never see each other's rows."""
    import psycopg

    url = make_url(admin_url)
    name = f"aisc_test_{uuid.uuid4().hex[:10]}"
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    admin = os.environ.get("AISC_TEST_DATABASE_URL")
    if admin and make_url(admin).get_backend_name() == "postgresql":
        url, drop = _create_pg_database(admin)
        upgrade(url)
        try:
            yield url
        finally:
            drop()
    else:
        path = tmp_path_factory.mktemp("db") / "aisc.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


def reset_database(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))
        conn.execute(
            text("INSERT INTO ledger_head (id, seq, hash) VALUES (1, 0, :h)"), {"h": GENESIS_HASH}
        )


@pytest.fixture
def uow_factory(engine: Engine) -> UowFactory:
    reset_database(engine)
    factory = make_session_factory(engine)
    return lambda: UnitOfWork(factory)


@pytest.fixture
def aisc_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


def fresh_runtime(database_url: str, engine: Engine, home: Path, **settings: Any) -> Runtime:
    """A runtime on the emptied test database, with two 8-GPU H800 nodes and no real GPUs."""
    reset_database(engine)
    return Runtime.build(
        Settings(
            home=home,
            database_url=database_url,
            inventory="2x8xH800",
            detect_gpus=False,
            **settings,
        ),
        migrate=False,
    )


@pytest.fixture
def runtime(database_url: str, engine: Engine, tmp_path: Path) -> Iterator[Runtime]:
    rt = fresh_runtime(
        database_url, engine, tmp_path / "aisc-home", controller_interval_s=0.1, kill_grace_s=1.0
    )
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime, run_controller=False)) as c:
        yield c


@pytest.fixture
def live_server(runtime: Runtime) -> Iterator[str]:
    with serve_in_thread(runtime) as url:
        yield url


TokenFor = Callable[[Actor], dict[str, str]]


@pytest.fixture
def auth(runtime: Runtime) -> TokenFor:
    """Authorization headers for an actor, with a freshly issued token."""

    def headers(actor: Actor) -> dict[str, str]:
        token = accounts.issue_token(runtime.uow(), SYSTEM, actor.user_id, "test")
        return {"Authorization": f"Bearer {token}"}

    return headers
