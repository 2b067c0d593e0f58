"""Persistence: SQLAlchemy 2 tables, Alembic migrations, the unit of work and the ledger store."""
