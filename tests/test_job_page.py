"""The job page (GET /jobs/{id}/view) of the demo's finished job: three placements on the timeline
(us-east-1a preempted, us-east-2a moved away from, us-west-2a completed), its cost against
on-demand, the loss curve from metrics.jsonl; and a screenshot of it by headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from deployments.http.app import create_app
from flows.runtime import Runtime
from spotshift.models import (EndReason, JobCreate, JobStatus, JobUpdate, Market, Migration, MigrationReason,
                              Workload)
from spotshift.settings import Settings
from spotshift.stores.tokens import TokenStore
from training.contract import JobPaths, MetricsRecord

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
# (zone, $/h, minutes from T0 it started, ended, why): the demo's run, one preemption and one move
DEMO_PLACEMENTS = [("us-east-1a", 0.95, 8, 20, EndReason.PREEMPTED), ("us-east-2a", 1.30, 21.5, 41, EndReason.MIGRATED),
                   ("us-west-2a", 0.40, 42, 75, EndReason.COMPLETED)]


def store_demo_job(rt: Runtime, bucket: str) -> str:
    """The stored state the demo leaves behind: the job, three workloads, two migrations, the loss curve."""
    at = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    request = JobCreate.model_validate(dict(name="demo", model="s3://flow-inputs/tiny/", max_steps=450,
                                            dataset="s3://flow-inputs/data/corpus.jsonl", budget_usd=50,
                                            deadline=at(48 * 60), instance_types=["p3.2xlarge"]),
                                       context={"now": T0})
    job = rt.jobs.create(request, now=T0)
    for status in (JobStatus.PLANNING, JobStatus.PROVISIONING, JobStatus.RUNNING):
        rt.jobs.transition(job.id, status, now=at(1))
    workloads = []
    for zone, price, start, end, why in DEMO_PLACEMENTS:
        w = Workload(job_id=job.id, instance_id=f"i-{uuid.uuid4().hex[:17]}", instance_type="p3.2xlarge",
                     region=zone[:-1], zone=zone, market=Market.SPOT, usd_per_hour=price, started_at=at(start),
                     ended_at=at(end), billed_seconds=(end - start) * 60, end_reason=why)
        rt.ledger.upsert_workload(w)
        workloads.append(w)
    for (before, after), reason, saving in zip(zip(workloads, workloads[1:]),
                                               (MigrationReason.PREEMPTED, MigrationReason.CHEAPER), (0.0, 0.42)):
        rt.ledger.upsert_migration(Migration(
            job_id=job.id, from_workload_id=before.id, to_workload_id=after.id, reason=reason, checkpoint_step=110,
            expected_saving_usd=saving, started_at=before.ended_at, finished_at=after.started_at + timedelta(seconds=40),
            downtime_seconds=(after.started_at - before.ended_at).total_seconds() + 40, succeeded=True))
    cost = sum(w.cost_usd for w in workloads)
    rt.jobs.transition(job.id, JobStatus.SUCCEEDED, now=at(76), update=JobUpdate(
        step=450, cost_usd=cost, flow_run_id=str(uuid.uuid4()), final_model=f"s3://{bucket}/jobs/{job.id}/final/"))
    lines = [MetricsRecord(step=s, loss=5.6 * 0.55 ** (s / 150) + 0.4, at=at(8 + s / 7)).model_dump_json()
             for s in range(10, 451, 10)]
    rt.s3.put_object(Bucket=bucket, Key=JobPaths(bucket, job.id).key("metrics.jsonl"), Body="\n".join(lines).encode())
    return job.id


@pytest.fixture
def demo_page(tmp_path, s3, bucket):
    """(client, token, job id) over the demo's finished job in fresh embedded stores."""
    from blocks.stores import open_job_store, open_ledger, open_token_store

    settings = Settings(home=tmp_path, bucket=bucket, prefect_ui_url="http://prefect.example:4200")
    rt = Runtime(settings=settings, jobs=open_job_store(settings), ledger=open_ledger(settings), s3=s3, market=None,
                 backend=None, clock=lambda: T0 + timedelta(hours=2), on_demand_prices={"p3.2xlarge": 3.06})
    tokens: TokenStore = open_token_store(settings)
    job_id = store_demo_job(rt, bucket)
    client = TestClient(create_app(rt, tokens, submit_run="none"))
    return client, tokens.create("page-test", now=T0), job_id


