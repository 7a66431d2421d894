"""A listing view as CSV (streamed), XLSX (numbers and dates typed, header frozen) or PDF (a
paginated table with title, filters, generation time and totals), in bounded memory.

The rows come a keyset page at a time from `ingest.queries.iter_actions`; XLSX and PDF are built
in a temporary file (openpyxl's write-only mode, reportlab's canvas page by page), never as a
whole document in memory.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from ingest.domain import money_text
from ingest.queries import ActionRow

COLUMNS = ("ActionId", "CampaignId", "ActionTrackerId", "OrderId", "PartnerId", "EventDate",
           "LockDate", "Amount", "Payout", "Currency", "CustomerStatus", "State",
           "Modifications")  # fmt: skip
FORMATS = {"csv": "text/csv", "pdf": "application/pdf",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}  # fmt: skip


def _values(r: ActionRow) -> list[Any]:
    return [r.id, r.campaign_id, r.event_type_id, r.order_id, r.partner_id, r.event_at,
            r.lock_at, Decimal(money_text(r.amount)), Decimal(money_text(r.payout)), r.currency,
            r.customer_status or "", r.state, r.mod_count]  # fmt: skip


def _safe(value: Any) -> Any:
    """Neutralise text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[ActionRow]) -> Iterator[bytes]:
    """The rows as CSV (UTF-8 with BOM so Excel reads it), a few hundred rows per chunk."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    yield b"\xef\xbb\xbf" + buf.getvalue().encode()
    buf.seek(0)
    buf.truncate()
    for k, r in enumerate(rows, 1):
        vals = _values(r)
        vals[5], vals[6] = r.event_at.isoformat(), r.lock_at.isoformat()
        writer.writerow([_safe(v) for v in vals])
        if k % 500 == 0:
            yield buf.getvalue().encode()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue().encode()


def write_xlsx(rows: Iterable[ActionRow], path: Path, title: str) -> int:
    """Write the rows to an XLSX file; return how many."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    wb = Workbook(write_only=True)
    ws = wb.create_sheet(title[:31] or "actions")
    ws.freeze_panes = "A2"
    bold = Font(bold=True)
    header = []
    for name in COLUMNS:
        cell = WriteOnlyCell(ws, value=name)
        cell.font = bold
        header.append(cell)
    ws.append(header)
    n = 0
    money = WriteOnlyCell(ws)
    money.number_format = "#,##0.00"
    for r in rows:
        values = _values(r)
        # Only the money cells carry a style of their own; dates get openpyxl's date format,
        # other values none: a styled cell per value would triple the export's time.
        cells: list[Any] = [_safe(v) if isinstance(v, str) else v for v in values]
        cells[5], cells[6] = (v.astimezone(UTC).replace(tzinfo=None) for v in values[5:7])
        for k in (7, 8):
            cell = WriteOnlyCell(ws, value=float(values[k]))  # Excel's numbers are doubles
            cell.number_format = money.number_format
            cells[k] = cell
        ws.append(cells)
        n += 1
    wb.save(path)
    return n


PDF_COLUMNS = (("Action", 110), ("Order", 80), ("Partner", 60), ("Tracker", 45),
               ("Event date", 80), ("Lock date", 80), ("Amount", 65), ("Payout", 60),
               ("State", 60), ("Mods", 30))  # fmt: skip


def write_pdf(
    rows: Iterable[ActionRow], path: Path, title: str, filters: list[tuple[str, str]]
) -> int:
    """Write the rows as a paginated PDF table with a title, the filters, the time and totals."""
    table = _PdfTable(path, title, filters)
    for r in rows:
        table.row(r)
    return table.finish()


class _PdfTable:
    """A landscape A4 table drawn a row at a time: the header repeats on every page."""

    margin, line = 36, 12

    def __init__(self, path: Path, title: str, filters: list[tuple[str, str]]) -> None:
        from reportlab.lib.pagesizes import A4, landscape
        from reportlab.pdfgen.canvas import Canvas

        self.width, self.height = landscape(A4)
        self.pdf = Canvas(str(path), pagesize=(self.width, self.height), pageCompression=1)
        self.pdf.setTitle(title)
        self.title, self.filters = title, filters
        self.generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        self.page, self.y = 0, 0.0
        self.n, self.amount, self.payout = 0, 0, 0
        self.new_page()

    def new_page(self) -> None:
        """Start a page: the title block on the first, then the footer and the column header."""
        pdf, margin = self.pdf, self.margin
        if self.page:
            pdf.showPage()
        self.page += 1
        y = self.height - margin
        if self.page == 1:
            y = self._title_block(y)
        pdf.setFont("Helvetica", 7)
        pdf.drawRightString(self.width - margin, margin / 2, f"{self.title} — page {self.page}")
        pdf.setFont("Helvetica-Bold", 7.5)
        x = margin
        for name, w in PDF_COLUMNS:
            pdf.drawString(x, y, name)
            x += w
        pdf.line(margin, y - 3, self.width - margin, y - 3)
        self.y = y - self.line
        pdf.setFont("Helvetica", 7.5)

    def _title_block(self, y: float) -> float:
        pdf = self.pdf
        pdf.setFont("Helvetica-Bold", 14)
        pdf.drawString(self.margin, y, self.title)
        y -= 16
        pdf.setFont("Helvetica", 8)
        pdf.drawString(self.margin, y, f"Generated {self.generated}")
        for label, value in self.filters:
            y -= 10
            pdf.drawString(self.margin, y, f"{label}: {value}")
        return y - 16

    def row(self, r: ActionRow) -> None:
        """Draw one action, starting a new page when this one is full."""
        if self.y < self.margin + self.line:
            self.new_page()
        cells = (r.id, r.order_id, r.partner_id, str(r.event_type_id),
                 r.event_at.strftime("%Y-%m-%d %H:%M"), r.lock_at.strftime("%Y-%m-%d %H:%M"),
                 money_text(r.amount), money_text(r.payout), r.state, str(r.mod_count))  # fmt: skip
        x = self.margin
        for (name, w), text in zip(PDF_COLUMNS, cells, strict=True):
            if name in ("Amount", "Payout"):
                self.pdf.drawRightString(x + w - 8, self.y, text)
            else:
                self.pdf.drawString(x, self.y, text[:24])
            x += w
        self.y -= self.line
        self.n += 1
        self.amount += r.amount
        self.payout += r.payout

    def finish(self) -> int:
        """Draw the totals line, save the file and return how many rows it holds."""
        if self.y < self.margin + 3 * self.line:
            self.new_page()
        pdf = self.pdf
        pdf.setFont("Helvetica-Bold", 8)
        y = self.y - 4
        pdf.line(self.margin, y + 9, self.width - self.margin, y + 9)
        pdf.drawString(self.margin, y, f"Totals: {self.n:,} actions · amount "
                       f"{money_text(self.amount)} · payout {money_text(self.payout)}")  # fmt: skip
        pdf.save()
        return self.n


def temp_path(suffix: str) -> Path:
    """A temporary file the caller removes once it has been sent."""
    fd, name = tempfile.mkstemp(prefix="returnsd-export-", suffix=suffix)
    os.close(fd)
    return Path(name)
