"""The monthly invoice as a PDF, read back from the PDF's own content streams."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta

import pytest

from aisc.domain.model import JobState
from aisc.services import invoices, jobs
from aisc.services.context import utcnow
from aisc.services.invoice_pdf import invoice_pdf
from aisc.services.invoices import Invoice, InvoiceLine
from aisc.services.metering import reserve_job, settle_job
from aisc.store.tables import Allocation, Job, JobCharge
from aisc.store.uow import UnitOfWork
from tests.builders import Centre, award, build_centre

UowFactory = Callable[[], UnitOfWork]
STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.S)
SHOWN = re.compile(rb"\(((?:[^()\\]|\\.)*)\) Tj")


def pdf_text(pdf: bytes) -> str:
    """The text the pages show, one string per text operator, joined by newlines."""
    shown = []
    for match in STREAM.finditer(pdf):
        try:
            content = zlib.decompress(match.group(1))
        except zlib.error:
            content = match.group(1)
        for text in SHOWN.findall(content):
            shown.append(re.sub(rb"\\(.)", rb"\1", text).decode("latin-1"))
    return "\n".join(shown)


@pytest.fixture
def centre(uow_factory: UowFactory) -> Centre:
    return build_centre(uow_factory)


def run_job(
    centre: Centre, org: str, allocation_id: int, gpus: int, start: datetime, s: int
) -> JobCharge:
    job = jobs.submit_job(
        centre.uow(),
        centre.applicants[org],
        jobs.JobRequest(allocation_id, ["python", "train.py"], gpus, s, name="llm-pretrain"),
        clock=lambda: start,
    )
    with centre.uow() as uow:
        uow.ledger.lock()
        row = uow.session.get(Job, job.id)
        assert row is not None
        allocation = uow.session.get(Allocation, row.allocation_id)
        assert allocation is not None
        reserve_job(uow, row, allocation, start)
        row.state, row.started_at = JobState.RUNNING.value, start
        charge = settle_job(uow, row, allocation, start + timedelta(seconds=s))
        assert charge is not None
        row.state = JobState.COMPLETED.value
        uow.commit()
        return charge


def test_an_invoice_pdf_shows_each_job_the_totals_and_who_pays(centre: Centre) -> None:
    hku = award(centre, "HKU")
    start = datetime.combine(utcnow().date() + timedelta(days=1), time(10), tzinfo=UTC)
    first = run_job(centre, "HKU", hku, gpus=2, start=start, s=1800)  # HK$36.00: 25.20 + 10.80
    second = run_job(centre, "HKU", hku, gpus=1, start=start, s=1001)  # HK$10.01: 7.00 + 3.01
    invoice = invoices.monthly_invoice(
        centre.uow(), centre.applicants["HKU"], centre.orgs["HKU"], f"{start:%Y-%m}"
    )
    assert (invoice.charge_cents, invoice.subsidy_cents, invoice.copay_cents) == (4601, 3220, 1381)

    pdf = invoice_pdf(invoice)

    assert pdf.startswith(b"%PDF")
    text = pdf_text(pdf)
    assert invoice.number in text
    assert "HKU" in text
    last_day = invoice.period_end - timedelta(days=1)
    assert f"{invoice.period_start:%Y-%m-%d} to {last_day:%Y-%m-%d}" in text
    rows = text.splitlines()
    for charge, (gpus, hours, amounts) in [
        (first, ("2", "1.00", ("36.00", "25.20", "10.80"))),
        (second, ("1", "0.28", ("10.01", "7.00", "3.01"))),
    ]:
        at = rows.index(f"#{charge.job_id} llm-pretrain")
        assert rows[at + 1].startswith(f"#{hku} ")
        assert rows[at + 2 : at + 8] == [gpus, hours, "0.70", *amounts]
    total = rows.index("Total")
    assert rows[total + 1 : total + 5] == ["1.28", "46.01", "32.20", "13.81"]
    assert "HK$ 46.01" in text
    assert "HK$ 32.20" in text
    assert "HK$ 13.81" in text
    assert "paid from the public fund" in text
    assert "Co-pay due from the organisation" in text
    assert "is due" in text and "from HKU" in text
    assert invoice_pdf(invoice) == pdf  # the same invoice renders to the same bytes


def sample_invoice(lines: int, name: str = "Cantonese speech model") -> Invoice:
    moment = datetime(2026, 11, 3, 10, tzinfo=UTC)
    line = InvoiceLine(
        job_id=1,
        job_name="finetune",
        allocation_id=7,
        allocation_name=name,
        gpu_model="H800",
        gpus=8,
        gpu_seconds=8 * 3600,
        started_at=moment,
        ended_at=moment + timedelta(hours=1),
        rate_bp=9000,
        charge_cents=1_234_567_89,
        subsidy_cents=1_111_111_10,
        copay_cents=123_456_79,
    )
    return Invoice(
        number="AISC-202611-00042",
        org_id=42,
        org_name=name,
        month="2026-11",
        period_start=date(2026, 11, 1),
        period_end=date(2026, 12, 1),
        lines=[replace(line, job_id=i + 1) for i in range(lines)],
    )


def test_a_long_invoice_runs_over_pages_with_every_job_and_large_amounts() -> None:
    invoice = sample_invoice(80)
    text = pdf_text(invoice_pdf(invoice))
    assert "Page 1 of" in text and "Page 3 of" in text
    assert text.count("Charge (HK$)") >= 3  # the table's header on each page
    assert all(f"#{i} finetune" in text for i in range(1, 81))
    assert "1,234,567.89" in text
    assert "98,765,431.20" in text  # 80 x 1,234,567.89
    assert "HK$ 9,876,543.20" in text  # 80 x 123,456.79 co-pay


def test_names_the_core_fonts_cannot_show_are_replaced_not_fatal() -> None:
    invoice = sample_invoice(1, name="香港大學 " + "x" * 200)
    text = pdf_text(invoice_pdf(invoice))
    assert "???? xxx" in text
    rows = text.splitlines()
    organisation = rows[rows.index("Organisation") + 1]
    assert organisation.startswith("???? xxx")  # Chinese characters print as "?"
    assert organisation.endswith("...")  # cut to fit the page
    assert len(organisation) < 200
    allocation = next(row for row in rows if row.startswith("#7 "))
    assert allocation.startswith("#7 ???? xxx") and allocation.endswith("...")


def test_an_invoice_without_jobs_still_renders() -> None:
    invoice = sample_invoice(0)
    text = pdf_text(invoice_pdf(invoice))
    assert "No jobs were settled in this period." in text
    assert "HK$ 0.00" in text
