"""The loss-curve markdown (spotshift/loss_curve.py): at most 60 chart columns whatever the number of
records, the eval loss where one was measured, the last points in a table, nothing drawn from nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from spotshift.loss_curve import CHART_COLUMNS, EIGHTHS, chart, columns, loss_curve_key, render_loss_curve
from training.contract import MetricsRecord

AT = datetime(2026, 11, 28, 9, tzinfo=UTC)


def record(step: int, loss: float | None = None, eval_loss: float | None = None) -> MetricsRecord:
    return MetricsRecord(step=step, loss=loss, eval_loss=eval_loss, at=AT)


def decaying(steps: range) -> list[MetricsRecord]:
    return [record(s, 5.0 * 0.5 ** (s / 500) + 1.0) for s in steps]


def table_rows(markdown: str) -> list[tuple[str, str, str]]:
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| step")]
    return [tuple(cell.strip() for cell in row.strip("|").split("|")) for row in rows]


def chart_lines(markdown: str) -> list[str]:
    lines = markdown.splitlines()
    return lines[lines.index("```text") + 1:lines.index("```", lines.index("```text") + 1)]


def test_a_long_run_is_drawn_in_at_most_60_columns_of_equal_step_width_averaging_their_losses():
    records = decaying(range(10, 5010, 10))  # 500 records
    cols = columns(records)
    assert len(cols) == CHART_COLUMNS
    assert (cols[0].first_step, cols[-1].last_step) == (10, 5000)
    in_first = [r.loss for r in records if r.step <= cols[0].last_step]
    assert cols[0].loss == pytest.approx(sum(in_first) / len(in_first))
    assert all(a.loss > b.loss for a, b in zip(cols, cols[1:]))  # the decay survives the averaging
    bars = [line.split("┤", 1)[1] for line in chart_lines(render_loss_curve("job-1", records)) if "┤" in line]
    assert len(bars) == 8 and max(len(b) for b in bars) == CHART_COLUMNS
    assert bars[0][0] == "█" and bars[-1][-1] == EIGHTHS[1]  # highest loss fills the top row, lowest one eighth


def test_a_short_run_has_one_column_per_record_widened_to_fill_the_chart():
    records = decaying(range(10, 160, 10))  # 15 records -> 4 characters each
    assert [c.first_step for c in columns(records)] == [r.step for r in records]
    bottom = chart(columns(records))[7].split("┤", 1)[1]
    assert len(bottom) == 60 and all(len(set(bottom[i:i + 4])) == 1 for i in range(0, 60, 4))
    assert bottom[:4] == "████" and bottom[-4:] == EIGHTHS[1] * 4


def test_the_eval_loss_is_a_table_column_and_a_row_under_the_chart_where_it_was_measured():
    records = [record(s, 4.0 - s / 100, eval_loss=4.2 - s / 100 if s % 50 == 0 else None) for s in range(10, 110, 10)]
    markdown = render_loss_curve("job-1", records)
    assert "eval loss **3.2000** at step 100" in markdown
    assert table_rows(markdown)[-2:] == [("90", "3.1000", "–"), ("100", "3.0000", "3.2000")]
    [eval_row] = [line for line in chart_lines(markdown) if line.lstrip().startswith("eval")]
    marks = eval_row.split("eval", 1)[1][2:]
    assert sorted({i // 4 for i, ch in enumerate(marks) if ch != " "}) == [4, 9]  # columns of steps 50 and 100
    assert "eval" not in render_loss_curve("job-1", decaying(range(10, 110, 10)))


def test_the_table_holds_the_last_points_and_the_headline_the_lowest_loss():
    records = decaying(range(1, 101))
    markdown = render_loss_curve("job-1", records, table_rows=3)
    assert [row[0] for row in table_rows(markdown)] == ["98", "99", "100"]
    assert f"(lowest {records[-1].loss:.4f} at step 100)" in markdown and "100 records" in markdown


def test_no_records_no_chart_and_non_finite_losses_do_not_break_the_scale():
    assert render_loss_curve("job-1", []).endswith("No loss reported yet.")
    assert "```" not in render_loss_curve("job-1", [record(10, 3.0)])  # one point: no curve to draw
    records = [record(10, 3.0), record(20, math.nan), record(30, math.inf), record(40, 2.0)]
    markdown = render_loss_curve("job-1", records)
    assert ("20", "nan") in table_rows(markdown) and "3.0000 ┤" in markdown and "2.0000 ┤" in markdown
    assert chart([]) == []


def test_the_key_is_what_prefect_accepts():
    assert loss_curve_key("job-1a2b") == "loss-curve-job-1a2b"
    assert loss_curve_key("Job_42/x") == "loss-curve-job-42-x"
