from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

from gridex.core.csvexport import iter_csv, safe_cell, write_csv


def test_text_that_a_spreadsheet_would_evaluate_is_quoted_as_text() -> None:
    for formula in ("=1+1", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"):
        assert safe_cell(formula) == "'" + formula
    assert safe_cell("plain") == "plain"
    assert safe_cell("a=b") == "a=b"


def test_numbers_dates_and_blanks_keep_their_meaning() -> None:
    assert safe_cell(-5) == -5
    assert safe_cell(Decimal("-0.125000")) == Decimal("-0.125000")
    assert safe_cell(None) == ""
    assert safe_cell(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def test_the_streamed_and_whole_forms_are_the_same_csv() -> None:
    rows = [("=evil", -2, None), ("ok", 3, "x")]
    whole = write_csv(("name", "n", "note"), rows)
    assert "".join(iter_csv(("name", "n", "note"), rows)) == whole
    parsed = list(csv.reader(io.StringIO(whole)))
    assert parsed == [["name", "n", "note"], ["'=evil", "-2", ""], ["ok", "3", "x"]]
