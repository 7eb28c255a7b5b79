"""The paper's published numbers (its Tables 1-3, exactly as printed) and our distance to them.

``paper_numbers.csv`` holds one line per printed cell: ``table`` ("Table 2"), ``row`` (1-based
position in the printed table, so the two rows Table 2 prints as ``SRT_Final`` stay apart),
``label`` as printed, ``benchmark`` (this project's benchmark name), ``printed`` (the text as
printed: ``61.50%``, ``0.7515``, ``.00833``, or ``\\`` for a cell without a number) and ``note``.
A line with an empty benchmark carries a note about its whole row.

Printed numbers are rounded, and not all to the same precision (Table 1 prints fractions with
three to five decimals, Tables 2 and 3 percentages with two). The difference to ours is taken
after rounding our accuracy to the printed precision, so a result equal to the paper's is
exactly zero in every cell, whichever table prints it.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from mgrpo.report import PAPER_NUMBERS

COLUMNS = ("table", "row", "label", "benchmark", "printed", "note")
NO_VALUE = ("\\", "-", "")  # printed where a table has no number
_PERCENT = re.compile(r"\d+(\.\d+)?%")
_FRACTION = re.compile(r"\d*\.\d+|[01]")


@dataclass(frozen=True)
class Printed:
    """One printed cell: its text and the number it states, in the unit it was printed in."""

    text: str
    value: Decimal | None  # None: the paper printed no number here
    percent: bool  # printed as a percentage (else as a fraction)

    @property
    def fraction(self) -> Decimal | None:
        if self.value is None:
            return None
        return self.value.scaleb(-2) if self.percent else self.value

    def display(self) -> str:
        """The printed number as a percentage, keeping its printed digits (0.7515 -> 75.15%)."""
        if self.value is None:
            return ""
        return f"{self.value if self.percent else self.value.scaleb(2)}%"

    @property
    def point_decimals(self) -> int:
        """Decimals of this cell in percentage points: the precision a difference can claim."""
        assert self.value is not None
        return max(0, -self.value.as_tuple().exponent - (0 if self.percent else 2))

    def difference(self, ours: float) -> Decimal | None:
        """Ours minus printed, in percentage points, ours rounded as the paper rounds this cell."""
        if self.value is None:
            return None
        mine = Decimal(repr(float(ours)))
        if self.percent:
            mine = mine.scaleb(2)
        exponent = Decimal(1).scaleb(self.value.as_tuple().exponent)
        diff = mine.quantize(exponent, rounding=ROUND_HALF_UP) - self.value
        diff = diff if self.percent else diff.scaleb(2)
        return abs(diff) if diff == 0 else diff  # no "-0.00"


def parse_printed(text: str) -> Printed:
    """``61.50%`` / ``0.7515`` / ``.00833`` / ``\\`` -> :class:`Printed`; anything else: error."""
    text = text.strip()
    if text in NO_VALUE:
        return Printed(text, None, percent=False)
    if _PERCENT.fullmatch(text):
        return Printed(text, Decimal(text[:-1]), percent=True)
    if _FRACTION.fullmatch(text) and Decimal(text) <= 1:
        return Printed(text, Decimal(text), percent=False)
    raise ValueError(f"not a printed accuracy: {text!r} (expected e.g. 61.50%, 0.7515 or \\)")


@dataclass
class PaperRow:
    """One printed row: its label, cells by benchmark, and notes on the row or single cells."""

    number: int
    label: str
    cells: dict[str, Printed] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cell_notes: dict[str, str] = field(default_factory=dict)


@dataclass
class PaperTable:
    """One printed table: rows in printed order, benchmarks in printed column order."""

    name: str
    rows: dict[int, PaperRow] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=list)


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> dict[str, PaperTable]:
    """Read the published numbers; a malformed line is an error naming the file and line."""
    tables: dict[str, PaperTable] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: expected columns {list(COLUMNS)}, got {reader.fieldnames}")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            try:
                number = int(record["row"])
            except ValueError:
                raise ValueError(
                    f"{where}: row must be an integer, got {record['row']!r}"
                ) from None
            table = tables.setdefault(record["table"], PaperTable(record["table"]))
            row = table.rows.setdefault(number, PaperRow(number, record["label"]))
            if row.label != record["label"]:
                raise ValueError(
                    f"{where}: row {number} of {table.name} is labelled {row.label!r} above, "
                    f"not {record['label']!r}"
                )
            bench, note = record["benchmark"], record["note"].strip()
            if not bench:
                if record["printed"]:
                    raise ValueError(f"{where}: a printed value needs a benchmark")
                row.notes.append(note)
                continue
            if bench in row.cells:
                raise ValueError(f"{where}: {table.name} row {number} has {bench!r} twice")
            try:
                row.cells[bench] = parse_printed(record["printed"])
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            if note:
                row.cell_notes[bench] = note
            if bench not in table.benchmarks:
                table.benchmarks.append(bench)
    return tables


def paper_table(tables: Mapping[str, PaperTable], name: str) -> PaperTable:
    if name not in tables:
        raise ValueError(f"the paper has no {name!r} in the published numbers ({sorted(tables)})")
    return tables[name]
