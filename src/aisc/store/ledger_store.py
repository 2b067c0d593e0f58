"""The ledger's persistence: append sealed transactions and keep running balances beside them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from aisc.ledger.accounts import Unit
from aisc.ledger.transaction import Posting, SealedTransaction, Transaction, canonical_json, seal
from aisc.ledger.verify import VerificationReport, verify
from aisc.store.db import READ_SNAPSHOT
from aisc.store.tables import LedgerBalance, LedgerHead, LedgerTransaction
from aisc.store.types import utcnow


class LedgerStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._head: LedgerHead | None = None

    def lock(self) -> None:
        """Take the ledger's write lock for the rest of this unit of work (FOR UPDATE on PostgreSQL;
        SQLite's BEGIN IMMEDIATE already holds the database's single write lock)."""
        if self._head is None:
            self._head = self.session.execute(
                select(LedgerHead).where(LedgerHead.id == 1).with_for_update()
            ).scalar_one()

    def snapshot(self) -> None:
        """Read the ledger as of one moment for the rest of this unit of work, however many
        statements that takes, without holding writers up: REPEATABLE READ on PostgreSQL
        (whose default READ COMMITTED lets each statement see newer commits), a deferred
        transaction on SQLite's WAL. Call it before the unit of work's first query; the unit
        of work must then only read."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        else:
            self.session.connection(execution_options={READ_SNAPSHOT: True})

    def balance(self, account: str, unit: Unit) -> int:
        row = self.session.get(LedgerBalance, (account, str(unit)))
        return row.balance if row else 0

    def balances(self, accounts: Iterable[str]) -> dict[str, int]:
        """Current balances of the named accounts, keyed by account (each account has one unit)."""
        names = list(accounts)
        rows = self.session.execute(
            select(LedgerBalance).where(LedgerBalance.account.in_(names))
        ).scalars()
        found = {r.account: r.balance for r in rows}
        return {name: found.get(name, 0) for name in names}

    def append(self, txn: Transaction, now: datetime | None = None) -> SealedTransaction:
        self.lock()
        head = self._head
        assert head is not None
        created = (now or utcnow()).isoformat(timespec="microseconds")
        sealed = seal(txn, head.seq + 1, head.hash, created)
        body = sealed.body()
        self.session.add(
            LedgerTransaction(
                seq=sealed.seq,
                created_at=sealed.created_at,
                kind=sealed.kind,
                memo=sealed.memo,
                refs=canonical_json(body["refs"]),
                postings=canonical_json({"postings": body["postings"]}),
                prev_hash=sealed.prev_hash,
                hash=sealed.hash,
            )
        )
        deltas: dict[tuple[str, str], int] = {}
        for p in sealed.postings:
            key = (p.account, str(p.unit))
            deltas[key] = deltas.get(key, 0) + p.amount
        for (account, unit), delta in deltas.items():
            row = self.session.get(LedgerBalance, (account, unit))
            if row is None:
                row = LedgerBalance(account=account, unit=unit, balance=0)
                self.session.add(row)
            row.balance += delta
        head.seq, head.hash = sealed.seq, sealed.hash
        self.session.flush()
        return sealed

    def head(self) -> tuple[int, str]:
        row = self.session.get(LedgerHead, 1)
        assert row is not None
        return row.seq, row.hash

    def verify(self) -> VerificationReport:
        """Recompute the chain and every balance from the stored transactions, as of one
        moment, and compare them with the stored balances and the head."""
        self.snapshot()
        head_seq, head_hash = self.head()
        report = verify(self.transactions(), self.stored_balances(), head_hash)
        if report.transactions != head_seq:
            # the first transaction the head and the rows disagree on: the first one missing
            # (the last ones deleted) or the first one the head never sealed (rows added)
            report.fail(
                min(report.transactions, head_seq) + 1,
                f"the ledger head says {head_seq} transactions; {report.transactions} are stored",
            )
        return report

    def transactions(self, batch: int = 5000) -> Iterator[SealedTransaction]:
        """All transactions in stored order (by seq), streamed in batches."""
        last = 0
        while True:
            rows = (
                self.session.execute(
                    select(LedgerTransaction)
                    .where(LedgerTransaction.seq > last)
                    .order_by(LedgerTransaction.seq)
                    .limit(batch)
                )
                .scalars()
                .all()
            )
            if not rows:
                return
            for row in rows:
                yield row_to_sealed(row)
            last = rows[-1].seq

    def scheme_balances(self, scheme_id: int) -> dict[tuple[str, Unit], int]:
        prefix = f"scheme:{scheme_id}:"
        rows = self.session.execute(
            select(LedgerBalance).where(LedgerBalance.account.startswith(prefix, autoescape=True))
        ).scalars()
        return {(r.account, Unit(r.unit)): r.balance for r in rows}

    def stored_balances(self) -> dict[tuple[str, Unit], int]:
        rows = self.session.execute(select(LedgerBalance)).scalars()
        return {(r.account, Unit(r.unit)): r.balance for r in rows}


def row_to_sealed(row: LedgerTransaction) -> SealedTransaction:
    """Rebuild the transaction from stored text; a row edited by hand yields a different hash."""
    postings = json.loads(row.postings)["postings"]
    return SealedTransaction(
        seq=row.seq,
        created_at=row.created_at,
        kind=row.kind,
        memo=row.memo,
        refs=json.loads(row.refs),
        postings=tuple(Posting(p["account"], Unit(p["unit"]), int(p["amount"])) for p in postings),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
