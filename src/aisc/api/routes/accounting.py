"""Invoices and the ledger: what the grantee owes, and proof of where the money went."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from aisc.api import problems
from aisc.api.deps import ActorDep, UowDep
from aisc.api.schemas import IdPath, InvoiceLineOut, InvoiceOut, Text, VerificationOut, hkd
from aisc.services import audit, invoices

router = APIRouter(tags=["accounting"], responses=problems.RESPONSES)


@router.get("/invoices/{org_id}/{month}", response_model=InvoiceOut)
def invoice(org_id: IdPath, month: Text, uow: UowDep, actor: ActorDep) -> InvoiceOut:
    inv = invoices.monthly_invoice(uow, actor, org_id, month)
    return InvoiceOut(
        number=inv.number,
        org_id=inv.org_id,
        org_name=inv.org_name,
        month=inv.month,
        charge_cents=inv.charge_cents,
        subsidy_cents=inv.subsidy_cents,
        copay_cents=inv.copay_cents,
        charge=hkd(inv.charge_cents),
        subsidy=hkd(inv.subsidy_cents),
        copay=hkd(inv.copay_cents),
        lines=[InvoiceLineOut.model_validate(line) for line in inv.lines],
    )


@router.get(
    "/invoices/{org_id}/{month}/csv",
    response_class=Response,  # no media type of its own: the 200 below is text/csv only
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
def invoice_csv(org_id: IdPath, month: Text, uow: UowDep, actor: ActorDep) -> PlainTextResponse:
    inv = invoices.monthly_invoice(uow, actor, org_id, month)
    return PlainTextResponse(
        invoices.invoice_csv(inv),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{inv.number}.csv"'},
    )


@router.get("/ledger/verify", response_model=VerificationOut)
def verify(uow: UowDep, actor: ActorDep) -> VerificationOut:
    report = audit.verify_ledger(uow, actor)
    return VerificationOut(
        ok=report.ok,
        summary=report.summary(),
        transactions=report.transactions,
        head_hash=report.head_hash,
        first_bad_seq=report.first_bad_seq,
        problems=report.problems,
    )


@router.get(
    "/ledger/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The ledger as JSON lines: one transaction per line, in order.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
def export(uow: UowDep, actor: ActorDep) -> StreamingResponse:
    lines = audit.export_lines(uow, actor)
    first = next(lines)  # runs the permission check before the response starts
    return StreamingResponse(
        _chain(first, lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="aisc-ledger.jsonl"'},
    )


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
