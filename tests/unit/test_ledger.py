"""The pure ledger: balanced transactions, the hash chain, operations and verification."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisc.domain.errors import InsufficientFunds, OverQuota, ValidationError
from aisc.domain.money import PriceSegment, Split, charge_cents, split_charge
from aisc.ledger import accounts as acc
from aisc.ledger import operations as ops
from aisc.ledger.accounts import Unit
from aisc.ledger.transaction import (
    GENESIS_HASH,
    Posting,
    SealedTransaction,
    Transaction,
    build,
    canonical_json,
    chain_hash,
    seal,
)
from aisc.ledger.verify import BalanceKey, verify

S = 1  # scheme id used throughout
ALLOC = ops.AllocationRef(scheme_id=S, allocation_id=10, org_id=7)
FUND = 1_000_000


class Book:
    """An in-memory ledger: seals each transaction onto the chain and keeps running balances."""

    def __init__(self) -> None:
        self.chain: list[SealedTransaction] = []
        self.balances: dict[BalanceKey, int] = defaultdict(int)

    def by_account(self) -> dict[str, int]:
        return {account: value for (account, _unit), value in self.balances.items()}

    def post(self, txn: Transaction) -> SealedTransaction:
        prev = self.chain[-1].hash if self.chain else GENESIS_HASH
        sealed = seal(txn, len(self.chain) + 1, prev, f"2026-01-01T00:00:{len(self.chain):02d}")
        self.chain.append(sealed)
        for p in sealed.postings:
            self.balances[(p.account, p.unit)] += p.amount
        return sealed


def busy_book() -> Book:
    """fund, award, reserve, settle, reserve, release, close: seven transactions."""
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 50_000, 100 * 3600, book.by_account()))
    book.post(ops.reserve(ALLOC, 1, 7200, 5000, book.by_account()))
    book.post(ops.settle(ALLOC, 1, 7200, 5000, 3600, split_charge(3600, 7000)))
    book.post(ops.reserve(ALLOC, 2, 3600, 2520, book.by_account()))
    book.post(ops.release(ALLOC, 2, 3600, 2520))
    close = ops.close_allocation(ALLOC, book.by_account())
    assert close is not None
    book.post(close)
    return book


def reseal(txn: SealedTransaction, **changes: object) -> SealedTransaction:
    """Change a sealed transaction and recompute its own hash (a forger's careful edit)."""
    edited = dataclasses.replace(txn, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(edited, hash=chain_hash(edited.prev_hash, edited.body()))


def relink(chain: list[SealedTransaction]) -> list[SealedTransaction]:
    """Re-chain every transaction onto the one before it, as if the forger rebuilt the chain."""
    out: list[SealedTransaction] = []
    prev = GENESIS_HASH
    for txn in chain:
        fixed = reseal(txn, prev_hash=prev)
        out.append(fixed)
        prev = fixed.hash
    return out


def append_forged(book: Book, legs: list[tuple[str, Unit, int]], **refs: object) -> Book:
    """Seal an arbitrary (balanced) transaction onto a valid chain, bypassing the operations."""
    book.post(build("forged", legs, memo="forged", **refs))  # type: ignore[arg-type]
    return book


# -- transactions must balance ----------------------------------------------------------------


def test_a_balanced_transaction_is_accepted() -> None:
    txn = build("t", [("a", Unit.HKD, -5), ("b", Unit.HKD, 5)])
    assert [p.amount for p in txn.postings] == [-5, 5]


def test_an_unbalanced_transaction_is_refused() -> None:
    with pytest.raises(ValueError, match="do not balance"):
        build("t", [("a", Unit.HKD, -5), ("b", Unit.HKD, 4)])


def test_a_transaction_balanced_only_across_units_is_refused() -> None:
    with pytest.raises(ValueError, match="do not balance"):
        build("t", [("a", Unit.HKD, -5), ("b", Unit.GPU_S, 5)])


def test_a_zero_posting_is_refused() -> None:
    with pytest.raises(ValueError, match="zero posting"):
        Transaction(
            "t",
            (Posting("a", Unit.HKD, 0), Posting("b", Unit.HKD, 5), Posting("c", Unit.HKD, -5)),
        )


def test_build_drops_zero_legs_but_still_needs_two_postings() -> None:
    with pytest.raises(ValueError, match="at least two postings"):
        build("t", [("a", Unit.HKD, 0), ("b", Unit.HKD, 0)])


def test_a_one_legged_transaction_is_refused() -> None:
    with pytest.raises(ValueError, match="at least two postings"):
        Transaction("t", (Posting("a", Unit.HKD, 0 + 1),))


@pytest.mark.parametrize("amount", [1.0, True])
def test_a_posting_that_is_not_a_whole_number_is_refused(amount: object) -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        Transaction("t", (Posting("a", Unit.HKD, amount), Posting("b", Unit.HKD, -1)))  # type: ignore[arg-type]


# -- sealing and the hash chain ---------------------------------------------------------------


def test_seal_hashes_the_previous_hash_and_the_canonical_body() -> None:
    txn = ops.fund_scheme(S, 100)
    sealed = seal(txn, 1, GENESIS_HASH, "2026-01-01T00:00:00")
    assert sealed.prev_hash == GENESIS_HASH
    assert sealed.hash == chain_hash(GENESIS_HASH, sealed.body())
    assert len(sealed.hash) == 64


def test_the_same_transaction_on_a_different_chain_gets_a_different_hash() -> None:
    txn = ops.fund_scheme(S, 100)
    a = seal(txn, 1, GENESIS_HASH, "2026-01-01T00:00:00")
    b = seal(txn, 1, "1" * 64, "2026-01-01T00:00:00")
    assert a.hash != b.hash


def test_canonical_json_does_not_depend_on_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
    assert canonical_json({"a": "é"}) == '{"a":"é"}'


def test_a_sealed_transaction_survives_a_round_trip_through_its_dict() -> None:
    sealed = busy_book().chain[3]
    assert SealedTransaction.from_dict(sealed.to_dict()) == sealed


# -- operations -------------------------------------------------------------------------------


def test_funding_a_scheme_moves_the_total_into_available() -> None:
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    assert book.by_account() == {acc.scheme_funding(S): -FUND, acc.scheme_available(S): FUND}


@pytest.mark.parametrize("total", [0, -1])
def test_a_fund_total_must_be_positive(total: int) -> None:
    with pytest.raises(ValidationError):
        ops.fund_scheme(S, total)


def test_an_award_commits_subsidy_and_grants_gpu_seconds() -> None:
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 40_000, 3600, book.by_account()))
    b = book.by_account()
    assert b[acc.scheme_available(S)] == FUND - 40_000
    assert b[acc.subsidy_committed(S, 10)] == 40_000
    assert b[acc.gpu_available(S, 10)] == 3600
    assert b[acc.gpu_granted(S, 10)] == -3600


