"""Templates, their filters, and the one function every page renders through."""

from __future__ import annotations

import json
import shlex
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from aisc.domain.model import Role
from aisc.domain.money import SECONDS_PER_HOUR, format_rate

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

# each role's pages, in the order the navigation shows them
NAV: dict[Role, list[tuple[str, str]]] = {
    Role.APPLICANT: [
        ("/org", "Overview"),
        ("/applications", "Applications"),
        ("/jobs", "Jobs"),
        ("/invoices", "Invoices"),
        ("/reports", "Reports"),
    ],
    Role.REVIEWER: [("/review", "Applications to review")],
    Role.OPERATOR: [
        ("/ops", "Overview"),
        ("/ops/applications", "Decisions"),
        ("/ops/cluster", "Cluster"),
        ("/ops/queue", "Queue"),
        ("/ops/allocations", "Allocations"),
        ("/ops/people", "People"),
        ("/ops/schemes", "Schemes"),
        ("/ops/rates", "Rate card"),
    ],
    Role.FUNDER: [("/fund", "Fund"), ("/fund/ledger", "Ledger")],
}

HOME = {
    Role.APPLICANT: "/org",
    Role.REVIEWER: "/review",
    Role.OPERATOR: "/ops",
    Role.FUNDER: "/fund",
}


def hkd(cents: int | None) -> str:
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}HK${whole:,}.{part:02d}"


def gpu_hours(seconds: int | float | None) -> str:
    if seconds is None:
        return "—"
    hours = seconds / SECONDS_PER_HOUR
    return f"{hours:,.1f}" if hours < 100 else f"{hours:,.0f}"


def when(value: datetime | date | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def chart(config: dict[str, Any]) -> Markup:
    """A Chart.js configuration as an HTML attribute value; static/portal.js draws it."""
    return Markup.escape(json.dumps(config, default=str))


templates.env.filters.update(
    hkd=hkd,
    gpu_hours=gpu_hours,
    when=when,
    duration=duration,
    percent=percent,
    rate=format_rate,
    chart=chart,
    command=shlex.join,
)


def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a portal page; the signed-in user (if any) and navigation come along."""
    user = getattr(request.state, "portal_user", None)
    nav = NAV.get(user.actor.role, []) if user else []
    return templates.TemplateResponse(
        request,
        name,
        {"me": user, "nav": nav, "path": request.url.path, **context},
        status_code=status_code,
    )
