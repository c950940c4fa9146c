"""spotshift.estimate: a job's needs and its feasible placements over the embedded on-demand market,
sized from a config.json alone (the acceptance cases of issue 12)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from spotshift.catalog import INSTANCE_TYPES
from spotshift.estimate import estimate_offline, render
from spotshift.hf import model_size
from spotshift.market.catalog_market import CatalogMarket
from spotshift.market.query import OfferQuery
from spotshift.models import JobCreate
from spotshift.sizing import JobSizing, gpu_memory, host_memory_gib, job_work_v100_hours
from spotshift.sizing.speed import work_units_per_hour
from tests.test_sizing import LLAMA3_8B, TINYLLAMA_1B

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def config_dir(tmp_path, config: dict):
    """A local model directory holding only config.json (no weights, no tokenizer)."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    return str(tmp_path)


def job(model: str, **fields) -> JobCreate:
    base = {"model": model, "dataset": "s3://bucket-x/train.jsonl", "max_steps": 1000, "batch_size": 1,
            "seq_len": 2048, "budget_usd": 10_000, "deadline": (NOW + timedelta(days=3)).isoformat(),
            "regions": ["us-east-1"]}
    return JobCreate.model_validate({**base, **fields}, context={"now": NOW})


def test_full_bf16_llama3_8b_gets_no_instance_whose_gpus_are_too_small_unless_fsdp_spreads_it(tmp_path):
    request = job(config_dir(tmp_path, LLAMA3_8B), method="full", precision="bf16", grad_accum=16)
    est = estimate_offline(request, NOW)
    assert est.params == 8_030_261_248 and est.gpu_memory_per_device_gib > 120  # one unsharded GPU
    assert est.offers, "FSDP over 8 x 40 GB and larger must be offered"
    for p in est.offers:
        per_gpu = INSTANCE_TYPES[p.instance_type].gpu_memory_gib
        assert p.gpu_memory_per_device_gib <= per_gpu
        assert p.fsdp or per_gpu >= est.gpu_memory_per_device_gib
        assert not p.fsdp or p.gpus_used * per_gpu >= est.gpu_memory_per_device_gib / 2  # spread over enough GPUs
    offered = {p.instance_type for p in est.offers}
    assert "p4d.24xlarge" in offered and not offered & {"g5.xlarge", "g5.48xlarge", "p3.16xlarge", "g4dn.12xlarge"}
    assert "per GPU with FSDP over 8 GPUs" in est.refused["g5.48xlarge"]
    assert "per GPU with 1 GPU(s)" in est.refused["g5.xlarge"]


def test_a_global_batch_of_one_keeps_one_gpu_and_pays_the_whole_instance_for_it(tmp_path):
    est = estimate_offline(job(config_dir(tmp_path, LLAMA3_8B), method="full", precision="bf16"), NOW)
    assert {p.instance_type for p in est.offers} == {"p5e.48xlarge", "p5en.48xlarge"}  # one 141 GB H200 holds it
    for p in est.offers:
        assert p.gpus_used == 1 < p.gpu_count
        assert p.usd_per_work_unit == pytest.approx(p.usd_per_hour / work_units_per_hour(p.instance_type, "bf16", 1),
                                                    rel=1e-3)


def test_lora_llama3_8b_is_offered_a_single_24gb_gpu(tmp_path):
    est = estimate_offline(job(config_dir(tmp_path, LLAMA3_8B), method="lora", gradient_checkpointing=True), NOW)
    g5 = next(p for p in est.offers if p.instance_type == "g5.xlarge")
    assert (g5.gpus_used, g5.precision, g5.fsdp) == (1, "bf16", False) and g5.gpu_memory_per_device_gib <= 24
    assert est.trainable_params == 6_815_744 and est.host_memory_gib < 4  # the adapters, not the base
    assert "T4 has 16" in est.refused["g4dn.xlarge"]


def test_every_multi_gpu_offer_counts_only_the_gpus_used(tmp_path):
    request = job(config_dir(tmp_path, LLAMA3_8B), method="lora", gradient_checkpointing=True, grad_accum=2)
    est = estimate_offline(request, NOW)
    sizing = JobSizing.of_job(request, model_size(request.model))
    multi = [p for p in est.offers if p.gpu_count > 1]
    assert {p.instance_type for p in multi} >= {"g5.12xlarge", "g5.48xlarge", "p4d.24xlarge"}
    work = job_work_v100_hours(sizing, request.max_steps)
    for p in multi:
        assert p.gpus_used == 2  # a global batch of 2 samples keeps two ranks busy, never 4 or 8
        rate = work_units_per_hour(p.instance_type, p.precision, 2)
        assert p.usd_per_work_unit == pytest.approx(p.usd_per_hour / rate, rel=1e-3)
        assert p.expected_hours == pytest.approx(work / rate, abs=1e-4)
        assert p.expected_cost_usd == pytest.approx(p.expected_hours * p.usd_per_hour, abs=0.01)


