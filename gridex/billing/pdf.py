"""The invoice as a PDF document (fpdf2): pure layout from plain values, no database.

A4 portrait: the platform and the document's number, dates and period; the customer and the
meters; the amount due; the table of lines with totals and tax; a bar chart of the month's daily
import and export; and a note on which lines the wallet already settled. Text uses the PDF core
font (Helvetica), so characters outside Latin-1 are replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from gridex.core.units import micros_to_money

INK = (33, 37, 41)
MUTED = (108, 117, 125)
ACCENT = (22, 101, 52)  # green
ACCENT_LIGHT = (220, 237, 225)
RULE = (206, 212, 218)
IMPORT_BAR = (220, 110, 40)
EXPORT_BAR = (40, 140, 90)


@dataclass(frozen=True, slots=True)
class DocLine:
    description: str
    quantity_wh: int | None
    unit_price_micros: int | None
    amount_micros: int
    settled: bool  # already settled through the wallet


@dataclass(frozen=True, slots=True)
class Document:
    platform: str
    title: str  # Invoice | Credit note
    number: str
    corrects: str | None
    status: str
    issued_at: datetime
    due_date: date
    period: str
    period_label: str
    region: str
    timezone: str
    currency: str
    customer_name: str
    customer_lines: list[str]
    meters: list[str]
    lines: list[DocLine]
    subtotal_micros: int
    tax_rate: str
    tax_micros: int
    total_micros: int
    settled_micros: int
    paid_micros: int
    corrected_micros: int
    amount_due_micros: int
    daily: list[tuple[str, int, int]] = field(default_factory=list)  # day, import Wh, export Wh


def _text(value: str) -> str:
    return value.encode("latin-1", "replace").decode("latin-1")


def _money(micros: int, currency: str) -> str:
    """``1234.5`` -> ``USD 1,234.50`` (cents shown; a sub-cent remainder keeps its digits)."""
    text = micros_to_money(abs(micros))
    whole, frac = text.split(".")
    frac = frac.rstrip("0")
    frac = frac + "0" * (2 - len(frac)) if len(frac) < 2 else frac
    sign = "-" if micros < 0 else ""
    return f"{sign}{currency} {int(whole):,}.{frac}"


def _price(micros: int | None) -> str:
    if micros is None:
        return ""
    return f"{micros_to_money(micros).rstrip('0').rstrip('.') or '0'} /kWh"


def _kwh(wh: int | None) -> str:
    if wh is None:
        return ""
    return f"{wh / 1000:,.3f} kWh"


class _Pdf(FPDF):
    def __init__(self, doc: Document) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        self.doc = doc
        self.set_auto_page_break(auto=True, margin=22)
        self.set_margins(18, 16, 18)
        self.set_title(_text(f"{doc.title} {doc.number}"))
        self.set_author(_text(doc.platform))
        self.set_creator(_text(doc.platform))

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("Helvetica", size=7.5)
        self.set_text_color(*MUTED)
        self.cell(
            0,
            4,
            _text(f"{self.doc.platform} - {self.doc.title} {self.doc.number}"),
            align="L",
        )
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R")


def render(doc: Document) -> bytes:
    pdf = _Pdf(doc)
    pdf.alias_nb_pages()
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    _header(pdf, doc, width)
    _parties(pdf, doc, width)
    _lines_table(pdf, doc, width)
    _totals(pdf, doc, width)
    if doc.daily:
        _chart(pdf, doc, width)
    _notes(pdf, doc, width)
    return bytes(pdf.output())


def _header(pdf: _Pdf, doc: Document, width: float) -> None:
    top = pdf.get_y()
    pdf.set_fill_color(*ACCENT)
    pdf.rect(pdf.l_margin, top, 3, 14, style="F")
    pdf.set_xy(pdf.l_margin + 6, top)
    pdf.set_font("Helvetica", "B", 18)
    pdf.set_text_color(*INK)
    pdf.cell(width / 2, 8, _text(doc.platform))
    pdf.set_font("Helvetica", "B", 16)
    pdf.set_text_color(*ACCENT)
    pdf.cell(width / 2 - 6, 8, _text(doc.title.upper()), align="R")
    pdf.set_xy(pdf.l_margin + 6, top + 8)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*MUTED)
    pdf.cell(width / 2, 5, _text(f"Community energy - region {doc.region}"))
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_text_color(*INK)
    pdf.cell(width / 2 - 6, 5, _text(doc.number), align="R")
    pdf.set_y(top + 19)
    pdf.set_draw_color(*RULE)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(4)


def _kv(pdf: _Pdf, x: float, label: str, value: str, label_w: float, value_w: float) -> None:
    pdf.set_x(x)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*MUTED)
    pdf.cell(label_w, 5, _text(label))
    pdf.set_font("Helvetica", "B", 8.5)
    pdf.set_text_color(*INK)
    pdf.cell(value_w, 5, _text(value), align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def _parties(pdf: _Pdf, doc: Document, width: float) -> None:
    top = pdf.get_y()
    left_w = width * 0.5
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_text_color(*MUTED)
    pdf.cell(left_w, 5, "BILLED TO", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", "B", 11)
    pdf.set_text_color(*INK)
    pdf.cell(left_w, 6, _text(doc.customer_name), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8.5)
    for line in doc.customer_lines:
        pdf.cell(left_w, 4.5, _text(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 8)
    pdf.set_text_color(*MUTED)
    pdf.cell(left_w, 5, "METERS", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*INK)
    pdf.multi_cell(left_w - 4, 4.5, _text(", ".join(doc.meters) or "-"))
    left_bottom = pdf.get_y()

    x = pdf.l_margin + left_w + 4
    box_w = width - left_w - 4
    pdf.set_xy(x, top)
    rows = [
        ("Issue date", doc.issued_at.strftime("%d %b %Y")),
        ("Billing period", doc.period_label),
        ("Due date", doc.due_date.strftime("%d %b %Y")),
        ("Status", doc.status.replace("_", " ").capitalize()),
    ]
    if doc.corrects:
        rows.append(("Corrects invoice", doc.corrects))
    for label, value in rows:
        _kv(pdf, x, label, value, box_w * 0.45, box_w * 0.55)
    pdf.set_xy(x, pdf.get_y() + 2)
    pdf.set_fill_color(*ACCENT_LIGHT)
    label = "Amount due" if doc.amount_due_micros >= 0 else "Credit to you"
    box_top = pdf.get_y()
    pdf.rect(x, box_top, box_w, 16, style="F")
    pdf.set_xy(x + 3, box_top + 2)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*ACCENT)
    pdf.cell(box_w - 6, 4, _text(label.upper()))
    pdf.set_xy(x + 3, box_top + 7)
    pdf.set_font("Helvetica", "B", 15)
    pdf.set_text_color(*INK)
    pdf.cell(box_w - 6, 7, _text(_money(abs(doc.amount_due_micros), doc.currency)), align="R")
    pdf.set_y(max(left_bottom, box_top + 16) + 6)


def _lines_table(pdf: _Pdf, doc: Document, width: float) -> None:
    cols = (width * 0.50, width * 0.16, width * 0.15, width * 0.19)
    pdf.set_fill_color(*INK)
    pdf.set_text_color(255, 255, 255)
    pdf.set_font("Helvetica", "B", 8.5)
    for title, w, align in zip(
        ("Description", "Quantity", "Unit price", "Amount"), cols, ("L", "R", "R", "R"), strict=True
    ):
        pdf.cell(w, 7, f" {title} " if align == "L" else f"{title} ", fill=True, align=align)
    pdf.ln(7)
    pdf.set_text_color(*INK)
    pdf.set_draw_color(*RULE)
    for i, line in enumerate(doc.lines):
        if i % 2:
            pdf.set_fill_color(246, 248, 249)
        else:
            pdf.set_fill_color(255, 255, 255)
        pdf.set_font("Helvetica", size=8.5)
        mark = " *" if line.settled else ""
        pdf.cell(cols[0], 6.5, _text(f" {line.description}{mark}"), fill=True)
        pdf.cell(cols[1], 6.5, _kwh(line.quantity_wh) + " ", fill=True, align="R")
        pdf.cell(cols[2], 6.5, _price(line.unit_price_micros) + " ", fill=True, align="R")
        pdf.set_font("Helvetica", "B" if line.amount_micros < 0 else "", 8.5)
        pdf.cell(cols[3], 6.5, micros_to_money(line.amount_micros) + " ", fill=True, align="R")
        pdf.ln(6.5)
    if not doc.lines:
        pdf.set_font("Helvetica", "I", 8.5)
        pdf.cell(width, 6.5, " No charges this period")
        pdf.ln(6.5)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(2)


def _totals(pdf: _Pdf, doc: Document, width: float) -> None:
    x = pdf.l_margin + width * 0.52
    label_w, value_w = width * 0.29, width * 0.19
    rate = f"{float(doc.tax_rate) * 100:g} %"
    rows: list[tuple[str, int, bool]] = [
        ("Subtotal", doc.subtotal_micros, False),
        (f"Tax ({rate})", doc.tax_micros, False),
        ("Total", doc.total_micros, True),
        ("Settled through your wallet *", -doc.settled_micros, False),
    ]
    if doc.paid_micros:
        rows.append(("Paid", -doc.paid_micros, False))
    if doc.corrected_micros:
        rows.append(("Credit notes", doc.corrected_micros, False))
    rows.append(("Amount due", doc.amount_due_micros, True))
    for label, amount, strong in rows:
        pdf.set_x(x)
        if strong:
            pdf.set_draw_color(*INK)
            pdf.line(x, pdf.get_y(), x + label_w + value_w, pdf.get_y())
        pdf.set_font("Helvetica", "B" if strong else "", 9.5 if strong else 8.5)
        pdf.set_text_color(*INK if strong else MUTED)
        pdf.cell(label_w, 6, _text(label))
        pdf.set_text_color(*INK)
        pdf.cell(value_w, 6, micros_to_money(amount) + " ", align="R")
        pdf.ln(6)
    pdf.set_x(x)
    pdf.set_font("Helvetica", size=7.5)
    pdf.set_text_color(*MUTED)
    pdf.cell(label_w + value_w, 4, _text(f"Amounts in {doc.currency}"), align="R")
    pdf.ln(8)


def _chart(pdf: _Pdf, doc: Document, width: float) -> None:
    height = 38.0
    if pdf.get_y() + height + 16 > pdf.h - 22:
        pdf.add_page()
    pdf.set_font("Helvetica", "B", 9.5)
    pdf.set_text_color(*INK)
    pdf.cell(width * 0.6, 6, "Daily energy this period")
    # Legend.
    pdf.set_font("Helvetica", size=7.5)
    lx = pdf.l_margin + width - 62
    for colour, label in ((IMPORT_BAR, "From the grid"), (EXPORT_BAR, "To the grid")):
        pdf.set_fill_color(*colour)
        pdf.rect(lx, pdf.get_y() + 2, 3, 3, style="F")
        pdf.set_xy(lx + 4, pdf.get_y())
        pdf.set_text_color(*MUTED)
        pdf.cell(26, 6, label)
        lx += 31
    pdf.ln(8)
    top = pdf.get_y()
    axis_w = 14.0
    x0 = pdf.l_margin + axis_w
    plot_w = width - axis_w
    peak = max([max(a, b) for _, a, b in doc.daily] + [1])
    scale_kwh = _nice_ceiling(peak / 1000)
    pdf.set_draw_color(*RULE)
    pdf.set_font("Helvetica", size=6.5)
    pdf.set_text_color(*MUTED)
    for step in range(5):
        value = scale_kwh * step / 4
        y = top + height - height * step / 4
        pdf.line(x0, y, x0 + plot_w, y)
        pdf.set_xy(pdf.l_margin, y - 2)
        pdf.cell(axis_w - 1.5, 4, f"{value:g}", align="R")
    pdf.set_xy(pdf.l_margin, top + height + 0.5)
    pdf.cell(axis_w - 1.5, 3.5, "kWh", align="R")
    n = len(doc.daily)
    slot = plot_w / n
    bar = max(0.4, slot * 0.36)
    for i, (day, imported, exported) in enumerate(doc.daily):
        x = x0 + i * slot + slot * 0.12
        for offset, wh, colour in ((0.0, imported, IMPORT_BAR), (bar, exported, EXPORT_BAR)):
            h = height * (wh / 1000) / scale_kwh if scale_kwh else 0
            if h > 0:
                pdf.set_fill_color(*colour)
                pdf.rect(x + offset, top + height - h, bar, h, style="F")
        if n <= 31 and (i % 2 == 0 or n <= 16):
            pdf.set_xy(x0 + i * slot, top + height + 0.5)
            pdf.cell(slot, 3.5, day[8:10], align="C")
    pdf.set_y(top + height + 8)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** len(str(int(value)))
    for step in (0.1, 0.2, 0.4, 0.6, 0.8, 1.0):
        if value <= step * magnitude:
            return float(step * magnitude)
    return float(magnitude)


def _notes(pdf: _Pdf, doc: Document, width: float) -> None:
    pdf.set_font("Helvetica", size=7.5)
    pdf.set_text_color(*MUTED)
    notes = [
        "* Settled through your wallet: local trades, fees, shortfall charges and feed-in credits "
        "were paid or credited when each market interval settled; they are shown for the full "
        "picture and are not due again.",
        f"Billing period in local time ({doc.timezone}). Energy quantities come from your meters' "
        "readings; the online invoice lists, for every line, the readings, trades and ledger "
        "entries behind it.",
        "Pay from your wallet in the app (Billing > Invoices > Pay) by the due date. A credit "
        "balance is paid into your wallet when the invoice is issued.",
    ]
    for note in notes:
        pdf.multi_cell(width, 3.6, _text(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(0.8)
