"""Monthly invoices per organisation: a co-pay line per job, with the subsidy beside it."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sqlalchemy import select

from aisc.domain.errors import NotFound, ValidationError
from aisc.domain.model import Role
from aisc.domain.money import format_cents, format_rate
from aisc.services.context import Actor
from aisc.store.tables import Allocation, Job, JobCharge, Organisation
from aisc.store.uow import UnitOfWork

MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class InvoiceLine:
    job_id: int
    job_name: str
    allocation_id: int
    allocation_name: str
    gpu_model: str
    gpus: int
    gpu_seconds: int
    started_at: datetime
    ended_at: datetime
    rate_bp: int
    charge_cents: int
    subsidy_cents: int
    copay_cents: int


@dataclass
class Invoice:
    number: str
    org_id: int
    org_name: str
    month: str
    period_start: date
    period_end: date  # exclusive
    lines: list[InvoiceLine] = field(default_factory=list)

    @property
    def charge_cents(self) -> int:
        return sum(line.charge_cents for line in self.lines)

    @property
    def subsidy_cents(self) -> int:
        return sum(line.subsidy_cents for line in self.lines)

    @property
    def copay_cents(self) -> int:
        """What the organisation pays."""
        return sum(line.copay_cents for line in self.lines)

    @property
    def gpu_seconds(self) -> int:
        return sum(line.gpu_seconds for line in self.lines)


def month_bounds(month: str) -> tuple[date, date]:
    m = MONTH.match(month)
    if not m or not 1 <= int(m.group(2)) <= 12:
        raise ValidationError(f"month must look like 2026-11, not {month!r}")
    year, mon = int(m.group(1)), int(m.group(2))
    start = date(year, mon, 1)
    end = date(year + (mon == 12), mon % 12 + 1, 1)
    return start, end


def monthly_invoice(uow: UnitOfWork, actor: Actor, org_id: int, month: str) -> Invoice:
    """Jobs settled in the month (UTC) under the organisation's allocations."""
    actor.require(Role.APPLICANT, Role.OPERATOR, Role.FUNDER)
    actor.require_org(org_id)
    start, end = month_bounds(month)
    with uow:
        org = uow.session.get(Organisation, org_id)
        if org is None:
            raise NotFound(f"organisation {org_id} does not exist")
        rows = uow.session.execute(
            select(JobCharge, Job, Allocation)
            .join(Job, Job.id == JobCharge.job_id)
            .join(Allocation, Allocation.id == JobCharge.allocation_id)
            .where(
                JobCharge.org_id == org_id,
                JobCharge.settled_at >= datetime.combine(start, datetime.min.time(), UTC),
                JobCharge.settled_at < datetime.combine(end, datetime.min.time(), UTC),
            )
            .order_by(JobCharge.settled_at, JobCharge.job_id)
        ).all()
        invoice = Invoice(
            number=f"AISC-{start:%Y%m}-{org_id:05d}",
            org_id=org.id,
            org_name=org.name,
            month=month,
            period_start=start,
            period_end=end,
        )
        for charge, job, allocation in rows:
            invoice.lines.append(
                InvoiceLine(
                    job_id=job.id,
                    job_name=job.name,
                    allocation_id=allocation.id,
                    allocation_name=allocation.name,
                    gpu_model=allocation.gpu_model,
                    gpus=job.gpus,
                    gpu_seconds=charge.gpu_seconds,
                    started_at=charge.usage_started_at,
                    ended_at=charge.usage_ended_at,
                    rate_bp=charge.rate_bp,
                    charge_cents=charge.charge_cents,
                    subsidy_cents=charge.subsidy_cents,
                    copay_cents=charge.copay_cents,
                )
            )
        return invoice


CSV_COLUMNS = [
    "invoice",
    "job_id",
    "job_name",
    "allocation_id",
    "allocation",
    "gpu_model",
    "gpus",
    "gpu_hours",
    "started_at",
    "ended_at",
    "subsidy_rate",
    "charge_hkd",
    "subsidy_hkd",
    "copay_hkd",
]


def invoice_csv(invoice: Invoice) -> str:
    """One row per job and a total row; amounts in HKD with two decimals, no thousands separator."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def hkd(cents: int) -> str:
        return format_cents(cents).replace(",", "")

    for line in invoice.lines:
        writer.writerow(
            [
                invoice.number,
                line.job_id,
                line.job_name,
                line.allocation_id,
                line.allocation_name,
                line.gpu_model,
                line.gpus,
                f"{line.gpu_seconds / 3600:.4f}",
                line.started_at.isoformat(),
                line.ended_at.isoformat(),
                format_rate(line.rate_bp),
                hkd(line.charge_cents),
                hkd(line.subsidy_cents),
                hkd(line.copay_cents),
            ]
        )
    writer.writerow(
        [
            invoice.number,
            "TOTAL",
            "",
            "",
            "",
            "",
            "",
            f"{invoice.gpu_seconds / 3600:.4f}",
            "",
            "",
            "",
            hkd(invoice.charge_cents),
            hkd(invoice.subsidy_cents),
            hkd(invoice.copay_cents),
        ]
    )
    return out.getvalue()
