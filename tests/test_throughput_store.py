"""Measured training rates in the embedded store, and their use instead of the table by the estimate."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spotshift.estimate import estimate_offline
from spotshift.hf import size_from_formula
from spotshift.models import JobCreate
from spotshift.sizing import JobSizing, TrainingShape, fit, flops_per_token
from spotshift.sizing.speed import V100_FLOPS_PER_HOUR
from spotshift.stores.embedded import open_embedded_database
from spotshift.stores.throughput import (
    Throughput, ThroughputStore, measured_rates, measured_work_units_per_hour, measurement,
)
from tests.test_sizing import TINYLLAMA_1B

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def measured(instance_type: str = "g5.xlarge", steps: float = 0.5, **kw) -> Throughput:
    return Throughput(**{"instance_type": instance_type, "model": "TinyLlama/TinyLlama-1.1B", "method": "lora",
                         "precision": "bf16", "gpus_used": 1, "steps_per_second": steps, "tokens_per_step": 4096,
                         "measured_at": NOW, **kw})


@pytest.fixture
def store(tmp_path) -> ThroughputStore:
    db = open_embedded_database(tmp_path / "store")
    return ThroughputStore(db.database, write_lock=db.write_lock)


def test_the_latest_measurement_per_shape_is_kept_and_read_back(store, tmp_path):
    store.record(measured(steps=0.5))
    store.record(measured(steps=0.8, measured_at=NOW + timedelta(hours=1)))
    store.record(measured("g6.xlarge", steps=0.4))
    assert store.get("g5.xlarge", "TinyLlama/TinyLlama-1.1B", "lora", "bf16") == measured(
        steps=0.8, measured_at=NOW + timedelta(hours=1))
    assert store.get("g5.xlarge", "TinyLlama/TinyLlama-1.1B", "full", "bf16") is None
    assert {m.instance_type for m in store.for_model("TinyLlama/TinyLlama-1.1B", "lora")} == {"g5.xlarge", "g6.xlarge"}
    db = open_embedded_database(tmp_path / "store")  # another process opening the same files
    assert ThroughputStore(db.database).get("g6.xlarge", "TinyLlama/TinyLlama-1.1B", "lora", "bf16").steps_per_second == 0.4


def test_a_measurement_counts_only_for_the_same_precision_and_gpus_used():
    sizing = JobSizing(model=size_from_formula(TINYLLAMA_1B),
                       shape=TrainingShape(method="lora", micro_batch=4, seq_len=1024, samples_per_step=4))
    rates = measured_rates(sizing, [measured(), measured("p3.2xlarge"), measured("g5.12xlarge", gpus_used=2)])
    assert set(rates) == {"g5.xlarge"}  # the V100 runs fp16, the 4-GPU g5 would use 4 GPUs
    expected = 0.5 * 4096 * 3600 * flops_per_token(sizing) / V100_FLOPS_PER_HOUR
    assert rates["g5.xlarge"] == pytest.approx(expected) == measured_work_units_per_hour(sizing, measured())
    assert rates["g5.xlarge"] != fit(sizing, "g5.xlarge").work_units_per_hour


def test_the_estimate_uses_the_measured_rate_over_the_table(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINYLLAMA_1B))
    job = JobCreate.model_validate({"model": str(tmp_path), "dataset": "s3://bucket-x/t.jsonl", "max_steps": 1000,
                                    "batch_size": 4, "seq_len": 1024, "method": "lora", "budget_usd": 100,
                                    "deadline": (NOW + timedelta(days=2)).isoformat(), "regions": ["us-east-1"]},
                                   context={"now": NOW})
    table = {p.instance_type: p for p in estimate_offline(job, NOW).offers}
    slow = measured(model=str(tmp_path), steps=0.05)  # far slower than the table says
    est = {p.instance_type: p for p in estimate_offline(job, NOW, measurements=[slow]).offers}
    assert est["g5.xlarge"].measured_rate and not table["g5.xlarge"].measured_rate
    assert est["g5.xlarge"].expected_hours == pytest.approx(1000 / 0.05 / 3600, rel=1e-3)
    assert est["g5.xlarge"].expected_hours > table["g5.xlarge"].expected_hours
    assert est["g6.xlarge"] == table["g6.xlarge"]  # no measurement there: the table
    other_model = estimate_offline(job, NOW, measurements=[measured(steps=0.05)]).offers
    assert {p.instance_type: p for p in other_model}["g5.xlarge"] == table["g5.xlarge"]


def test_a_measured_run_becomes_the_record_of_its_shape(store):
    sizing = JobSizing(model=size_from_formula(TINYLLAMA_1B),
                       shape=TrainingShape(method="lora", micro_batch=4, seq_len=1024, samples_per_step=8))
    record = measurement(sizing, "TinyLlama/TinyLlama-1.1B", "g5.12xlarge", 1800.0, NOW)
    assert (record.precision, record.gpus_used, record.steps_per_second, record.tokens_per_step) == ("bf16", 4, 0.5, 8192)
    store.record(record)
    assert store.get("g5.12xlarge", "TinyLlama/TinyLlama-1.1B", "lora", "bf16") == record
    assert measured_rates(sizing, [record])["g5.12xlarge"] == pytest.approx(measured_work_units_per_hour(sizing, record))
    assert measurement(sizing, "TinyLlama/TinyLlama-1.1B", "g4dn.xlarge", 1800.0, NOW).precision == "fp16"
    full_8b = JobSizing(model=size_from_formula(TINYLLAMA_1B), shape=TrainingShape(method="full", seq_len=8192))
    assert measurement(full_8b, "m", "g4dn.xlarge", 100.0, NOW) is None  # does not fit a T4
