"""The job as GET /jobs/{id} returns it and as its page shows it (server-rendered HTML, inline
CSS and SVG, no JavaScript)."""

from __future__ import annotations

from html import escape
from typing import Any

from deployments.http import svg
from deployments.http.schemas import JobBrief, JobDetail, MetricPoint, Metrics
from spotshift.job_report import job_report


def flow_run_url(prefect_ui_url: str, flow_run_id: str | None) -> str | None:
    return f"{prefect_ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}" if flow_run_id else None


def job_detail(ctx: Any, job_id: str) -> JobDetail:
    """The job with its placements and cost so far (open instances billed up to the runtime's now)."""
    from flows.steps import on_demand_prices

    rt = ctx.runtime
    job = ctx.reads.job(job_id)
    workloads, migrations = ctx.reads.ledger_rows(job_id)
    report = job_report(job, workloads, migrations, on_demand_prices(rt, workloads), rt.clock())
    return JobDetail(**JobBrief.of(job).model_dump(), flow_run_url=flow_run_url(rt.settings.prefect_ui_url,
                                                                                 job.flow_run_id),
                     final_model=job.final_model, error=job.error, report=report)


def job_metrics(ctx: Any, job_id: str) -> Metrics:
    """metrics.jsonl under the job's prefix; else the last heartbeat's loss; else nothing."""
    from training.contract import read_metrics, read_progress

    job = ctx.reads.job(job_id)  # 404 for an unknown job
    s3 = ctx.runtime.s3
    if s3 is None:
        return Metrics(job_id=job_id, source="none", points=[])
    output = ctx.runtime.paths(job).output
    records = read_metrics(s3, output)
    if records:
        points = [MetricPoint(step=r.step, loss=r.loss, eval_loss=r.eval_loss, at=r.at) for r in records]
        return Metrics(job_id=job_id, source="metrics.jsonl", points=points)
    progress = read_progress(s3, output)
    if progress is not None and progress.loss is not None:
        point = MetricPoint(step=progress.step, loss=progress.loss, at=progress.updated_at)
        return Metrics(job_id=job_id, source="progress.json", points=[point])
    return Metrics(job_id=job_id, source="none", points=[])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {s:02d} s" if minutes else f"{s} s"


def _placement_rows(detail: JobDetail) -> str:
    rows = []
    for i, p in enumerate(detail.report.placements, 1):
        rows.append(
            f"<tr><td>{i}</td><td>{escape(p.zone)}</td><td>{escape(p.instance_type)}</td>"
            f"<td><span class='mk {escape(p.market)}'>{escape(p.market.replace('_', '-'))}</span></td>"
            f"<td class=n>${p.usd_per_hour:.4f}</td><td>{p.started_at:%H:%M:%S}</td>"
            f"<td class=n>{_duration(p.seconds)}</td><td class=n>${p.cost_usd:.4f}</td>"
            f"<td>{escape(p.end_reason)}</td></tr>")
    return "".join(rows) or "<tr><td colspan=9 class=empty>none yet</td></tr>"


def _migration_rows(detail: JobDetail) -> str:
    rows = []
    for m in detail.report.migrations:
        rows.append(
            f"<tr><td>{escape(m.reason)}</td><td class=nw>{escape(m.from_zone or '-')} → {escape(m.to_zone or '-')}</td>"
            f"<td>{m.started_at:%H:%M:%S}</td><td class=n>{_duration(m.downtime_seconds)}</td>"
            f"<td class=n>{'-' if m.checkpoint_step is None else m.checkpoint_step}</td>"
            f"<td class=n>${m.expected_saving_usd:.4f}</td></tr>")
    return "".join(rows) or "<tr><td colspan=6 class=empty>no migration</td></tr>"


def render_job_page(detail: JobDetail, metrics: Metrics) -> str:
    """The whole page, self-contained (it renders the same from a file)."""
    r = detail.report
    saving = f"{r.saving_ratio:.0%} saved" if r.on_demand_usd > 0 else ""
    link = (f'<a href="{escape(detail.flow_run_url)}">flow run in Prefect ↗</a>' if detail.flow_run_url
            else "no flow run yet")
    progress = min(100.0, 100.0 * detail.step / max(1, detail.max_steps))
    loss = svg.loss_chart([(p.step, p.loss) for p in metrics.points if p.loss is not None])
    return PAGE.format(
        title=escape(f"{detail.name} · {detail.id}"), id=escape(detail.id), name=escape(detail.name),
        status=escape(detail.status), step=detail.step, max_steps=detail.max_steps, progress=f"{progress:.1f}",
        link=link, cost=f"{r.cost_usd:.4f}", on_demand=f"{r.on_demand_usd:.4f}", saving=saving,
        as_of=f"{r.as_of:%Y-%m-%d %H:%M:%S} UTC", timeline=svg.timeline(r.placements, r.migrations, r.as_of),
        placements=_placement_rows(detail), migrations=_migration_rows(detail), loss=loss,
        loss_source=escape(metrics.source), error=f"<p class=error>{escape(detail.error)}</p>" if detail.error else "",
        css=CSS)