def test_an_award_larger_than_the_uncommitted_fund_is_refused_with_both_amounts() -> None:
    balances = {acc.scheme_available(S): 100_000}
    with pytest.raises(InsufficientFunds) as info:
        ops.commit_award(ALLOC, 100_001, 3600, balances)
    assert "HK$1,000.01" in info.value.detail
    assert "HK$1,000.00" in info.value.detail


def test_an_award_of_exactly_the_uncommitted_fund_is_allowed() -> None:
    txn = ops.commit_award(ALLOC, 100_000, 3600, {acc.scheme_available(S): 100_000})
    assert txn.kind == "award"


def test_an_award_without_gpu_hours_is_refused() -> None:
    with pytest.raises(ValidationError):
        ops.commit_award(ALLOC, 0, 0, {acc.scheme_available(S): 100})


def test_reserve_refuses_more_gpu_seconds_than_the_allocation_has() -> None:
    balances = {acc.gpu_available(S, 10): 3600, acc.subsidy_committed(S, 10): 1000}
    with pytest.raises(OverQuota, match="job 5"):
        ops.reserve(ALLOC, 5, 3601, 100, balances)


def test_reserve_holds_no_more_subsidy_than_the_allocation_has_committed() -> None:
    balances = {acc.gpu_available(S, 10): 3600, acc.subsidy_committed(S, 10): 1000}
    txn = ops.reserve(ALLOC, 5, 3600, 5000, balances)
    assert txn.refs["subsidy"] == 1000
    held = {p.account: p.amount for p in txn.postings}
    assert held[acc.subsidy_reserved(S, 10)] == 1000
    assert held[acc.gpu_reserved(S, 10)] == 3600