def test_host_memory_refuses_a_1b_full_fine_tune_on_an_instance_with_too_little_ram(tmp_path):
    est = estimate_offline(job(config_dir(tmp_path, TINYLLAMA_1B), method="full", precision="bf16", seq_len=512), NOW)
    assert est.host_memory_gib > INSTANCE_TYPES["g5.xlarge"].memory_gib
    assert "host memory" in est.refused["g5.xlarge"] and "host memory" in est.refused["g6.xlarge"]
    offered = {p.instance_type for p in est.offers}
    assert "g5.4xlarge" in offered and "g5.xlarge" not in offered  # the same A10G with 64 GiB of RAM


def test_offers_that_miss_the_deadline_are_refused_and_the_rest_are_ranked_by_cost(tmp_path):
    request = job(config_dir(tmp_path, TINYLLAMA_1B), method="lora", max_steps=20_000,
                  deadline=(NOW + timedelta(hours=2)).isoformat())
    est = estimate_offline(request, NOW)
    assert est.offers and all(0 <= p.deadline_slack_hours <= 2 for p in est.offers)
    assert "the deadline is 2.0 h away" in est.refused["g4dn.xlarge"]  # 1.3 V100-hours at 0.52 an hour
    costs = [p.expected_cost_usd for p in est.offers]
    assert costs == sorted(costs)


def test_json_keys_and_text(tmp_path):
    est = estimate_offline(job(config_dir(tmp_path, TINYLLAMA_1B), method="qlora"), NOW)
    data = est.to_json()
    assert {"gpu_memory_per_device_gib", "host_memory_gib", "offers"} <= set(data)
    assert {"instance_type", "gpus_used", "market", "zone", "usd_per_hour", "expected_hours", "expected_cost_usd",
            "deadline_slack_hours"} <= set(data["offers"][0])
    assert json.loads(json.dumps(data)) == data
    text = render(est, top=3)
    assert text.splitlines()[2].startswith(est.offers[0].instance_type) and f"{len(est.offers)} feasible" in text


def test_catalog_market_prices_every_allowed_type_on_demand_only():
    q = OfferQuery(regions=("us-east-1", "eu-west-1"), gpus=("A10G",))
    snap = CatalogMarket().snapshot(q, NOW)
    assert {o.instance_type for o in snap.offers} == {t for t in INSTANCE_TYPES if t.startswith("g5.")}
    assert {o.market.value for o in snap.offers} == {"on_demand"}
    g5 = {o.region: o.usd_per_hour for o in snap.offers if o.instance_type == "g5.xlarge"}
    assert g5 == {"us-east-1": 1.006, "eu-west-1": pytest.approx(1.006 * 1.1, abs=1e-3)}
    assert CatalogMarket().snapshot(OfferQuery(regions=("us-east-1",), markets=("spot",)), NOW).offers == []


def test_the_one_gpu_need_is_the_sizing_models(tmp_path):
    request = job(config_dir(tmp_path, TINYLLAMA_1B), method="full", precision="fp32", seq_len=256)
    sizing = JobSizing.of_job(request, model_size(request.model))
    est = estimate_offline(request, NOW)
    assert est.gpu_memory_per_device_gib == round(gpu_memory(sizing, "fp32").total_gib, 2)
    assert est.host_memory_gib == round(host_memory_gib(sizing), 2)
    assert math.isclose(est.total_work_v100_hours, 6 * est.params * 1000 * 256 / (125e12 * 0.3 * 3600), rel_tol=1e-3)


def test_the_cli_prints_the_estimate_as_json_and_uses_a_recorded_rate(tmp_path, monkeypatch, capsys):
    from deployments.cli import main
    from spotshift.stores.embedded import open_embedded_database
    from spotshift.stores.throughput import Throughput, ThroughputStore

    monkeypatch.setenv("SPOTSHIFT_HOME", str(tmp_path / "home"))
    model = config_dir(tmp_path, TINYLLAMA_1B)
    request = {"model": model, "dataset": "s3://bucket-x/train.jsonl", "max_steps": 100, "batch_size": 2,
               "seq_len": 512, "method": "lora", "budget_usd": 50, "regions": ["us-east-1"],
               "deadline": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    (tmp_path / "job.json").write_text(json.dumps(request))
    db = open_embedded_database(tmp_path / "home" / "store")
    ThroughputStore(db.database, write_lock=db.write_lock).record(Throughput(
        instance_type="g5.xlarge", model=model, method="lora", precision="bf16", gpus_used=1, steps_per_second=0.01,
        tokens_per_step=1024, measured_at=NOW))
    assert main(["estimate", "--file", str(tmp_path / "job.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    g5 = next(o for o in data["offers"] if o["instance_type"] == "g5.xlarge")
    assert g5["measured_rate"] and g5["expected_hours"] == pytest.approx(100 / 0.01 / 3600, rel=1e-3)
    assert data["gpu_memory_per_device_gib"] < 24 and data["host_memory_gib"] < 4
    assert main(["estimate", "--file", str(tmp_path / "job.json")]) == 0
    assert "feasible offers" in capsys.readouterr().out