CSS = """
body{font:14px/1.45 "DejaVu Sans",system-ui,sans-serif;color:#1d2430;margin:0;background:#eef1f5}
main{max-width:1000px;margin:0 auto;padding:22px}
header{display:flex;align-items:baseline;gap:14px;flex-wrap:wrap}
h1{font-size:22px;margin:0} h2{font-size:15px;margin:0 0 10px;color:#44506a}
.id{color:#6b7690;font-family:monospace} a{color:#2f6fc0}
.badge{padding:2px 10px;border-radius:10px;background:#dde3ec;font-weight:600}
.badge.succeeded{background:#d4f0dc;color:#17663a}.badge.running,.badge.migrating{background:#dbe9fb;color:#1f5da8}
.badge.failed{background:#fbdcdc;color:#a32121}.badge.cancelled{background:#eee;color:#555}
.card{background:#fff;border-radius:10px;padding:16px 18px;margin-top:14px;box-shadow:0 1px 3px #0001}
.costs{display:flex;gap:28px;align-items:flex-end}.big{font-size:26px;font-weight:700}
.muted{color:#6b7690}.save{color:#17663a;font-weight:700;font-size:18px}
.bar{height:8px;background:#e3e8ef;border-radius:4px;overflow:hidden;width:260px;display:inline-block}
.bar>i{display:block;height:100%;background:#2f7ed8}
.cols{display:grid;grid-template-columns:5fr 6fr;gap:14px}td.nw{white-space:nowrap}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{padding:5px 8px;text-align:left;border-bottom:1px solid #edf0f4}
th{color:#6b7690;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.mk{padding:1px 7px;border-radius:8px;color:#fff;font-size:12px}.mk.spot{background:#2f7ed8}.mk.on_demand{background:#e8833a}
.empty{color:#8a93a6}.error{color:#a32121}
svg text{font-family:"DejaVu Sans",sans-serif}svg .lane{font-size:13px;fill:#44506a;font-weight:600}
svg .tick{font-size:11px;fill:#7a8499}svg .grid{stroke:#dfe4ec;stroke-dasharray:3 3}
svg .bar{font-size:12px;fill:#fff;font-weight:600}svg .end{font-size:11px;fill:#33405a}
svg .endcost{font-size:11px;fill:#7a8499}svg .down{font-size:10px;fill:#555}svg .move line{stroke:#444;stroke-width:1.6;stroke-dasharray:4 3}
svg .axis{stroke:#aab3c2}svg .curve{fill:none;stroke:#7a4fd0;stroke-width:2}svg .dot{fill:#7a4fd0}
.legend span{margin-right:14px}.legend i{display:inline-block;width:12px;height:12px;border-radius:3px;
vertical-align:-1px;margin-right:5px}
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{css}</style></head>
<body><main>
<header><h1>{name}</h1><span class="id">{id}</span><span class="badge {status}">{status}</span>
<span class="muted">step {step} / {max_steps}</span><span class="bar"><i style="width:{progress}%"></i></span>
<span>{link}</span></header>
{error}
<section class="card costs"><div><div class="muted">cost so far</div><div class="big">${cost}</div></div>
<div><div class="muted">on-demand equivalent</div><div class="big muted">${on_demand}</div></div>
<div class="save">{saving}</div><div class="muted" style="margin-left:auto">as of {as_of}</div></section>
<section class="card"><h2>Placements per zone</h2>
<div class="legend muted"><span><i style="background:#2f7ed8"></i>spot</span>
<span><i style="background:#e8833a"></i>on-demand</span><span>dashed arrow: migration</span></div>
{timeline}
<table><tr><th>#</th><th>zone</th><th>instance</th><th>market</th><th>$/h</th><th>started</th><th>ran</th>
<th>cost</th><th>ended because</th></tr>{placements}</table></section>
<div class="cols"><section class="card"><h2>Loss <span class="muted">({loss_source})</span></h2>{loss}</section>
<section class="card"><h2>Migrations</h2><table><tr><th>reason</th><th>move</th><th>at</th><th>downtime</th>
<th>step</th><th>saving</th></tr>{migrations}</table></section></div>
</main></body></html>"""