def test_settle_posts_usage_bills_the_split_and_returns_the_rest() -> None:
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 50_000, 100 * 3600, book.by_account()))
    book.post(ops.reserve(ALLOC, 1, 7200, 5040, book.by_account()))
    book.post(ops.settle(ALLOC, 1, 7200, 5040, 3600, split_charge(3600, 7000)))
    b = book.by_account()
    assert b[acc.gpu_used(S, 10)] == 3600
    assert b[acc.gpu_reserved(S, 10)] == 0
    assert b[acc.gpu_available(S, 10)] == 100 * 3600 - 3600
    assert b[acc.subsidy_spent(S, 10)] == 2520
    assert b[acc.subsidy_reserved(S, 10)] == 0
    assert b[acc.subsidy_committed(S, 10)] == 50_000 - 2520
    assert b[acc.CENTRE_REVENUE] == -3600
    assert b[acc.CENTRE_SUBSIDY_RECEIVABLE] == 2520
    assert b[acc.org_receivable(7)] == 1080


def test_settle_refuses_more_use_than_was_reserved() -> None:
    with pytest.raises(ValidationError):
        ops.settle(ALLOC, 1, 3600, 100, 3601, split_charge(3601, 7000))


def test_settle_refuses_a_subsidy_larger_than_the_hold() -> None:
    with pytest.raises(ValidationError, match="exceeds"):
        ops.settle(ALLOC, 1, 3600, 100, 3600, Split(3600, 101, 3499))


def test_release_returns_the_whole_hold() -> None:
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 50_000, 3600, book.by_account()))
    before = book.by_account()
    book.post(ops.reserve(ALLOC, 1, 1800, 1260, book.by_account()))
    book.post(ops.release(ALLOC, 1, 1800, 1260))
    after = {k: v for k, v in book.by_account().items() if v != 0}
    assert after == before


def test_closing_an_allocation_returns_its_commitment_to_the_fund() -> None:
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 50_000, 3600, book.by_account()))
    close = ops.close_allocation(ALLOC, book.by_account())
    assert close is not None
    book.post(close)
    b = book.by_account()
    assert b[acc.scheme_available(S)] == FUND
    assert b[acc.subsidy_committed(S, 10)] == 0
    assert b[acc.gpu_available(S, 10)] == 0
    assert b[acc.gpu_granted(S, 10)] == 0


def test_closing_an_allocation_with_a_running_job_is_refused() -> None:
    balances = {acc.gpu_reserved(S, 10): 3600, acc.subsidy_committed(S, 10): 10}
    with pytest.raises(ValidationError, match="running jobs"):
        ops.close_allocation(ALLOC, balances)


def test_closing_an_empty_allocation_posts_nothing() -> None:
    assert ops.close_allocation(ALLOC, {}) is None


# -- verification -----------------------------------------------------------------------------


def test_a_valid_chain_verifies() -> None:
    book = busy_book()
    report = verify(book.chain, dict(book.balances), book.chain[-1].hash)
    assert report.ok, report.problems
    assert report.transactions == 7
    assert report.head_hash == book.chain[-1].hash
    assert report.first_bad_seq is None
    assert report.summary().startswith("OK: 7 transactions")
    assert report.funds[S].total == FUND
    assert report.funds[S].adds_up


