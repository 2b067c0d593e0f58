"""Unit of work: one database transaction per use case, rolled back unless committed."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from aisc.store.ledger_store import LedgerStore


class UnitOfWork:
    session: Session
    ledger: LedgerStore

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def __enter__(self) -> UnitOfWork:
        self.session = self._factory()
        self.ledger = LedgerStore(self.session)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # close() rolls back anything uncommitted without expiring loaded objects, so the rows a
        # use case returns stay readable after its unit of work ends
        self.session.close()

    def commit(self) -> None:
        self.session.commit()
