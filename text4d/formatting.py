"""How numbers and tables read for people: one speed format everywhere, tables that survive pipes and 80 columns.

Free of torch and GUI imports on purpose: the CLI, the batch driver and both studios use it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

FOLD_MIN = 16  # narrowest a wrapping column gets before other columns are left out


def format_rate(it_per_s: float) -> str:
    """An optimisation speed as people read it: "12.5 it/s", or "8.3 s/it" below one iteration a second.

    Every place that shows a speed (studio status, headless progress, batch table) uses this, so a
    CPU run taking seconds per iteration reads "8.3 s/it" instead of "0.0 it/s"; "—" is not measured yet.
    """
    if not math.isfinite(it_per_s) or it_per_s <= 0.0:
        return "— it/s"
    if it_per_s >= 1.0:
        return f"{it_per_s:.1f} it/s"
    seconds = 1.0 / it_per_s
    return f"{seconds:.1f} s/it" if seconds < 100.0 else f"{seconds:.0f} s/it"


@dataclass(frozen=True)
class Column:
    """One column of a :func:`print_table` table.

    Attributes:
        name: the header.
        style: rich style of its cells on a terminal.
        right: right-aligned (numbers).
        drop: on a terminal too narrow for every column, columns are left out in this order
            (1 first, then 2, ...); 0 = always shown.
        wrap: free text (names, paths, errors) that wraps inside its cell instead of widening the
            table; the column is never narrower than this many characters (or its longest line).
    """

    name: str
    style: str = ""
    right: bool = False
    drop: int = 0
    wrap: int = 0


Cell = str | Text


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text(str(cell))  # a plain str is literal, never rich markup


def _needed(column: Column, cells: list[Text]) -> int:
    """Width the column needs: its longest line, or for a wrapping column at most ``wrap`` characters."""
    longest = max([cell_len(column.name), *(cell_len(line) for c in cells for line in c.plain.splitlines() or [""])])
    return min(longest, max(column.wrap, cell_len(column.name))) if column.wrap else longest


def fitted_table(columns: Sequence[Column], rows: Sequence[Sequence[Cell]], title: str | None, width: int) -> Table:
    """A rich table that fits ``width`` columns: less important columns are left out, none is squeezed to a letter."""
    texts = [[_text(c) for c in row] for row in rows]
    needed = {i: _needed(col, [row[i] for row in texts]) for i, col in enumerate(columns)}
    shown = list(range(len(columns)))
    # A box-drawn table spends 3 characters per column (padding and a rule) and one for its edge.
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop)
    while droppable and sum(needed[i] + 3 for i in shown) + 1 > width:
        shown.remove(droppable.pop(0))
    table = Table(title=title, header_style="bold")
    for i in shown:
        col = columns[i]
        table.add_column(col.name, style=col.style, justify="right" if col.right else "left", no_wrap=not col.wrap,
                         overflow="fold" if col.wrap else "ellipsis", min_width=needed[i])
    for row in texts:
        table.add_row(*(row[i] for i in shown))
    return table


def plain_rows(columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> str:
    """Tab-separated rows under a header line, for pipes and files (no colours, no wrapping, one line per row)."""
    lines = ["\t".join(c.name for c in columns)]
    for row in rows:
        lines.append("\t".join("; ".join(_text(c).plain.replace("\t", " ").splitlines()) for c in row))
    return "\n".join(lines)


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]], title: str | None = None) -> None:
    """A table on a terminal (fitted to its width), plain tab-separated rows when output goes to a pipe or file."""
    if console.is_terminal:
        console.print(fitted_table(columns, rows, title, console.width))
    elif not console.quiet:  # straight to the file: rich would expand the tabs into spaces
        console.file.write(plain_rows(columns, rows) + "\n")