def test_an_empty_ledger_verifies() -> None:
    report = verify([])
    assert report.ok
    assert report.head_hash == GENESIS_HASH


def test_an_edited_amount_is_detected_at_its_transaction() -> None:
    chain = busy_book().chain
    txn = chain[3]
    postings = list(txn.postings)
    postings[0] = dataclasses.replace(postings[0], amount=postings[0].amount - 1)
    chain[3] = dataclasses.replace(txn, postings=tuple(postings))
    report = verify(chain)
    assert not report.ok
    assert report.first_bad_seq == 4
    assert "FAILED (first bad transaction: #4)" in report.summary()


def test_a_balanced_edit_of_amounts_is_still_caught_by_the_hash() -> None:
    chain = busy_book().chain
    txn = chain[1]  # the award
    postings = tuple(
        dataclasses.replace(p, amount=p.amount * 2) if p.unit == Unit.HKD else p
        for p in txn.postings
    )
    chain[1] = dataclasses.replace(txn, postings=postings)
    report = verify(chain)
    assert report.first_bad_seq == 2
    assert any("altered" in p for p in report.problems)


def test_an_edited_memo_is_detected() -> None:
    chain = busy_book().chain
    chain[4] = dataclasses.replace(chain[4], memo="nothing to see here")
    report = verify(chain)
    assert not report.ok
    assert report.first_bad_seq == 5
    assert any("#5 was altered" in p for p in report.problems)


def test_an_edit_whose_hash_was_recomputed_breaks_the_next_link() -> None:
    chain = busy_book().chain
    chain[2] = reseal(chain[2], memo="rewritten")
    report = verify(chain)
    assert report.first_bad_seq == 4
    assert any("#4 does not link" in p for p in report.problems)


def test_a_deleted_transaction_is_detected() -> None:
    chain = busy_book().chain
    del chain[2]
    report = verify(chain)
    assert not report.ok
    assert report.first_bad_seq == 3
    assert any("missing or out of order" in p for p in report.problems)


def test_a_deleted_last_transaction_is_detected_against_the_published_head() -> None:
    chain = busy_book().chain
    head = chain[-1].hash
    report = verify(chain[:-1], expected_head=head)
    assert not report.ok
    assert any("head hash" in p for p in report.problems)


def test_two_swapped_transactions_are_detected() -> None:
    chain = busy_book().chain
    chain[3], chain[4] = chain[4], chain[3]
    report = verify(chain)
    assert not report.ok
    assert report.first_bad_seq == 4


def test_a_broken_prev_hash_is_detected() -> None:
    chain = busy_book().chain
    chain[5] = reseal(chain[5], prev_hash="f" * 64)
    report = verify(chain)
    assert report.first_bad_seq == 6
    assert any("#6 does not link" in p for p in report.problems)


def test_a_rebuilt_chain_still_fails_the_published_head() -> None:
    book = busy_book()
    head = book.chain[-1].hash
    forged = list(book.chain)
    forged[1] = dataclasses.replace(forged[1], memo="award for a friend")
    forged = relink(forged)
    assert verify(forged).ok  # internally consistent...
    assert not verify(forged, expected_head=head).ok  # ...but not the chain that was published


def test_an_overdraft_is_detected_at_its_transaction() -> None:
    book = busy_book()
    available = book.by_account()[acc.scheme_available(S)]
    append_forged(
        book,
        [
            (acc.scheme_available(S), Unit.HKD, -(available + 1)),
            (acc.subsidy_committed(S, 99), Unit.HKD, available + 1),
        ],
    )
    report = verify(book.chain)
    assert report.first_bad_seq == 8
    assert any(f"overdraws {acc.scheme_available(S)}" in p for p in report.problems)


def test_a_source_account_going_positive_is_detected() -> None:
    book = busy_book()
    append_forged(
        book,
        [(acc.gpu_granted(S, 99), Unit.GPU_S, 5), (acc.gpu_granted(S, 98), Unit.GPU_S, -5)],
    )
    report = verify(book.chain)
    assert report.first_bad_seq == 8
    assert any("source account" in p and ":alloc:99:" in p for p in report.problems)


