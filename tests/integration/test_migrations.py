"""The Alembic migrations create exactly the schema the code declares."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from aisc.store.migrate import current_revision
from aisc.store.tables import Base


def test_migrated_database_matches_the_declared_tables(engine: Engine, database_url: str) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    assert current_revision(database_url) == "0005"


def test_every_declared_table_exists_with_the_ledger_head_row(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as conn:
        head = conn.execute(text("SELECT id FROM ledger_head")).scalars().all()
    assert head == [1], "exactly one ledger head row, whose lock serialises appends"
