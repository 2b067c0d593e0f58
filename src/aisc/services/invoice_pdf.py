"""A monthly invoice as a PDF: one row per job, the totals, and who pays what.

Drawn with fpdf2's core fonts (nothing to download). Those fonts cover Latin-1 only, so any other
character in a name prints as "?". Amounts come from integer cents and print as HK$ with two
decimals; the same invoice always renders to the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from fpdf import FPDF
from fpdf.enums import Align, XPos, YPos

from aisc.domain.money import format_cents, format_rate
from aisc.services.invoices import Invoice, InvoiceLine

CENTRE = "AI Supercomputing Centre"
FONT = "Helvetica"
ROW_H = 6.0
ELLIPSIS = "..."


@dataclass(frozen=True)
class Column:
    title: str
    width: float  # mm; the columns fill the landscape A4 page between its margins (277 mm)
    align: Align


COLUMNS = (
    Column("Job", 70, Align.L),
    Column("Allocation", 67, Align.L),
    Column("GPUs", 14, Align.R),
    Column("GPU-hours", 22, Align.R),
    Column("Rate", 14, Align.R),
    Column("Charge (HK$)", 30, Align.R),
    Column("Subsidy (HK$)", 30, Align.R),
    Column("Co-pay (HK$)", 30, Align.R),
)


def latin1(text: str) -> str:
    """What the core fonts can print: characters outside Latin-1 become '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def hkd(cents: int) -> str:
    return format_cents(cents)


def gpu_hours(gpu_seconds: int) -> str:
    return f"{gpu_seconds / 3600:,.2f}"


class _InvoiceDocument(FPDF):
    def __init__(self, number: str) -> None:
        super().__init__(orientation="landscape", unit="mm", format="A4")
        self.number = number

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(FONT, size=8)
        self.set_text_color(110)
        self.cell(0, 5, latin1(f"Invoice {self.number}"), align=Align.L)
        self.set_x(self.l_margin)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align=Align.R)
        self.set_text_color(0)


def _fit(pdf: FPDF, text: str, width: float) -> str:
    """The text, shortened with an ellipsis to fit the cell's width."""
    text = latin1(text)
    room = width - 2 * pdf.c_margin
    if pdf.get_string_width(text) <= room:
        return text
    while text and pdf.get_string_width(text + ELLIPSIS) > room:
        text = text[:-1]
    return text + ELLIPSIS


def _row(pdf: FPDF, values: list[str], bold: bool = False, fill: bool = False) -> None:
    pdf.set_font(FONT, style="B" if bold else "", size=9)
    for column, value in zip(COLUMNS, values, strict=True):
        pdf.cell(
            column.width,
            ROW_H,
            _fit(pdf, value, column.width),
            border="B",
            align=column.align,
            fill=fill,
        )
    pdf.ln(ROW_H)


def _table_header(pdf: FPDF) -> None:
    pdf.set_fill_color(230, 234, 240)
    _row(pdf, [c.title for c in COLUMNS], bold=True, fill=True)


def _line_values(line: InvoiceLine) -> list[str]:
    return [
        f"#{line.job_id} {line.job_name}",
        f"#{line.allocation_id} {line.allocation_name}",
        str(line.gpus),
        gpu_hours(line.gpu_seconds),
        format_rate(line.rate_bp),
        hkd(line.charge_cents),
        hkd(line.subsidy_cents),
        hkd(line.copay_cents),
    ]


def invoice_pdf(invoice: Invoice) -> bytes:
    """The organisation's monthly invoice as PDF bytes."""
    pdf = _InvoiceDocument(invoice.number)
    issued = datetime.combine(invoice.period_end, time.min, tzinfo=UTC)
    pdf.set_creation_date(issued)  # the same invoice renders to the same bytes
    pdf.set_title(latin1(f"Invoice {invoice.number}"))
    pdf.set_author(CENTRE)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()

    pdf.set_font(FONT, style="B", size=16)
    pdf.cell(0, 9, CENTRE, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, size=10)
    pdf.cell(0, 5, "Publicly subsidised AI compute", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    last_day = invoice.period_end - timedelta(days=1)
    details = [
        ("Invoice", invoice.number),
        ("Organisation", invoice.org_name),
        ("Period", f"{invoice.period_start:%Y-%m-%d} to {last_day:%Y-%m-%d} (UTC)"),
        ("Jobs", str(len(invoice.lines))),
    ]
    for label, value in details:
        pdf.set_font(FONT, style="B", size=10)
        pdf.cell(32, 6, label)
        pdf.set_font(FONT, size=10)
        width = pdf.w - pdf.r_margin - pdf.get_x()
        pdf.cell(width, 6, _fit(pdf, value, width), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)

    _table_header(pdf)
    if not invoice.lines:
        pdf.set_font(FONT, style="I", size=9)
        pdf.cell(0, ROW_H, "No jobs were settled in this period.", new_x=XPos.LMARGIN)
        pdf.ln(ROW_H)
    for line in invoice.lines:
        if pdf.will_page_break(ROW_H):
            pdf.add_page()
            _table_header(pdf)
        _row(pdf, _line_values(line))
    if pdf.will_page_break(ROW_H * 6):
        pdf.add_page()
    _row(
        pdf,
        [
            "Total",
            "",
            "",
            gpu_hours(invoice.gpu_seconds),
            "",
            hkd(invoice.charge_cents),
            hkd(invoice.subsidy_cents),
            hkd(invoice.copay_cents),
        ],
        bold=True,
    )
    pdf.ln(6)

    pdf.set_font(FONT, size=10)
    summary = [
        ("Total charge", invoice.charge_cents, ""),
        ("Subsidy, paid from the public fund", invoice.subsidy_cents, ""),
        ("Co-pay due from the organisation", invoice.copay_cents, "B"),
    ]
    for label, cents, style in summary:
        pdf.set_font(FONT, style=style, size=10)
        pdf.cell(80, 6, label)
        pdf.cell(40, 6, f"HK$ {hkd(cents)}", align=Align.R, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
    pdf.set_font(FONT, size=9)
    pdf.multi_cell(
        0,
        5,
        latin1(
            f"The subsidy of HK$ {hkd(invoice.subsidy_cents)} is paid from the public fund "
            f"under the AI subsidy scheme. The co-pay of HK$ {hkd(invoice.copay_cents)} is due "
            f"from {invoice.org_name}. Usage is billed per second at the list price in force "
            "when it ran; each job's charge is its subsidy plus its co-pay."
        ),
    )
    return bytes(pdf.output())