def test_the_page_shows_three_placements_their_cost_against_on_demand_and_the_loss_curve(demo_page):
    client, token, job_id = demo_page
    page = client.get(f"/jobs/{job_id}/view", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    timeline = html[html.index('<svg class="timeline"'):]
    timeline = timeline[:timeline.index("</svg>")]
    # one lane per zone, one bar per placement, each labelled with its market, price and why it ended
    assert re.findall(r'class="lane">([^<]+)<', timeline) == ["us-east-1a", "us-east-2a", "us-west-2a"]
    assert len(re.findall(r'<rect [^>]*rx="5"', timeline)) == 3
    assert [re.search(rf"spot \${p:.3f}/h", timeline) is not None for _, p, *_ in DEMO_PLACEMENTS] == [True] * 3
    assert re.findall(r'class="end">\S+ (\w+)<', timeline) == ["preempted", "migrated", "completed"]
    assert timeline.count('marker-end="url(#head)"') == 2  # the two migrations
    # cost: 12 min at $0.95 + 19.5 min at $1.30 + 33 min at $0.40, against 64.5 min at $3.06 on demand
    cost = (12 * 0.95 + 19.5 * 1.30 + 33 * 0.40) / 60
    assert f"${cost:.4f}" in html and f"${64.5 * 3.06 / 60:.4f}" in html
    assert f"{1 - cost / (64.5 * 3.06 / 60):.0%} saved" in html
    # the loss curve comes from metrics.jsonl (45 points), the downtime of each move is listed
    assert "(metrics.jsonl)" in html
    polyline = re.search(r'<polyline points="([^"]+)"', html).group(1)
    assert len(polyline.split()) == 45
    assert "2 min 10 s" in html and "1 min 40 s" in html
    assert f'href="http://prefect.example:4200/runs/flow-run/' in html


def test_the_page_needs_a_token_and_knows_only_stored_jobs(demo_page):
    client, token, job_id = demo_page
    assert client.get(f"/jobs/{job_id}/view").status_code == 401
    assert client.get("/jobs/job-nope/view", headers={"Authorization": f"Bearer {token}"}).status_code == 404


def test_a_browser_signs_in_once_and_its_cookie_opens_pages_but_never_a_post(demo_page):
    client, token, job_id = demo_page
    sent = client.get(f"/jobs/{job_id}/view", headers={"Accept": "text/html"}, follow_redirects=False)
    assert sent.status_code == 303 and sent.headers["location"] == f"/login?next=%2Fjobs%2F{job_id}%2Fview"
    assert "API token" in client.get(sent.headers["location"]).text
    refused = client.post("/login", data={"token": "sst_wrong", "next": f"/jobs/{job_id}/view"})
    assert refused.status_code == 401 and "unknown or revoked" in refused.text and "set-cookie" not in refused.headers
    signed_in = client.post("/login", data={"token": token, "next": f"/jobs/{job_id}/view"}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == f"/jobs/{job_id}/view"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get(f"/jobs/{job_id}/view").status_code == 200  # the cookie, no header
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 401  # a cookie never authorises a POST
    away = client.post("/login", data={"token": token, "next": "//evil.example/x"}, follow_redirects=False)
    assert away.headers["location"] == "/docs"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed "
                    "(Debian: apt-get install chromium); the page's HTML is checked by the test above")
def test_headless_chromium_renders_the_page_with_its_timeline(demo_page, tmp_path):
    client, token, job_id = demo_page
    page = tmp_path / "job.html"
    page.write_text(client.get(f"/jobs/{job_id}/view", headers={"Authorization": f"Bearer {token}"}).text)
    shot = tmp_path / "job.png"
    profile = tmp_path / "chromium-profile"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1040,1000",
                    f"--screenshot={shot}", page.as_uri()], check=True, timeout=120, capture_output=True)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1040, 1000)
    if os.environ.get("SPOTSHIFT_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["SPOTSHIFT_KEEP_SCREENSHOT"])  # for a human to look at
    # the three spot bars are drawn: their colour covers about 3 bars' area of the picture
    spot = sum(1 for pixel in png_pixels(png) if pixel == (0x2F, 0x7E, 0xD8))
    assert 15_000 < spot < 80_000, spot


def png_pixels(png: bytes):
    """The (r, g, b) of every pixel of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    import struct
    import zlib

    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    assert depth == 8 and colour in (2, 6), (depth, colour)
    channels, pos, data = (3 if colour == 2 else 4), 8, b""
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        if kind == b"IDAT":
            data += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    raw, stride = zlib.decompress(data), width * channels
    previous = bytearray(stride)
    for y in range(height):
        kind, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - channels] if i >= channels else 0
            b, c = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                row[i] = (row[i] + a) & 255
            elif kind == 2:
                row[i] = (row[i] + b) & 255
            elif kind == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, channels):
            yield row[x], row[x + 1], row[x + 2]
        previous = row
