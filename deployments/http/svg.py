"""The job page's charts as inline SVG (no JavaScript): placements on a timeline per zone, and the
loss curve."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape

from spotshift.job_report import MigrationView, Placement

MARKET_COLOURS = {"spot": "#2f7ed8", "on_demand": "#e8833a"}
END_MARKS = {"completed": "✓", "preempted": "✕", "migrated": "→", "running": "▶", "cancelled": "■",
             "failed": "!", "stalled": "…", "reaped": "✕"}
WIDTH, LANE_H, LEFT, RIGHT, TOP = 960, 58, 120, 110, 26  # RIGHT: room for the last end label


def _x(at: datetime, start: datetime, span_s: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * max(0.0, (at - start).total_seconds()) / span_s


def _ticks(start: datetime, end: datetime) -> list[datetime]:
    """Round clock times across [start, end], about six of them."""
    span_min = max(1.0, (end - start).total_seconds() / 60)
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 240, 720, 1440, 2880) if span_min / s <= 7)
    first = start.replace(second=0, microsecond=0)
    first += timedelta(minutes=(-first.minute) % step if step < 60 else (60 - first.minute) % 60)
    ticks, at = [], first
    while at <= end:
        ticks.append(at)
        at += timedelta(minutes=step)
    return ticks


def timeline(placements: list[Placement], migrations: list[MigrationView], now: datetime) -> str:
    """One lane per zone (in the order first used); each placement a bar coloured by market,
    labelled with its $/h and, at its end, why it ended; a migration an arrow between lanes."""
    if not placements:
        return '<p class="empty">No instance has run yet.</p>'
    zones = list(dict.fromkeys(p.zone for p in placements))
    start = min(p.started_at for p in placements)
    end = max((p.ended_at or now) for p in placements)
    span_s = max(60.0, (end - start).total_seconds())
    height = TOP + LANE_H * len(zones) + 30
    out = [f'<svg class="timeline" viewBox="0 0 {WIDTH} {height}" width="100%" role="img" '
           f'aria-label="placements per zone over time" xmlns="http://www.w3.org/2000/svg">',
           '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#444"/></marker></defs>']
    for i, zone in enumerate(zones):
        y = TOP + i * LANE_H
        out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{LANE_H}" fill="{"#f6f8fb" if i % 2 else "#fff"}"/>')
        out.append(f'<text x="10" y="{y + LANE_H / 2 + 5}" class="lane">{escape(zone)}</text>')
    for tick in _ticks(start, end):
        x = _x(tick, start, span_s)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{height - 26}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 8}" class="tick" text-anchor="middle">{tick:%H:%M}</text>')
    for p in placements:
        out.append(_bar(p, TOP + zones.index(p.zone) * LANE_H, start, span_s, now))
    for m in migrations:
        out.append(_arrow(m, zones, start, span_s))
    out.append("</svg>")
    return "".join(out)


def _bar(p: Placement, lane_y: float, start: datetime, span_s: float, now: datetime) -> str:
    x1, x2 = _x(p.started_at, start, span_s), _x(p.ended_at or now, start, span_s)
    w, y, colour = max(3.0, x2 - x1), lane_y + 12, MARKET_COLOURS.get(p.market, "#888")
    label = f"{p.market.replace('_', '-')} ${p.usd_per_hour:.3f}/h"
    title = (f"{p.instance_type} in {p.zone}, {label}, {p.seconds / 60:.1f} min, ${p.cost_usd:.4f}, "
             f"ended: {p.end_reason}")
    opacity = "0.55" if p.ended_at is None else "1"  # an open placement is drawn lighter
    parts = [f'<g><title>{escape(title)}</title>',
             f'<rect x="{x1:.1f}" y="{y}" width="{w:.1f}" height="{LANE_H - 24}" rx="5" fill="{colour}" '
             f'fill-opacity="{opacity}"/>']
    if w > 110:
        parts.append(f'<text x="{x1 + 8:.1f}" y="{y + 21}" class="bar">{escape(label)}</text>')
    mark = END_MARKS.get(p.end_reason, "")
    parts.append(f'<text x="{x1 + w + 5:.1f}" y="{y + 13}" class="end">{mark} {escape(p.end_reason)}</text>')
    parts.append(f'<text x="{x1 + w + 5:.1f}" y="{y + 27}" class="endcost">${p.cost_usd:.3f}</text></g>')
    return "".join(parts)


def _arrow(m: MigrationView, zones: list[str], start: datetime, span_s: float) -> str:
    if m.from_zone not in zones or m.to_zone not in zones:
        return ""
    x1, x2 = _x(m.started_at, start, span_s), _x(m.finished_at or m.started_at, start, span_s)
    i, j = zones.index(m.from_zone), zones.index(m.to_zone)
    down = i < j
    y1 = TOP + i * LANE_H + (LANE_H - 12 if down else 12)  # from the old bar's edge facing the new lane
    y2 = TOP + j * LANE_H + (12 if down else LANE_H - 12)
    label = f"{m.downtime_seconds:.0f} s down" if m.downtime_seconds is not None else ""
    return (f'<g class="move"><title>{escape(m.reason)} move {escape(m.from_zone)} → {escape(m.to_zone)}: '
            f'{escape(label)}</title><line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'marker-end="url(#head)"/><text x="{max(x1, x2) + 6:.1f}" y="{(y1 + y2) / 2 + 4:.1f}" '
            f'class="down">{escape(label)}</text></g>')


def loss_chart(points: list[tuple[int, float]], width: int = 460, height: int = 220) -> str:
    """The loss against the step; a single point when only the last heartbeat is known."""
    if not points:
        return '<p class="empty">No loss reported yet.</p>'
    left, bottom, pad = 48, 28, 12
    steps, losses = [s for s, _ in points], [v for _, v in points]
    s0, s1 = min(steps), max(max(steps), min(steps) + 1)
    lo, hi = min(losses), max(losses)
    hi = hi if hi > lo else lo + 1.0

    def xy(step: int, loss: float) -> tuple[float, float]:
        return (left + (width - left - pad) * (step - s0) / (s1 - s0),
                pad + (height - bottom - pad) * (hi - loss) / (hi - lo))

    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(s, v) for s, v in points))
    out = [f'<svg class="loss" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="loss curve" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - pad}" y2="{height - bottom}" class="axis"/>',
           f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{height - bottom}" class="axis"/>']
    for value in (hi, (hi + lo) / 2, lo):
        y = xy(s0, value)[1]
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{value:.2f}</text>')
    out.append(f'<text x="{left}" y="{height - 8}" class="tick">step {s0}</text>')
    out.append(f'<text x="{width - pad}" y="{height - 8}" class="tick" text-anchor="end">step {s1}</text>')
    if len(points) > 1:
        out.append(f'<polyline points="{coords}" class="curve"/>')
    x, y = xy(*points[-1])
    out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" class="dot"/></svg>')
    return "".join(out)
