"""Flows compose tasks only (issue 21): every store write a flow makes is a Prefect task (seen in
the UI, retried where that is safe). This walks every function of flows/*.py and names each call
of a store's write method made outside a @task function; reads may stay direct."""

from __future__ import annotations

import ast
from pathlib import Path

FLOWS = Path(__file__).resolve().parents[1] / "flows"

# the store (the last name of the receiver: rt.jobs, self.history, ledger) -> its write methods
WRITES = {
    "jobs": {"update", "transition", "create", "append_event", "update_many"},
    "ledger": {"upsert_workload", "upsert_migration", "record_plan", "open_workload", "close_workload",
               "record_instance"},
    "throughput": {"record"},
    "history": {"record"},
}

# (file, function) -> why a direct write is right there (none today: the embedded runtime, which
# seeds the history with a replay's past before any flow runs, is built in blocks/runtime.py)
ALLOWED: dict[tuple[str, str], str] = {}


def _receiver(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _is_task(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return _receiver(target) == "task"


def direct_writes(source: str, filename: str) -> list[str]:
    """'file:line function: store.method(...)' for each store write outside a @task function."""
    found: list[str] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(_is_task(d) for d in child.decorator_list):
                    continue  # a task may write: that is where writes belong
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.ClassDef):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute):
                store, method = _receiver(child.func.value), child.func.attr
                where = ".".join(scope) or "<module>"
                if method in WRITES.get(store or "", ()) and (filename, where) not in ALLOWED:
                    found.append(f"flows/{filename}:{child.lineno} {where}: {store}.{method}(...)")
            visit(child, scope)

    visit(ast.parse(source, filename), [])
    return found


def test_flows_write_to_the_stores_only_through_tasks():
    found = [hit for path in sorted(FLOWS.glob("*.py")) for hit in direct_writes(path.read_text(), path.name)]
    assert not found, "store writes in flows/ outside a task (make each a task in tasks/):\n" + "\n".join(found)


def test_a_direct_write_is_named_and_a_task_or_its_fn_is_not():
    source = '''
from prefect import task
import prefect

def step(rt, run):
    run.job = rt.jobs.get(run.job.id)  # a read
    rt.ledger.open_workloads(run.job.id)
    update_job(rt.jobs, run.job.id, None, now)
    transition_job.fn(rt.jobs, run.job.id, "running", now)
    approve(policy, request, now, on_ask=lambda: rt.jobs.update(run.job.id, asking, now=now))
    self.history.record([], source="scout")

class Runtime:
    def record(self, snapshot):
        self.history.record(snapshot, source="scout")

@task(name="job-update")
def update_job(jobs, job_id, update, now):
    return jobs.update(job_id, update, now=now)

@prefect.task
def record_plan(ledger, plan):
    ledger.record_plan(plan)
'''
    assert direct_writes(source, "planted.py") == [
        "flows/planted.py:10 step: jobs.update(...)",
        "flows/planted.py:11 step: history.record(...)",
        "flows/planted.py:15 Runtime.record: history.record(...)",
    ]