def test_money_leaving_a_scheme_fund_is_detected_at_its_transaction() -> None:
    book = busy_book()
    append_forged(
        book,
        [(acc.scheme_available(S), Unit.HKD, -100), (acc.org_receivable(7), Unit.HKD, 100)],
    )
    report = verify(book.chain)
    assert report.first_bad_seq == 8
    assert any("in or out of scheme 1" in p for p in report.problems)


def test_a_broken_fund_identity_is_detected() -> None:
    # moved inside the scheme, but to an account outside available / committed / spent
    book = busy_book()
    append_forged(
        book,
        [(acc.scheme_available(S), Unit.HKD, -100), (f"scheme:{S}:slush", Unit.HKD, 100)],
    )
    report = verify(book.chain)
    assert not report.ok
    assert any("scheme 1: total" in p for p in report.problems)
    assert not report.funds[S].adds_up


def reserved_book() -> tuple[Book, Transaction]:
    """fund, award, reserve job 1; and the settlement of job 1, not yet posted."""
    book = Book()
    book.post(ops.fund_scheme(S, FUND))
    book.post(ops.commit_award(ALLOC, 50_000, 100 * 3600, book.by_account()))
    book.post(ops.reserve(ALLOC, 1, 7200, 5040, book.by_account()))
    return book, ops.settle(ALLOC, 1, 7200, 5040, 3600, split_charge(3600, 7000))


def test_a_settlement_whose_charge_is_not_subsidy_plus_copay_is_detected() -> None:
    book, settle = reserved_book()
    # balanced postings, but refs that claim a different charge
    book.post(dataclasses.replace(settle, refs={**settle.refs, "charge": 3601}))
    report = verify(book.chain)
    assert report.first_bad_seq == 4
    assert any("charge 3601 != 2520 + 1080" in p for p in report.problems)


def test_a_settlement_without_its_split_is_detected() -> None:
    book, settle = reserved_book()
    refs = {k: v for k, v in settle.refs.items() if k != "copay"}
    book.post(dataclasses.replace(settle, refs=refs))
    report = verify(book.chain)
    assert report.first_bad_seq == 4
    assert any("lacks its charge" in p for p in report.problems)


def test_a_genuine_settlement_verifies() -> None:
    book, settle = reserved_book()
    book.post(settle)
    assert verify(book.chain, dict(book.balances)).ok


def test_a_stored_balance_that_differs_is_detected_by_account() -> None:
    book = busy_book()
    stored = dict(book.balances)
    key = (acc.org_receivable(7), Unit.HKD)
    stored[key] += 1
    report = verify(book.chain, stored)
    assert not report.ok
    assert any(acc.org_receivable(7) in p and "stored balance" in p for p in report.problems)


def test_a_stored_balance_for_an_account_with_no_transactions_is_detected() -> None:
    book = busy_book()
    stored = {**book.balances, ("org:99:receivable", Unit.HKD): 10}
    assert not verify(book.chain, stored).ok


# -- property: any sequence built through the operations verifies -----------------------------

step = st.one_of(
    st.tuples(
        st.just("award"),
        st.integers(1, 2),  # scheme
        st.integers(1, 50),  # GPU-hours
        st.sampled_from([3600, 2500, 12_345]),  # price
        st.sampled_from([0, 5000, 7000, 9000]),  # rate
    ),
    st.tuples(st.just("reserve"), st.integers(0, 20), st.integers(1, 8), st.integers(1, 100_000)),
    st.tuples(
        st.just("settle"),
        st.integers(0, 20),
        st.floats(0, 1),
        st.sampled_from([3600, 2500, 99_999]),
    ),
    st.tuples(st.just("release"), st.integers(0, 20)),
    st.tuples(st.just("close"), st.integers(0, 20)),
)


