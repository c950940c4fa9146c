"""bench/scale.py --in-flight's helpers: /proc sampling tells a busy process from an idle one and
finds a flow process's trainers; the extrapolation grows each per-job figure linearly."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bench.inflight_proc import KINDS, Usage, descendants, group_usage
from bench.inflight_report import CALLS_PER_POLL, Measurement, extrapolate, table
from bench.scale_inflight import parse_args

FLOW, SERVER, MOTO, TRAINERS = KINDS
BUSY = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"
# a "flow process" whose child stands in for its trainer: the parent holds 64 MiB, the child sleeps
PARENT = ("import subprocess, sys, time\nblock = bytearray(64 * 2**20)\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\ntime.sleep(30)")


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", code]))
        return started[-1]

    yield start
    for proc in started:
        for pid in descendants([proc.pid]):
            subprocess.run(["kill", "-9", str(pid)], check=False)
        proc.kill()
        proc.wait()


def test_group_usage_tells_a_busy_process_from_an_idle_one_and_finds_the_trainers(processes):
    flow, busy, idle = processes(PARENT), processes(BUSY), processes("import time; time.sleep(30)")
    deadline = time.monotonic() + 20
    while not descendants([flow.pid]) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the flow's 64 MiB are touched

    usage = group_usage([flow.pid], server=busy.pid, moto=idle.pid, window_s=2.0, every_s=0.5)

    assert usage[TRAINERS].processes == 1  # the flow process's child
    assert usage[FLOW].rss_mib > 64 + usage[TRAINERS].rss_mib
    assert 0 < usage[FLOW].pss_mib <= usage[FLOW].rss_mib
    # a spinning process gets CPU over the window even on a crowded machine; sleeping ones next to none
    assert usage[SERVER].cpu_s >= 0.05
    assert usage[MOTO].cpu_s < 0.02 and usage[TRAINERS].cpu_s < 0.02


def measurement(running: int, flow_pss: float, flow_cpu_s: float, server_rss: float, window_s: float = 10.0):
    usage = {FLOW: Usage(running, flow_pss * 1.2, flow_pss, flow_cpu_s, 2.0 * running),
             SERVER: Usage(1, server_rss, server_rss, 0.5 * running, 10.0),
             MOTO: Usage(1, 150.0, 140.0, 0.1 * running, 2.0),
             TRAINERS: Usage(running, 40.0 * running, 30.0 * running, 0.01, 0.3)}
    return Measurement(mode="processes", jobs=running, running=running, flow_processes=running, startup_wall_s=5.0,
                       window_s=window_s, usage=usage)


def test_extrapolation_grows_per_job_figures_linearly_and_the_server_by_its_slope():
    alone = measurement(1, flow_pss=150.0, flow_cpu_s=0.1, server_rss=250.0)
    pool = measurement(10, flow_pss=1500.0, flow_cpu_s=1.0, server_rss=259.0)  # 1 MiB more per job

    rows = {n: extrapolate(pool, alone, n, poll_seconds=5.0) for n in (1_000, 10_000)}

    assert rows[1_000]["flow_memory_gib"] == pytest.approx(1_000 * 150.0 / 1024, abs=0.1)
    assert rows[10_000]["flow_cpu_cores"] == pytest.approx(10 * rows[1_000]["flow_cpu_cores"])
    assert rows[1_000]["flow_cpu_cores"] == pytest.approx(1_000 * 1.0 / 10.0 / 10)
    assert rows[1_000]["server_rss_mib"] == pytest.approx(250.0 + 1.0 * 999)
    assert rows[10_000]["s3_get_per_s"] == pytest.approx(10_000 * CALLS_PER_POLL["s3_get"] / 5.0)
    assert rows[10_000]["flow_startup_cpu_s"] == pytest.approx(20_000)
    assert "PSS/job" in table(pool) and "150.0" in table(pool)


def test_an_unknown_mode_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--in-flight", "2", "--modes", "alone,forks"])
    assert "Choose between alone, processes, threads" in capsys.readouterr().err
