"""The chart of accounts. Names carry the scheme and allocation so an export verifies on its own.

Sign convention: every transaction's postings sum to zero per unit. Accounts that hold value
(money in the fund, GPU-seconds still to use, what an organisation owes) have balances >= 0;
source accounts (the funder's contribution, an award's grant, the centre's revenue) are <= 0.
"""

from __future__ import annotations

from enum import StrEnum


class Unit(StrEnum):
    HKD = "HKD"  # integer cents
    GPU_S = "GPU_S"  # GPU-seconds


def scheme_funding(scheme_id: int) -> str:
    return f"scheme:{scheme_id}:funding"


def scheme_available(scheme_id: int) -> str:
    return f"scheme:{scheme_id}:available"


def _alloc(scheme_id: int, allocation_id: int, leaf: str) -> str:
    return f"scheme:{scheme_id}:alloc:{allocation_id}:{leaf}"


def subsidy_committed(scheme_id: int, allocation_id: int) -> str:
    """Subsidy awarded to an allocation and not yet reserved by a running job."""
    return _alloc(scheme_id, allocation_id, "subsidy_committed")


def subsidy_reserved(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "subsidy_reserved")


def subsidy_spent(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "subsidy_spent")


def gpu_granted(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "gpu_granted")


def gpu_available(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "gpu_available")


def gpu_reserved(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "gpu_reserved")


def gpu_used(scheme_id: int, allocation_id: int) -> str:
    return _alloc(scheme_id, allocation_id, "gpu_used")


def org_receivable(org_id: int) -> str:
    """Co-pay the organisation owes the centre."""
    return f"org:{org_id}:receivable"


CENTRE_REVENUE = "centre:revenue"
CENTRE_SUBSIDY_RECEIVABLE = "centre:subsidy_receivable"  # subsidy the fund pays the centre

_SOURCE_SUFFIXES = (":funding", ":gpu_granted")


def is_source(account: str) -> bool:
    """Source accounts carry balances <= 0; every other account must never go negative."""
    return account == CENTRE_REVENUE or account.endswith(_SOURCE_SUFFIXES)


def scheme_of(account: str) -> int | None:
    """The scheme an account belongs to, or None for centre and organisation accounts."""
    parts = account.split(":")
    if parts[0] == "scheme" and len(parts) > 2:
        return int(parts[1])
    return None


def fund_bucket(account: str) -> str | None:
    """Where an HKD scheme account sits in `fund total = available + committed + spent`."""
    if scheme_of(account) is None:
        return None
    leaf = account.rsplit(":", 1)[1]
    return {
        "funding": "total",
        "available": "available",
        "subsidy_committed": "committed",
        "subsidy_reserved": "committed",
        "subsidy_spent": "spent",
    }.get(leaf)
