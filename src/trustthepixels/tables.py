"""The one writer of the markdown tables in every report (report.md, matrix.md, sweep summaries, model cards), of a
number with its interval, and of a report's text from its template."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
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


def render(template: Path, **values: Any) -> str:
    """A report's text: its Jinja template (a `.md` file beside the code that fills it in) with `values`. A block
    tag's own line leaves no blank line behind."""
    import jinja2

    options = {"trim_blocks": True, "lstrip_blocks": True, "keep_trailing_newline": True}
    return jinja2.Template(template.read_text(), undefined=jinja2.StrictUndefined, **options).render(**values)
