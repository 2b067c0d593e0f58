"""The funder's view of the ledger: verification and export for offline checking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

from aisc.domain.errors import ValidationError
from aisc.domain.model import Role
from aisc.ledger.transaction import SealedTransaction
from aisc.ledger.verify import VerificationReport, verify
from aisc.services.context import Actor
from aisc.store.uow import UnitOfWork

EXPORT_FORMAT = "aisc-ledger/1"


def verify_ledger(uow: UnitOfWork, actor: Actor) -> VerificationReport:
    """Recompute the chain and every balance from the transactions; compare with stored balances."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    with uow:
        return uow.ledger.verify()


def export_lines(uow: UnitOfWork, actor: Actor) -> Iterator[str]:
    """JSON Lines: a header, every transaction in order, and a trailer with the head hash."""
    actor.require(Role.OPERATOR, Role.FUNDER)
    with uow:
        uow.ledger.snapshot()  # a centre at work keeps appending while the export streams
        seq, head = uow.ledger.head()
        yield json.dumps({"format": EXPORT_FORMAT, "transactions": seq}) + "\n"
        count = 0
        for txn in uow.ledger.transactions():
            count += 1
            yield json.dumps(txn.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"
        yield json.dumps({"end": True, "transactions": count, "head_hash": head}) + "\n"


def read_export(stream: IO[str]) -> tuple[list[SealedTransaction], dict[str, Any]]:
    """Parse an export; raises ValidationError naming the line that is not a transaction."""
    header: dict[str, Any] = {}
    trailer: dict[str, Any] = {}
    transactions: list[SealedTransaction] = []
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            if "format" in data:
                if data["format"] != EXPORT_FORMAT:
                    raise ValidationError(f"unknown export format {data['format']!r}")
                header = data
            elif data.get("end"):
                trailer = data
            else:
                transactions.append(SealedTransaction.from_dict(data))
        except ValidationError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"line {number} is not a ledger transaction: {exc}") from exc
    if not header:
        raise ValidationError("not an aisc ledger export: the header line is missing")
    return transactions, {"header": header, "trailer": trailer}


def verify_export(stream: IO[str]) -> VerificationReport:
    """Offline verification of an export: the live ledger's checks, from the file alone."""
    transactions, meta = read_export(stream)
    trailer = meta["trailer"]
    report = verify(transactions, expected_head=trailer.get("head_hash"))
    if not trailer:
        report.fail(None, "the export is truncated: its closing line is missing")
    elif (said := trailer.get("transactions")) != len(transactions):
        # as on the live ledger: the first transaction the count and the lines disagree on
        first = min(said, len(transactions)) + 1 if isinstance(said, int) else None
        report.fail(first, f"the export says {said} transactions but holds {len(transactions)}")
    return report
