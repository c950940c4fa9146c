"""The loss-curve artifact of a job: the loss (and eval loss) of metrics.jsonl as markdown the Prefect
UI renders without images, a block-character chart of at most 60 columns and the last points. Pure."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

CHART_COLUMNS = 60
CHART_ROWS = 8
TABLE_ROWS = 8
EIGHTHS = " ▁▂▃▄▅▆▇█"  # 0..8 eighths of a character cell, filled from the bottom


class LossPoint(Protocol):
    """What a point needs (training.contract.MetricsRecord and the HTTP API's MetricPoint have it)."""

    step: int
    loss: float | None
    eval_loss: float | None


@dataclass(frozen=True)
class Column:
    """One column of the chart: the records of a range of steps."""

    first_step: int
    last_step: int
    loss: float | None  # mean training loss of its records (finite values only)
    eval_loss: float | None  # the last eval loss measured in it


def loss_curve_key(job_id: str) -> str:
    """'loss-curve-<job id>', in what Prefect allows in an artifact key (lowercase letters, digits, '-')."""
    return "loss-curve-" + re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def columns(points: Sequence[LossPoint], limit: int = CHART_COLUMNS) -> list[Column]:
    """The points in at most `limit` columns of equal step width, oldest first; one column per
    point when there are no more than `limit`. A column with no point in its steps is left empty."""
    if not points:
        return []
    if len(points) <= limit:
        return [Column(p.step, p.step, _finite(p.loss), _finite(p.eval_loss)) for p in points]
    first, last = points[0].step, points[-1].step
    width = (last - first + 1) / limit
    groups: list[list[LossPoint]] = [[] for _ in range(limit)]
    for p in points:
        groups[min(limit - 1, int((p.step - first) / width))].append(p)
    out = []
    for i, group in enumerate(groups):
        losses = [v for v in (_finite(p.loss) for p in group) if v is not None]
        evals = [v for v in (_finite(p.eval_loss) for p in group) if v is not None]
        out.append(Column(first_step=first + math.ceil(i * width), last_step=first + math.ceil((i + 1) * width) - 1,
                          loss=sum(losses) / len(losses) if losses else None, eval_loss=evals[-1] if evals else None))
    return out


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def chart(cols: Sequence[Column], rows: int = CHART_ROWS, width: int = CHART_COLUMNS) -> list[str]:
    """The training loss as bars of block characters (the lowest value one eighth high), the loss
    axis labelled at its top, middle and bottom; under it the steps, and the eval loss on the same
    scale where one was measured. A column is as many characters wide as fit `width` (at most 4)."""
    values = [v for c in cols for v in (c.loss, c.eval_loss) if v is not None]
    if not values:
        return []
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    heights = [None if c.loss is None else 1 + round((c.loss - lo) / span * (rows * 8 - 1)) for c in cols]
    labels = {rows - 1: _num(hi), rows // 2: _num((hi + lo) / 2), 0: _num(lo)} if hi > lo else {0: _num(lo)}
    pad, cell = max(len(s) for s in labels.values()), max(1, min(4, width // len(cols)))
    lines = []
    for row in range(rows - 1, -1, -1):
        cells = "".join(" " if h is None else EIGHTHS[max(0, min(8, h - row * 8))] for h in heights)
        lines.append(f"{labels.get(row, ''):>{pad}} ┤{_widen(cells, cell)}".rstrip())
    lines.append(" " * pad + " └" + "─" * (len(cols) * cell))
    first, last = f"step {cols[0].first_step}", str(cols[-1].last_step)
    room = len(cols) * cell - len(first)
    lines.append(" " * (pad + 2) + (first + last.rjust(room) if room > len(last) else f"{first} … {last}"))
    if any(c.eval_loss is not None for c in cols):
        evals = "".join(" " if c.eval_loss is None else EIGHTHS[1 + round((c.eval_loss - lo) / span * 7)] for c in cols)
        lines.append(f"{'eval':>{pad}}  {_widen(evals, cell)}".rstrip())
    return lines


def _widen(cells: str, cell: int) -> str:
    return "".join(ch * cell for ch in cells)


def _headline(points: Sequence[LossPoint]) -> str:
    last = points[-1]
    parts = [f"step **{last.step}**"]
    trained = [p for p in points if _finite(p.loss) is not None]
    if trained:
        best = min(trained, key=lambda p: p.loss)
        parts.append(f"loss **{_num(trained[-1].loss)}** (lowest {_num(best.loss)} at step {best.step})")
    evaluated = [p for p in points if p.eval_loss is not None]
    if evaluated:
        parts.append(f"eval loss **{_num(evaluated[-1].eval_loss)}** at step {evaluated[-1].step}")
    parts.append(f"{len(points)} record{'s' if len(points) != 1 else ''}")
    return " · ".join(parts)


def render_loss_curve(job_id: str, points: Sequence[LossPoint], *, table_rows: int = TABLE_ROWS) -> str:
    """The artifact's markdown: a headline, the chart in a text block, the last `table_rows` points
    (with an eval loss column when any record has one)."""
    title = f"### Loss: job `{job_id}`"
    if not points:
        return f"{title}\n\nNo loss reported yet."
    lines = [title, "", _headline(points)]
    drawn = chart(columns(points)) if len(points) > 1 else []
    if drawn:
        lines += ["", "```text", *drawn, "```"]
    if any(p.eval_loss is not None for p in points):
        lines += ["", "| step | loss | eval loss |", "|---:|---:|---:|"]
        lines += [f"| {p.step} | {_num(p.loss)} | {_num(p.eval_loss)} |" for p in points[-table_rows:]]
    else:
        lines += ["", "| step | loss |", "|---:|---:|"]
        lines += [f"| {p.step} | {_num(p.loss)} |" for p in points[-table_rows:]]
    return "\n".join(lines)
