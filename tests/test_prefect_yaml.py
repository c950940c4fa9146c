"""prefect.yaml: every deployment points at a real flow, with the schedules the design asks for."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def deployments() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {d["name"]: d for d in doc["deployments"]}


def test_every_entrypoint_is_a_prefect_flow_with_the_deployment_name():
    from prefect import Flow

    for name, d in deployments().items():
        module_path, attr = d["entrypoint"].split(":")
        flow = getattr(importlib.import_module(module_path.removesuffix(".py").replace("/", ".")), attr)
        assert isinstance(flow, Flow), d["entrypoint"]
        assert flow.name == name
        assert d["work_pool"]["name"] == "spotshift"


def test_schedules_train_job_on_demand_scout_every_ten_minutes_fleet_every_minute():
    d = deployments()
    assert set(d) == {"train-job", "continuous-scout", "fleet", "job-action", "migrate-job"}
    assert not d["train-job"].get("schedules") and not d["job-action"].get("schedules")
    assert d["continuous-scout"]["schedules"] == [{"interval": 600}]
    assert d["fleet"]["schedules"] == [{"interval": 60}] and d["fleet"]["concurrency_limit"] == 1


def test_the_fleet_starts_every_action_as_a_job_action_run_and_the_scout_its_moves_as_migrate_job_runs():
    from spotshift.fleet import Action

    d = deployments()
    assert d["fleet"]["parameters"]["action_deployments"] == {
        a.value: "job-action/job-action" for a in Action if a is not Action.NONE}
    assert d["continuous-scout"]["parameters"] == {"migrate_deployment": "migrate-job/migrate-job"}


def test_serve_offers_the_same_deployments_schedules_and_parameters():
    from deployments.serve import deployments as served

    by_name = {d.name: d for d in served()}
    assert set(by_name) == set(deployments())
    scout = by_name["continuous-scout"].schedules[0].schedule
    assert scout.interval.total_seconds() == 600
    for name, d in deployments().items():
        assert (by_name[name].parameters or {}) == d.get("parameters", {}), name
