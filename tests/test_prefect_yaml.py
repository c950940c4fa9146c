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


def test_schedules_train_job_on_demand_scout_every_ten_minutes_reaper_hourly():
    d = deployments()
    assert set(d) >= {"train-job", "continuous-scout", "reaper"}
    assert not d["train-job"].get("schedules")
    assert d["continuous-scout"]["schedules"] == [{"interval": 600}]
    assert d["reaper"]["schedules"] == [{"cron": "0 * * * *"}]


def test_serve_offers_the_same_deployments_and_schedules():
    from deployments.serve import deployments as served

    by_name = {d.name: d for d in served()}
    assert set(by_name) == set(deployments())
    scout = by_name["continuous-scout"].schedules[0].schedule
    assert scout.interval.total_seconds() == 600
    assert by_name["reaper"].schedules[0].schedule.cron == "0 * * * *"
