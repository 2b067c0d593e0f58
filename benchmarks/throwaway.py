"""A database that exists for one benchmark run: a new one on the PostgreSQL server `url`
names (dropped afterwards), or a SQLite file in `folder`."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url


def throwaway_database(
    url: str | None, folder: Path, prefix: str = "aisc_bench"
) -> tuple[str, Callable[[], None]]:
    """The new database's URL, and how to drop it."""
    if url and make_url(url).get_backend_name() == "postgresql":
        import psycopg

        admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        return make_url(url).set(database=name).render_as_string(hide_password=False), drop
    return f"sqlite:///{folder}/{prefix}.db", lambda: None
