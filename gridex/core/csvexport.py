"""CSV that is safe to open in a spreadsheet.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel, LibreOffice and Google Sheets as a formula, so a user who names themselves
``=HYPERLINK(...)`` could run one on an operator's machine (CSV injection). Such text cells get a
leading apostrophe, which spreadsheets show as nothing and read as "this is text". Numbers are
written as they are, so a negative amount stays a number. Every CSV Gridex produces goes
through here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal

from gridex.core.clock import utc_iso

Cell = str | int | float | Decimal | bool | datetime | None

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Cell) -> str | int | float | Decimal | bool:
    """``value`` as a CSV cell that a spreadsheet will not evaluate."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc_iso(value)
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def iter_csv(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> Iterator[str]:
    """The CSV text line by line (header first), for streaming responses."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([safe_cell(c) for c in header])
    yield _take(buffer)
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
        yield _take(buffer)


def csv_row(row: Sequence[Cell]) -> str:
    """One CSV line (for rows that arrive asynchronously, after ``csv_row(header)``)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([safe_cell(c) for c in row])
    return buffer.getvalue()


def write_csv(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """The whole CSV text."""
    return "".join(iter_csv(header, rows))


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text
