"""Resident memory and CPU seconds of groups of processes, read from /proc (Linux), for bench/scale_inflight.py."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("flow processes", "prefect server", "moto (AWS stand-in)", "trainers (instance stand-ins)")


@dataclass
class Usage:
    """One kind of process over a window: how many, memory (mean of the samples) and CPU used in it."""

    processes: int
    rss_mib: float
    pss_mib: float  # shared pages split among the processes sharing them: what N more would add
    cpu_s: float  # CPU seconds used during the window (user + system)
    cpu_s_before: float  # CPU seconds they had used when the window opened (start-up)


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (not of its children), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> tuple[int, int]:
    """(Rss, Pss) in KiB from smaps_rollup; (0, 0) once the process is gone."""
    values = {"Rss:": 0, "Pss:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(" ")
            if key in values:
                values[key] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return values["Rss:"], values["Pss:"]


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, for every process visible in /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(roots: Iterable[int], children: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below the roots (not the roots themselves)."""
    children = children if children is not None else children_map()
    found, todo = [], list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def process_groups(workers: list[int], server: int, moto: int) -> dict[str, list[int]]:
    """The pids of each kind: the flow processes, the server's tree, moto's tree, the workers' children (trainers)."""
    children = children_map()
    return {KINDS[0]: list(workers), KINDS[1]: [server, *descendants([server], children)],
            KINDS[2]: [moto, *descendants([moto], children)], KINDS[3]: descendants(workers, children)}


def group_usage(workers: list[int], server: int, moto: int, window_s: float, every_s: float = 2.0) -> dict[str, Usage]:
    """Sample every kind of process over window_s: memory every every_s, CPU at both ends."""
    groups = process_groups(workers, server, moto)
    before = {kind: {pid: cpu_seconds(pid) or 0.0 for pid in pids} for kind, pids in groups.items()}
    samples: dict[str, list[tuple[int, int]]] = {kind: [] for kind in groups}
    end = time.monotonic() + window_s
    while True:
        for kind, pids in groups.items():
            mem = [memory_kib(pid) for pid in pids]
            samples[kind].append((sum(r for r, _ in mem), sum(p for _, p in mem)))
        if time.monotonic() >= end:
            break
        time.sleep(min(every_s, max(0.0, end - time.monotonic())))
    usage = {}
    for kind, pids in groups.items():
        after = {pid: cpu_seconds(pid) for pid in pids}
        used = sum(a - before[kind][pid] for pid, a in after.items() if a is not None)
        rss = sum(r for r, _ in samples[kind]) / len(samples[kind]) / 1024
        pss = sum(p for _, p in samples[kind]) / len(samples[kind]) / 1024
        usage[kind] = Usage(processes=len(pids), rss_mib=round(rss, 1), pss_mib=round(pss, 1), cpu_s=round(used, 2),
                            cpu_s_before=round(sum(before[kind].values()), 2))
    return usage


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, *, poll_s: float = 1.0,
               raise_on_timeout: bool = True) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            if raise_on_timeout:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            return False
        time.sleep(poll_s)
    return True
