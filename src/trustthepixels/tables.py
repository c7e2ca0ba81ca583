"""The one writer of the markdown tables in every report (report.md, matrix.md, sweep summaries, model cards), and
of a number with its interval."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """The table's lines: the header, the rule under it, one line per row (an empty cell stays `| |`)."""

    def line(cells: Sequence[Any]) -> str:
        return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"

    return [line(header), "|" + "---|" * len(header), *(line(row) for row in rows)]


def text_table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """A plain-text table for a terminal: each column as wide as its widest cell, two spaces between columns."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(f"{c!s:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def with_interval(numbers: Mapping[str, Any], key: str, fmt: str = "{:.3f}", missing: str = "-") -> str:
    """`0.801 [0.703, 0.889]`: `numbers[key]` and its 95% interval (`<key>_lo`, `<key>_hi`) when it has one (a
    NaN bound: a class is missing); `missing` when there is no value."""
    value, low, high = numbers.get(key), numbers.get(f"{key}_lo"), numbers.get(f"{key}_hi")
    if value is None or value != value:
        return missing
    known = low is not None and high is not None and low == low and high == high
    return fmt.format(value) + (f" [{fmt.format(low)}, {fmt.format(high)}]" if known else "")
