"""The funder's pages (operators see them too): each fund's burn-down, the scheme's KPIs, and
the ledger's verification and export."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from aisc.api.deps import RuntimeDep
from aisc.services import audit, nodes, usage
from aisc.services.context import utcnow
from aisc.web.render import page
from aisc.web.session import OversightDep

router = APIRouter(include_in_schema=False)

EXPORT_NAME = "aisc-ledger.jsonl"
COLOURS = ["#0b6bcb", "#1a7f37", "#9a6700", "#8250df", "#c62828", "#0a7b83", "#5d6778"]


def burn_chart(burn: usage.FundBurn) -> dict[str, Any]:
    labels = [m.month for m in burn.months]
    return {
        "type": "line",
        "data": {
            "labels": labels,
            "datasets": [
                {
                    "label": "Committed (awarded, not yet spent)",
                    "data": [m.committed_cents for m in burn.months],
                    "borderColor": "#9a6700",
                    "backgroundColor": "#9a6700",
                },
                {
                    "label": "Spent (cumulative)",
                    "data": [m.spent_cents for m in burn.months],
                    "borderColor": "#0b6bcb",
                    "backgroundColor": "#0b6bcb",
                },
                {
                    "label": "Fund total",
                    "data": [burn.total_cents for _ in labels],
                    "borderColor": "#9aa4b2",
                    "borderDash": [6, 4],
                    "pointRadius": 0,
                },
            ],
        },
        "options": {"scales": {"y": {"beginAtZero": True}}},
    }


def bar_chart(label: str, values: Mapping[str, int]) -> dict[str, Any]:
    keys = list(values)
    return {
        "type": "bar",
        "data": {
            "labels": [k.replace("_", " ") for k in keys],
            "datasets": [
                {
                    "label": label,
                    "data": [values[k] for k in keys],
                    "backgroundColor": [COLOURS[i % len(COLOURS)] for i in range(len(keys))],
                }
            ],
        },
        "options": {
            "plugins": {"legend": {"display": False}},
            "scales": {"y": {"beginAtZero": True}},
        },
    }


@router.get("/fund", response_class=HTMLResponse)
def fund(request: Request, runtime: RuntimeDep, user: OversightDep) -> HTMLResponse:
    uow, actor = runtime.uow, user.actor
    now = utcnow()
    capacity = sum(n.gpus for n in nodes.list_nodes(uow(), actor))
    burns = usage.fund_burn(uow(), actor, now)
    kpis = usage.kpis(uow(), actor, now, capacity)
    report = audit.verify_ledger(uow(), actor)
    return page(
        request,
        "funder/fund.html",
        title="Fund",
        burns=[(b, burn_chart(b)) for b in burns],
        kpis=kpis,
        category_chart=bar_chart("Subsidy spent", kpis.subsidy_by_category),
        sector_chart=bar_chart("Subsidy spent", kpis.subsidy_by_sector),
        report=report,
        now=now,
    )


@router.get("/fund/ledger", response_class=HTMLResponse)
def ledger(request: Request, runtime: RuntimeDep, user: OversightDep) -> HTMLResponse:
    report = audit.verify_ledger(runtime.uow(), user.actor)
    return page(
        request,
        "funder/ledger.html",
        title="Ledger",
        report=report,
        funds=sorted(report.funds.items()),
        export_name=EXPORT_NAME,
    )


@router.get("/fund/ledger/export")
def ledger_export(runtime: RuntimeDep, user: OversightDep) -> StreamingResponse:
    lines = audit.export_lines(runtime.uow(), user.actor)
    first = next(lines)  # the permission check and the snapshot happen before streaming starts

    def chain() -> Iterator[str]:
        yield first
        yield from lines

    return StreamingResponse(
        chain(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{EXPORT_NAME}"'},
    )
