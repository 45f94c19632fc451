"""Speeds and tables as people read them: one rate format, tables fitted to a terminal, plain rows in a pipe."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from rich.text import Text

from text4d.formatting import Column, format_rate, print_table


@pytest.mark.parametrize(
    ("rate", "shown"),
    [(25.04, "25.0 it/s"), (1.0, "1.0 it/s"), (0.12, "8.3 s/it"), (0.04, "25.0 s/it"), (0.004, "250 s/it"), (0.0, "— it/s"), (float("nan"), "— it/s")],
)
def test_slow_rates_read_as_seconds_per_iteration(rate, shown):
    assert format_rate(rate) == shown


COLUMNS = (
    Column("run", wrap=16),
    Column("date", drop=2),
    Column("stages done", drop=3),
    Column("iteration", right=True),
    Column("best"),
    Column("edits", right=True, drop=1),
    Column("problems", wrap=16),
)
ROWS = [
    [Text("sample-20261206-203755-replay-20261207-101010"), "2026-12-06 20:37:55", "static, dynamic", "1500", "PSNR 23.45 dB", "3",
     "no checkpoint: checkpoints/latest.json is missing"],
    ["dnerf-20261205-120000", "2026-12-05 12:00:00", "—", "—", "loss 0.01234", "0", ""],
]


def terminal(width: int) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=True, color_system=None), out


@pytest.mark.parametrize("width", [80, 100, 200])
def test_a_terminal_table_leaves_columns_out_instead_of_squeezing_them(width):
    console, out = terminal(width)
    print_table(console, COLUMNS, ROWS, "2 run(s)")
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= width
    header = next(line for line in lines if line.startswith("┃"))
    shown = [cell.strip() for cell in header.strip("┃").split("┃")]
    assert set(shown) <= {c.name for c in COLUMNS}, shown  # whole headers: no column squeezed to a letter
    for name in ("run", "iteration", "best", "problems"):  # never left out
        assert name in shown, (name, header)
    assert "PSNR 23.45 dB" in out.getvalue() and "1500" in out.getvalue()  # values whole too
    if width >= 200:
        assert shown == [c.name for c in COLUMNS]  # room for everything: nothing is left out


def test_a_pipe_gets_one_plain_tab_separated_line_per_row():
    out = io.StringIO()
    console = Console(file=out, width=40)  # not a terminal, and narrow: still no wrapping
    print_table(console, COLUMNS, ROWS, "2 run(s)")
    lines = out.getvalue().splitlines()
    assert lines[0].split("\t") == [c.name for c in COLUMNS]
    assert len(lines) == 1 + len(ROWS)
    first = lines[1].split("\t")
    assert first[0] == "sample-20261206-203755-replay-20261207-101010" and first[3] == "1500"
    assert "\x1b" not in out.getvalue()


def test_text4d_list_in_a_pipe_prints_one_line_per_run(tmp_path):
    from typer.testing import CliRunner

    from cli import app
    from text4d.recording import RunFolder

    names = [RunFolder.create(name, tmp_path).path.name for name in ("a-rather-long-run-name-for-a-narrow-table", "sample")]
    result = CliRunner().invoke(app, ["list", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split("\t")[0] == "run" and len(lines) == 3
    assert sorted(line.split("\t")[0] for line in lines[1:]) == sorted(names)  # whole names, never wrapped
