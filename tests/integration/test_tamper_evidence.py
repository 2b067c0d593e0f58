"""Tamper evidence against the real database: a ledger row edited, deleted or reordered with raw
SQL is caught by `aisc ledger verify`, run as a user would (the CLI over HTTP to a live server),
which exits non-zero and names the first bad transaction.

The pure verifier has its own tests (tests/unit/test_ledger.py); these prove the whole path: the
rows as the database stores them, the store's reader, the service and the CLI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select, text
from typer.testing import CliRunner, Result

from aisc.cli.main import app
from aisc.config import Settings
from aisc.ledger import accounts as acc
from aisc.ledger.accounts import Unit
from aisc.ledger.transaction import build, canonical_json, chain_hash, seal
from aisc.runtime import Runtime
from aisc.services import accounts, allocations
from aisc.store.ledger_store import row_to_sealed
from aisc.store.tables import Base, LedgerTransaction
from tests.builders import award, build_centre, charged_job
from tests.conftest import reset_database
from tests.servers import serve_in_thread

LEDGER_TABLES = [
    Base.metadata.tables[n] for n in ("ledger_transactions", "ledger_balances", "ledger_head")
]


@dataclass
class LiveLedger:
    """A centre whose ledger holds eight transactions, and the CLI pointed at its server."""

    engine: Engine
    env: dict[str, str | None]
    rows: dict[str, list[dict[str, Any]]]  # the untampered ledger tables, to restore each test
    seq: dict[str, int]  # which transaction is which

    def verify(self) -> Result:
        return CliRunner().invoke(app, ["ledger", "verify"], env=self.env, catch_exceptions=False)


@pytest.fixture(scope="module")
def live_ledger(
    database_url: str, engine: Engine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveLedger]:
    reset_database(engine)
    home = Path(tmp_path_factory.mktemp("tamper"))
    settings = Settings(
        home=home, database_url=database_url, inventory="2x8xH800", detect_gpus=False
    )
    runtime = Runtime.build(settings, migrate=False)
    try:
        centre = build_centre(runtime.uow)  # 1 fund
        hku = award(centre, "HKU")  # 2 award
        cuhk = award(centre, "CUHK")  # 3 award
        charged_job(centre, "HKU", hku, 2, 1234)  # 4 reserve, 5 settle
        charged_job(centre, "CUHK", cuhk, 2, 99)  # 6 reserve, 7 settle
        allocations.close_allocation(centre.uow(), centre.operator, cuhk)  # 8 close
        token = accounts.issue_token(runtime.uow(), centre.operator, centre.funder.user_id)
        with engine.connect() as conn:
            rows = {
                t.name: [dict(r) for r in conn.execute(select(t)).mappings()] for t in LEDGER_TABLES
            }
        kinds = [(r["seq"], r["kind"]) for r in rows["ledger_transactions"]]
        assert [k for _, k in sorted(kinds)] == [
            "fund", "award", "award", "reserve", "settle", "reserve", "settle", "close"
        ]  # fmt: skip
        with serve_in_thread(runtime, run_controller=False) as url:
            yield LiveLedger(
                engine=engine,
                env={
                    "AISC_URL": url,
                    "AISC_TOKEN": token,
                    "AISC_CONFIG": str(home / "cli.json"),
                    "COLUMNS": "220",
                },
                rows=rows,
                seq={"award": 2, "reserve": 4, "settle": 5, "last": 8},
            )
    finally:
        runtime.close()


@pytest.fixture
def ledger(live_ledger: LiveLedger) -> LiveLedger:
    """The untampered ledger back in place, and verifying, before each test tampers with it."""
    with live_ledger.engine.begin() as conn:
        for table in LEDGER_TABLES:
            conn.execute(table.delete())
            conn.execute(table.insert(), live_ledger.rows[table.name])
    result = live_ledger.verify()
    assert result.exit_code == 0, result.output
    assert "OK: 8 transactions" in result.stdout
    return live_ledger


# -- the tampering: raw SQL on the database, as someone with its password could do ------------


def postings_of(conn: Connection, seq: int) -> list[dict[str, Any]]:
    raw = conn.execute(text("SELECT postings FROM ledger_transactions WHERE seq = :s"), {"s": seq})
    postings: list[dict[str, Any]] = json.loads(raw.scalar_one())["postings"]
    return postings


def set_postings(conn: Connection, seq: int, postings: list[dict[str, Any]]) -> None:
    conn.execute(
        text("UPDATE ledger_transactions SET postings = :p WHERE seq = :s"),
        {"p": json.dumps({"postings": postings}, sort_keys=True, separators=(",", ":")), "s": seq},
    )


def edit_amount(conn: Connection, seq: int) -> None:
    """One cent moved between two money postings: still balanced, so only the hash can tell."""
    postings = postings_of(conn, seq)
    money = [p for p in postings if p["unit"] == "HKD"]
    debit = next(p for p in money if p["amount"] > 1)
    credit = next(p for p in money if p["amount"] < -1)
    debit["amount"] -= 1
    credit["amount"] += 1
    set_postings(conn, seq, postings)


def edit_memo(conn: Connection, seq: int) -> None:
    conn.execute(
        text("UPDATE ledger_transactions SET memo = 'award revoked' WHERE seq = :s"), {"s": seq}
    )


def edit_refs(conn: Connection, seq: int) -> None:
    """A settlement's charge lowered, its split still adding up: the invoice would follow it."""
    raw = conn.execute(text("SELECT refs FROM ledger_transactions WHERE seq = :s"), {"s": seq})
    refs = json.loads(raw.scalar_one())
    refs["charge"] -= 100
    refs["copay"] -= 100
    conn.execute(
        text("UPDATE ledger_transactions SET refs = :r WHERE seq = :s"),
        {"r": json.dumps(refs, sort_keys=True, separators=(",", ":")), "s": seq},
    )


