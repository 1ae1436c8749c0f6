"""Plain-text tables for the terminal (plan, status, the render summary)."""

from __future__ import annotations

from typing import Collection, Sequence


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], left: Collection[int] = (0,)) -> list[str]:
    """Aligned lines: columns in ``left`` flush left (names, text), the rest flush right (numbers)."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
            for row in (header, *rows)]
