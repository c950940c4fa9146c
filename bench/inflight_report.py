"""The figures of bench/scale_inflight.py: per running job, the printed table, and the linear
extrapolation of a process work pool to 1,000 and 10,000 jobs (pure functions over measurements)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from bench.inflight_proc import KINDS, Usage

FLOW, SERVER, MOTO, TRAINERS = KINDS
# what one running job's monitor did per poll (tasks/monitor.py watch_instance, before the fleet controller), read from the code:
# GET progress.json, one job-store write (step + lease), a progress artifact update on the Prefect API
# when the step moved, and on EC2 two DescribeInstances (Ec2Backend.poll() for the job's started
# instance, then state(); the local backend measured here makes one, its poll() is local)
CALLS_PER_POLL = {"s3_get": 1, "ec2_describe": 2, "store_write": 1, "prefect_api": 1}
EC2_DESCRIBE_REFILL_PER_S = 20  # EC2's non-mutating request bucket: 100 tokens, 20/s refill, per account and region


@dataclass
class Measurement:
    """One mode at one N: who ran, how long start-up took, and each kind of process's usage over the window."""

    mode: str
    jobs: int
    running: int  # jobs RUNNING with a heartbeat seen when the window opened
    flow_processes: int
    startup_wall_s: float  # from the first spawn until every job ran
    window_s: float
    usage: dict[str, Usage]
    monitor_lag_s: float = 0.0  # mean wall seconds the store's step trails the trainer's (heartbeat every step)
    monitor_lag_max_s: float = 0.0
    load_average: float = 0.0  # the machine's 1-minute load when the window closed (other work shares the cores)

    def per_job(self) -> dict[str, float]:
        """Figures per running job: memory (MiB), CPU (cores held busy), start-up CPU seconds."""
        n = max(1, self.running)
        u = self.usage
        return {
            "flow_rss_mib": round(u[FLOW].rss_mib / n, 1), "flow_pss_mib": round(u[FLOW].pss_mib / n, 1),
            "flow_cpu_cores": round(u[FLOW].cpu_s / self.window_s / n, 5),
            "flow_startup_cpu_s": round(u[FLOW].cpu_s_before / n, 2),
            "server_cpu_cores": round(u[SERVER].cpu_s / self.window_s / n, 5),
            "moto_cpu_cores": round(u[MOTO].cpu_s / self.window_s / n, 5),
            "trainer_pss_mib": round(u[TRAINERS].pss_mib / n, 1),
        }

    def to_json(self) -> dict:
        return {**asdict(self), "per_job": self.per_job()}

    @classmethod
    def from_json(cls, doc: dict) -> Measurement:
        fields = {k: v for k, v in doc.items() if k != "per_job"}
        return cls(**{**fields, "usage": {kind: Usage(**u) for kind, u in doc["usage"].items()}})


def table(m: Measurement) -> str:
    """One measurement as a table: a row per kind of process, totals and per running job."""
    lines = [f"{m.mode}: {m.running}/{m.jobs} jobs running in {m.flow_processes} flow process(es); "
             f"all running {m.startup_wall_s:.0f} s after the first spawn; window {m.window_s:.0f} s; "
             f"the store trails the trainers by {m.monitor_lag_s:.1f} s on average, {m.monitor_lag_max_s:.1f} s at most; "
             f"load average {m.load_average:.1f}",
             f"  {'kind':32} {'procs':>5} {'RSS MiB':>9} {'PSS MiB':>9} {'CPU s':>7} {'cores':>6} "
             f"{'PSS/job':>8} {'cores/job':>9} {'startup CPU s':>13}"]
    n = max(1, m.running)
    for kind in KINDS:
        u = m.usage[kind]
        cores = u.cpu_s / m.window_s
        lines.append(f"  {kind:32} {u.processes:5d} {u.rss_mib:9.1f} {u.pss_mib:9.1f} {u.cpu_s:7.2f} {cores:6.3f} "
                     f"{u.pss_mib / n:8.1f} {cores / n:9.5f} {u.cpu_s_before:13.1f}")
    return "\n".join(lines)


def extrapolate(pool: Measurement, alone: Measurement | None, n: int, poll_seconds: float) -> dict[str, float]:
    """What n running jobs would cost a process work pool: the flow processes' figures grow per job;
    the shared servers' (Prefect, moto) from their level with one job by their measured slope per job."""
    per = pool.per_job()

    def shared(value: Callable[[Measurement], float]) -> float:
        """alone's level + the slope per job x (n - 1); per job x n without a run alone."""
        if alone is None or pool.running <= alone.running:
            return value(pool) / max(1, pool.running) * n
        slope = (value(pool) - value(alone)) / (pool.running - alone.running)
        return value(alone) + max(0.0, slope) * (n - alone.running)

    def cores(kind: str) -> Callable[[Measurement], float]:
        return lambda m: m.usage[kind].cpu_s / m.window_s

    return {
        "jobs": n,
        "flow_processes": n,
        "flow_memory_gib": round(n * per["flow_pss_mib"] / 1024, 1),
        "flow_cpu_cores": round(n * per["flow_cpu_cores"], 2),
        "flow_startup_cpu_s": round(n * per["flow_startup_cpu_s"]),
        "server_cpu_cores": round(shared(cores(SERVER)), 2),
        "server_rss_mib": round(shared(lambda m: m.usage[SERVER].rss_mib)),
        "aws_stand_in_cpu_cores": round(shared(cores(MOTO)), 2),
        **{f"{call}_per_s": round(n * count / poll_seconds, 1) for call, count in CALLS_PER_POLL.items()},
    }


def extrapolation_table(rows: list[dict[str, float]]) -> str:
    keys = [k for k in rows[0] if k != "jobs"]
    lines = [f"  {'process work pool':28} " + " ".join(f"{int(r['jobs']):>12,d}" for r in rows)]
    lines += [f"  {k:28} " + " ".join(f"{r[k]:>12,.2f}" for r in rows) for k in keys]
    return "\n".join(lines)


def report(results: list[Measurement], poll_seconds: float) -> list[dict[str, float]]:
    """Print the process work pool's growth to 1,000 and 10,000 jobs and the threads' GIL bound; return the rows."""
    alone = next((r for r in results if r.mode == "alone"), None)
    pool = next((r for r in results if r.mode == "processes"), alone)
    rows = [extrapolate(pool, alone, n, poll_seconds) for n in (pool.running, 1_000, 10_000)] if pool else []
    if rows:
        print(f"\nlinear growth from the '{pool.mode}' run ({pool.running} jobs), polling every {poll_seconds:g} s:")
        print(extrapolation_table(rows))
    jobs_per_region = EC2_DESCRIBE_REFILL_PER_S * poll_seconds / CALLS_PER_POLL["ec2_describe"]
    print(f"EC2 refills {EC2_DESCRIBE_REFILL_PER_S} Describe* requests/s per account and region: above "
          f"~{jobs_per_region:.0f} running jobs per region the monitors' DescribeInstances are throttled")
    threads = next((r for r in results if r.mode == "threads"), None)
    if threads:
        per = threads.per_job()
        print(f"threads: {per['flow_pss_mib']:.1f} MiB and {per['flow_cpu_cores']:.4f} cores per job -> one process "
              f"(one GIL) holds at most ~{1 / max(per['flow_cpu_cores'], 1e-9):,.0f} jobs before it is CPU-bound")
    return rows