def delete_row(conn: Connection, seq: int) -> None:
    conn.execute(text("DELETE FROM ledger_transactions WHERE seq = :s"), {"s": seq})


def swap_with_next(conn: Connection, seq: int) -> None:
    """Two transactions change places: their seq values are swapped."""
    update = text("UPDATE ledger_transactions SET seq = :to WHERE seq = :at")
    conn.execute(update, {"to": -1, "at": seq})
    conn.execute(update, {"to": seq, "at": seq + 1})
    conn.execute(update, {"to": seq + 1, "at": -1})


def edit_and_reseal(conn: Connection, seq: int) -> None:
    """A forger who edits a row and recomputes its hash: the row checks out on its own, but the
    next transaction was chained to the original, so the chain breaks at the next link."""
    row = conn.execute(select(LedgerTransaction).where(LedgerTransaction.seq == seq)).one()
    sealed = row_to_sealed(LedgerTransaction(**row._asdict()))
    body = {**sealed.body(), "memo": "award for a friend"}
    conn.execute(
        text("UPDATE ledger_transactions SET memo = :m, hash = :h WHERE seq = :s"),
        {"m": body["memo"], "h": chain_hash(sealed.prev_hash, body), "s": seq},
    )


def append_forged(conn: Connection, seq: int) -> None:
    """A well-formed transaction chained after the last one, but never sealed by the head."""
    last = conn.execute(select(LedgerTransaction).where(LedgerTransaction.seq == seq)).one()
    forged = build(
        "award",
        [(acc.scheme_available(1), Unit.HKD, -100), (acc.subsidy_committed(1, 1), Unit.HKD, 100)],
        memo="award committed",
        allocation_id=1,
        scheme_id=1,
    )
    sealed = seal(forged, seq + 1, last.hash, last.created_at)
    body = sealed.body()
    conn.execute(
        Base.metadata.tables["ledger_transactions"].insert(),
        {
            "seq": sealed.seq,
            "created_at": sealed.created_at,
            "kind": sealed.kind,
            "memo": sealed.memo,
            "refs": canonical_json(body["refs"]),
            "postings": canonical_json({"postings": body["postings"]}),
            "prev_hash": sealed.prev_hash,
            "hash": sealed.hash,
        },
    )


Tamper = Callable[[Connection, int], None]

# (tamper, the transaction it touches, the first bad transaction verification must name)
CASES: dict[str, tuple[Tamper, str, int]] = {
    "edit a posting's amount": (edit_amount, "settle", 0),
    "edit a memo": (edit_memo, "award", 0),
    "edit a settlement's charge": (edit_refs, "settle", 0),
    "delete a transaction in the middle": (delete_row, "reserve", 0),
    "delete the last transaction": (delete_row, "last", 0),
    "swap two transactions": (swap_with_next, "reserve", 0),
    "edit a row and recompute its hash": (edit_and_reseal, "award", 1),
    "append a transaction the head never sealed": (append_forged, "last", 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_caught_and_names_the_first_bad_transaction(
    ledger: LiveLedger, case: str
) -> None:
    tamper, target, later = CASES[case]
    seq = ledger.seq[target]
    with ledger.engine.begin() as conn:
        tamper(conn, seq)
    result = ledger.verify()
    assert result.exit_code == 1, result.output
    first_bad = re.findall(r"first bad transaction #(\d+)", result.stderr)
    assert first_bad == [str(seq + later)], result.output
    assert result.stdout.count("problem: ") >= 1  # each problem is listed


def test_an_edited_stored_balance_is_caught_and_named(ledger: LiveLedger) -> None:
    """The running balances kept beside the chain must agree with the transactions."""
    account = acc.scheme_available(1)
    with ledger.engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_balances SET balance = balance + 100 WHERE account = :a"),
            {"a": account},
        )
    result = ledger.verify()
    assert result.exit_code == 1, result.output
    assert f"stored balance of {account}" in result.stdout
    # no transaction is bad: the chain itself is intact
    assert "first bad transaction" not in result.stderr


def test_the_untampered_ledger_verifies_with_exit_0(ledger: LiveLedger) -> None:
    result = ledger.verify()
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"OK: 8 transactions, head [0-9a-f]{16}\n", result.stdout), result.stdout
    assert not result.stderr


def test_an_export_missing_its_last_transaction_names_it_offline(
    ledger: LiveLedger, tmp_path: Path
) -> None:
    """The auditor's copy: the last transaction cut from an export (its closing line kept)."""
    export = tmp_path / "ledger.jsonl"
    runner = CliRunner()
    exported = runner.invoke(app, ["ledger", "export", str(export)], env=ledger.env)
    assert exported.exit_code == 0, exported.output
    lines = export.read_text(encoding="utf-8").splitlines(keepends=True)
    assert json.loads(lines[-2])["seq"] == 8
    export.write_text("".join(lines[:-2] + lines[-1:]), encoding="utf-8")
    offline = {**ledger.env, "AISC_URL": "http://127.0.0.1:9", "AISC_TOKEN": None}
    result = runner.invoke(app, ["ledger", "verify", "--file", str(export)], env=offline)
    assert result.exit_code == 1, result.output
    assert re.findall(r"first bad transaction #(\d+)", result.stderr) == ["8"], result.output
