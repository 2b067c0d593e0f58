"""Verification: recompute the chain and the balances from the transactions alone.

Used on the live database and, unchanged, on an exported JSON Lines file, so an auditor needs
nothing but the export and this code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aisc.ledger import accounts as acc
from aisc.ledger.accounts import Unit
from aisc.ledger.transaction import GENESIS_HASH, SealedTransaction, chain_hash, imbalance

BalanceKey = tuple[str, Unit]


@dataclass
class FundPosition:
    total: int = 0
    available: int = 0
    committed: int = 0
    spent: int = 0

    @property
    def adds_up(self) -> bool:
        return self.total == self.available + self.committed + self.spent


@dataclass
class VerificationReport:
    transactions: int = 0
    head_hash: str = GENESIS_HASH
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    balances: dict[BalanceKey, int] = field(default_factory=dict)
    funds: dict[int, FundPosition] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, seq: int | None, message: str) -> None:
        if seq is not None and (self.first_bad_seq is None or seq < self.first_bad_seq):
            self.first_bad_seq = seq
        self.problems.append(message)

    def summary(self) -> str:
        if self.ok:
            return f"OK: {self.transactions} transactions, head {self.head_hash[:16]}"
        where = f" (first bad transaction: #{self.first_bad_seq})" if self.first_bad_seq else ""
        return f"FAILED{where}: " + "; ".join(self.problems[:10])


MAX_PROBLEMS = 100


def verify(
    transactions: Iterable[SealedTransaction],
    stored_balances: Mapping[BalanceKey, int] | None = None,
    expected_head: str | None = None,
) -> VerificationReport:
    """Check the chain, each transaction's balance and sign rules, and the fund identity.

    `stored_balances` are the running totals the database keeps beside the chain; any
    difference from the recomputed balance is reported by account.
    """
    report = VerificationReport()
    balances: dict[BalanceKey, int] = defaultdict(int)
    prev_hash = GENESIS_HASH
    expected_seq = 1
    for txn in transactions:
        if len(report.problems) >= MAX_PROBLEMS:
            break
        report.transactions += 1
        seq = txn.seq
        if seq != expected_seq:
            report.fail(
                min(seq, expected_seq),
                f"transaction #{expected_seq} is missing or out of order (found #{seq})",
            )
        expected_seq = seq + 1
        if txn.prev_hash != prev_hash:
            report.fail(seq, f"transaction #{seq} does not link to the one before it")
        recomputed = chain_hash(txn.prev_hash, txn.body())
        if recomputed != txn.hash:
            report.fail(seq, f"transaction #{seq} was altered: its hash does not match its content")
        prev_hash = txn.hash
        problem = imbalance(txn.postings)
        if problem:
            report.fail(seq, f"transaction #{seq}: {problem}")
        _check_fund_side(report, txn)
        _check_split(report, txn)
        for p in txn.postings:
            key = (p.account, p.unit)
            balances[key] += p.amount
            value = balances[key]
            if acc.is_source(p.account) and value > 0:
                report.fail(seq, f"transaction #{seq} leaves source account {p.account} positive")
            if not acc.is_source(p.account) and value < 0:
                report.fail(seq, f"transaction #{seq} overdraws {p.account} ({p.unit} {value})")
    report.head_hash = prev_hash
    report.balances = dict(balances)
    report.funds = fund_positions(report.balances)
    for scheme_id, pos in sorted(report.funds.items()):
        if not pos.adds_up:
            report.fail(
                None,
                f"scheme {scheme_id}: total {pos.total} != available {pos.available} + "
                f"committed {pos.committed} + spent {pos.spent}",
            )
    if expected_head is not None and expected_head != prev_hash:
        report.fail(
            None, f"head hash {prev_hash[:16]} differs from the published {expected_head[:16]}"
        )
    if stored_balances is not None:
        _compare_balances(report, stored_balances)
    return report


def fund_positions(balances: Mapping[BalanceKey, int]) -> dict[int, FundPosition]:
    funds: dict[int, FundPosition] = {}
    for (account, unit), value in balances.items():
        bucket = acc.fund_bucket(account)
        scheme_id = acc.scheme_of(account)
        if unit != Unit.HKD or bucket is None or scheme_id is None:
            continue
        pos = funds.setdefault(scheme_id, FundPosition())
        if bucket == "total":
            pos.total += -value
        else:
            setattr(pos, bucket, getattr(pos, bucket) + value)
    return funds


def _check_fund_side(report: VerificationReport, txn: SealedTransaction) -> None:
    """Money never leaves a scheme's fund accounts except as the fund's own identity allows."""
    per_scheme: dict[int, int] = defaultdict(int)
    for p in txn.postings:
        scheme_id = acc.scheme_of(p.account)
        if p.unit == Unit.HKD and scheme_id is not None:
            per_scheme[scheme_id] += p.amount
    for scheme_id, total in per_scheme.items():
        if total != 0:
            report.fail(
                txn.seq,
                f"transaction #{txn.seq} moves money in or out of scheme {scheme_id}'s fund",
            )


def _check_split(report: VerificationReport, txn: SealedTransaction) -> None:
    if txn.kind != "settle":
        return
    refs = txn.refs
    try:
        charge, subsidy, copay = int(refs["charge"]), int(refs["subsidy"]), int(refs["copay"])
    except (KeyError, ValueError):
        report.fail(txn.seq, f"settlement #{txn.seq} lacks its charge, subsidy and co-pay")
        return
    if charge != subsidy + copay:
        report.fail(txn.seq, f"settlement #{txn.seq}: charge {charge} != {subsidy} + {copay}")


def _compare_balances(report: VerificationReport, stored: Mapping[BalanceKey, int]) -> None:
    keys = set(stored) | set(report.balances)
    for key in sorted(keys):
        want = report.balances.get(key, 0)
        have = stored.get(key, 0)
        if want != have:
            report.fail(
                None,
                f"stored balance of {key[0]} ({key[1]}) is {have}, the transactions give {want}",
            )