@settings(max_examples=150)
@given(funds=st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), steps=st.lists(step))
def test_any_sequence_of_operations_verifies_and_keeps_each_fund_whole(
    funds: tuple[int, int], steps: list[tuple]
) -> None:
    book = Book()
    for scheme, total in enumerate(funds, start=1):
        book.post(ops.fund_scheme(scheme, total))
    allocations: list[tuple[ops.AllocationRef, int, int]] = []  # ref, price, rate
    grants: list[int] = []  # GPU-seconds granted to each allocation
    open_jobs: dict[int, tuple[int, int, int, int]] = {}  # job -> alloc idx, gpu-s, subsidy, gpus
    closed: set[int] = set()
    next_job = 1
    for action, *args in steps:
        before = len(book.chain)
        refused = False
        if action == "award":
            scheme, hours, price, rate = args
            ref = ops.AllocationRef(scheme, len(allocations) + 1, org_id=len(allocations) % 3)
            subsidy = hours * price * rate // 10_000
            try:
                book.post(ops.commit_award(ref, subsidy, hours * 3600, book.by_account()))
                allocations.append((ref, price, rate))
                grants.append(hours * 3600)
            except InsufficientFunds:
                refused = True
                assert subsidy > book.by_account()[acc.scheme_available(scheme)]
        elif action == "reserve" and allocations:
            idx = args[0] % len(allocations)
            if idx in closed:
                continue
            ref, price, rate = allocations[idx]
            gpus, limit = args[1], args[2]
            worst = split_charge(charge_cents([PriceSegment(gpus * limit, price)]), rate)
            try:
                txn = ops.reserve(ref, next_job, gpus * limit, worst.subsidy, book.by_account())
            except OverQuota:
                refused = True
            else:
                book.post(txn)
                open_jobs[next_job] = (idx, gpus * limit, int(txn.refs["subsidy"]), gpus)
                next_job += 1
        elif action == "settle" and open_jobs:
            job = sorted(open_jobs)[args[0] % len(open_jobs)]
            idx, held_s, held_sub, gpus = open_jobs.pop(job)
            ref, _, rate = allocations[idx]
            used = int(held_s * args[1]) // gpus * gpus
            charge = charge_cents([PriceSegment(used, args[2])])  # the price may have changed
            split = split_charge(charge, rate, held_sub)
            book.post(ops.settle(ref, job, held_s, held_sub, used, split))
        elif action == "release" and open_jobs:
            job = sorted(open_jobs)[args[0] % len(open_jobs)]
            idx, held_s, held_sub, _ = open_jobs.pop(job)
            book.post(ops.release(allocations[idx][0], job, held_s, held_sub))
        elif action == "close" and allocations:
            idx = args[0] % len(allocations)
            if any(j[0] == idx for j in open_jobs.values()):
                with pytest.raises(ValidationError):
                    ops.close_allocation(allocations[idx][0], book.by_account())
                continue
            txn = ops.close_allocation(allocations[idx][0], book.by_account())
            if txn is not None:
                book.post(txn)
            closed.add(idx)
        if refused:
            assert len(book.chain) == before
        report = verify(book.chain, dict(book.balances))
        assert report.ok, report.problems
        for scheme, total in enumerate(funds, start=1):
            pos = report.funds[scheme]
            assert pos.total == total
            assert pos.total == pos.available + pos.committed + pos.spent
        for (account, _unit), value in book.balances.items():
            assert value <= 0 if acc.is_source(account) else value >= 0
    b = book.by_account()
    for idx, (ref, _, _) in enumerate(allocations):
        s, a = ref.scheme_id, ref.allocation_id
        used, grant = b.get(acc.gpu_used(s, a), 0), grants[idx]
        assert used <= grant
        # every granted GPU-second is used, still held, still available, or lapsed at close
        held = b.get(acc.gpu_available(s, a), 0) + b.get(acc.gpu_reserved(s, a), 0)
        assert used + held == -b.get(acc.gpu_granted(s, a), 0)
        assert idx not in closed or held == 0
