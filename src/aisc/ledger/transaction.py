"""Transactions, their canonical form and the hash chain: h_n = SHA-256(h_{n-1} || body)."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aisc.ledger.accounts import Unit

GENESIS_HASH = "0" * 64

RefValue = int | str


@dataclass(frozen=True)
class Posting:
    account: str
    unit: Unit
    amount: int  # signed; each transaction's postings sum to zero per unit

    def to_dict(self) -> dict[str, Any]:
        return {"account": self.account, "unit": str(self.unit), "amount": self.amount}


@dataclass(frozen=True)
class Transaction:
    """An unsealed, balanced transaction: what happened, before it joins the chain."""

    kind: str
    postings: tuple[Posting, ...]
    memo: str = ""
    refs: Mapping[str, RefValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = imbalance(self.postings)
        if problem:
            raise ValueError(f"{self.kind}: {problem}")


@dataclass(frozen=True)
class SealedTransaction:
    """A transaction with its place in the chain. What the store keeps and the export writes."""

    seq: int
    created_at: str  # ISO 8601, UTC
    kind: str
    memo: str
    refs: Mapping[str, RefValue]
    postings: tuple[Posting, ...]
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "created_at": self.created_at,
            "kind": self.kind,
            "memo": self.memo,
            "refs": dict(self.refs),
            "postings": [p.to_dict() for p in self.postings],
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "prev_hash": self.prev_hash, "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SealedTransaction:
        return cls(
            seq=int(data["seq"]),
            created_at=str(data["created_at"]),
            kind=str(data["kind"]),
            memo=str(data.get("memo", "")),
            refs=dict(data.get("refs") or {}),
            postings=tuple(
                Posting(str(p["account"]), Unit(p["unit"]), int(p["amount"]))
                for p in data["postings"]
            ),
            prev_hash=str(data["prev_hash"]),
            hash=str(data["hash"]),
        )


def canonical_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, body: Mapping[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical_json(body)).encode("utf-8")).hexdigest()


def seal(txn: Transaction, seq: int, prev_hash: str, created_at: str) -> SealedTransaction:
    unsealed = SealedTransaction(
        seq=seq,
        created_at=created_at,
        kind=txn.kind,
        memo=txn.memo,
        refs=dict(txn.refs),
        postings=txn.postings,
        prev_hash=prev_hash,
        hash="",
    )
    return SealedTransaction(
        **{**unsealed.__dict__, "hash": chain_hash(prev_hash, unsealed.body())}
    )


def imbalance(postings: Iterable[Posting]) -> str | None:
    """None when the postings sum to zero per unit, else what is wrong."""
    totals: dict[Unit, int] = defaultdict(int)
    count = 0
    for p in postings:
        count += 1
        if not isinstance(p.amount, int) or isinstance(p.amount, bool):
            return f"amount on {p.account} is not a whole number"
        if p.amount == 0:
            return f"zero posting on {p.account}"
        totals[Unit(p.unit)] += p.amount
    if count < 2:
        return "a transaction needs at least two postings"
    unbalanced = {str(u): t for u, t in totals.items() if t != 0}
    if unbalanced:
        return f"postings do not balance: {unbalanced}"
    return None


def build(
    kind: str, legs: Iterable[tuple[str, Unit, int]], memo: str = "", **refs: RefValue
) -> Transaction:
    """A transaction from (account, unit, amount) legs; zero legs are dropped."""
    postings = tuple(Posting(a, u, amt) for a, u, amt in legs if amt != 0)
    return Transaction(kind=kind, postings=postings, memo=memo, refs=refs)
