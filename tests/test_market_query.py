"""OfferQuery validation/filtering and the one dollars-per-work-unit ranking."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from spotshift.catalog import INSTANCE_TYPES
from spotshift.market.query import OfferQuery
from spotshift.hf import size_from_formula
from spotshift.cost_model import rank_offers, usd_per_work_unit, work_rate
from spotshift.models import InterruptionRisk, JobCreate, Market, Offer
from spotshift.sizing import JobSizing, TrainingShape, fit, work_rates
from spotshift.sizing.speed import work_units_per_hour
from tests.test_sizing import LLAMA3_8B, TINYLLAMA_1B

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def offer(instance_type: str, usd: float, zone: str = "us-east-1a", risk: float | None = None,
          market: Market = Market.SPOT) -> Offer:
    t = INSTANCE_TYPES[instance_type]
    return Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
                 vcpus=t.vcpus, memory_gib=t.memory_gib, region=zone[:-1], zone=zone, market=market,
                 usd_per_hour=usd, interruption=InterruptionRisk(probability=risk), observed_at=NOW, source="test")


def test_ranking_is_by_dollars_per_work_unit_not_dollars_per_hour():
    v100 = offer("p3.2xlarge", 3.06)           # 1.0 work unit/h (the unit) -> $3.06 per unit
    t4 = offer("g4dn.xlarge", 0.526)           # fp16 65 of 125 TFLOPS: 0.52 -> $1.01 per unit
    h100x8 = offer("p5.48xlarge", 55.04)       # 8 x 7.9 x 0.93 scaling -> $0.94 per unit
    assert usd_per_work_unit(v100) == pytest.approx(3.06)
    assert usd_per_work_unit(t4) == pytest.approx(0.526 / (65 / 125))
    assert rank_offers([v100, t4, h100x8]) == [h100x8, t4, v100]


def test_a_job_that_uses_fewer_gpus_pays_the_whole_instance_for_their_work():
    job = JobSizing(model=size_from_formula(TINYLLAMA_1B),
                    shape=TrainingShape(method="lora", precision="bf16", micro_batch=1, seq_len=512, samples_per_step=2))
    rates = work_rates(job)
    g5x8, g5x1 = offer("g5.48xlarge", 16.288), offer("g5.xlarge", 1.006)
    two_gpus = work_units_per_hour("g5.48xlarge", "bf16", 2)
    assert work_rate(g5x8, rates) == pytest.approx(two_gpus) and two_gpus < work_rate(g5x8) / 3  # not all 8 GPUs' work
    assert usd_per_work_unit(g5x8, rates) == pytest.approx(16.288 / two_gpus)
    assert rank_offers([g5x8, g5x1], rates) == [g5x1, g5x8]
    assert usd_per_work_unit(offer("g4dn.xlarge", 0.5), rates) == float("inf")  # T4: no bf16, no fit


def test_ties_prefer_the_lower_known_risk():
    risky, safe, unknown = (offer("g5.xlarge", 1.0, z, r) for z, r in
                            (("us-east-1a", 0.25), ("us-east-1b", 0.025), ("us-east-1c", None)))
    assert rank_offers([unknown, risky, safe]) == [safe, risky, unknown]


def test_query_filters_types_by_gpu_and_memory():
    q = OfferQuery(regions=("us-east-1",), gpus=("A10G", "L4"), min_total_gpu_memory_gib=90)
    assert {t.name for t in q.instance_types_wanted()} == {
        "g5.12xlarge", "g5.24xlarge", "g5.48xlarge", "g6.12xlarge", "g6.24xlarge", "g6.48xlarge"}
    assert q.accepts(offer("g5.12xlarge", 5.0))
    assert not q.accepts(offer("g5.xlarge", 1.0))
    assert not q.accepts(offer("g5.12xlarge", 5.0, zone="us-west-2a"))
    assert not OfferQuery(regions=("us-east-1",), markets=(Market.ON_DEMAND,)).accepts(offer("g5.xlarge", 1.0))


def test_bad_query_names_the_field_and_the_choices():
    with pytest.raises(ValidationError, match="regions: unknown value 'mars-1'. Choose between us-east-1"):
        OfferQuery(regions=("mars-1",))
    with pytest.raises(ValidationError, match="gpus: unknown value 'K80'. Choose between T4"):
        OfferQuery(regions=("us-east-1",), gpus=("K80",))
    with pytest.raises(ValidationError, match=r"markets.0\n  Input should be 'spot' or 'on_demand'"):
        OfferQuery(regions=("us-east-1",), markets=("preemptible",))


def test_query_for_a_job_and_its_cache_key():
    job = JobCreate(model="gpt2", dataset="s3://data-bucket/train.txt", max_steps=10, budget_usd=5,
                    deadline=datetime(2099, 1, 1, tzinfo=UTC), regions=["us-west-2"], gpus=["T4"])
    q = OfferQuery.for_job(job, 12)
    assert q.regions == ("us-west-2",) and q.gpus == ("T4",) and q.min_gpu_memory_gib == 12 and q.sizing is None
    assert q.cache_key() == OfferQuery.for_job(job, 12).cache_key() != OfferQuery.for_job(job, 13).cache_key()


def test_memory_is_compared_per_gpu_not_with_all_gpus_of_an_instance():
    q = OfferQuery(regions=("us-east-1",), gpus=("T4", "A10G"), min_gpu_memory_gib=20)
    assert q.accepts(offer("g5.xlarge", 1.0))
    assert not q.accepts(offer("g4dn.12xlarge", 3.9))  # 4 x 16 GB = 64 GB in all, but 16 GB per GPU


def test_query_with_a_sizing_takes_only_the_types_the_job_fits():
    job = JobCreate(model="gpt2", dataset="s3://data-bucket/train.txt", max_steps=10, budget_usd=5,
                    deadline=datetime(2099, 1, 1, tzinfo=UTC), regions=["us-east-1"], batch_size=1, grad_accum=16,
                    seq_len=2048, precision="bf16")
    full_8b = JobSizing(model=size_from_formula(LLAMA3_8B), shape=TrainingShape.of_job(job))
    q = OfferQuery.for_job(job, full_8b)
    wanted = {t.name for t in q.instance_types_wanted()}
    assert "p4d.24xlarge" in wanted and "g5.48xlarge" not in wanted and "p3.16xlarge" not in wanted
    assert all(fit(full_8b, name).gpu_memory_per_device_gib <= INSTANCE_TYPES[name].gpu_memory_gib for name in wanted)
    assert q.accepts(offer("p4d.24xlarge", 32.77)) and not q.accepts(offer("g5.48xlarge", 16.288))
    assert q.cache_key() != OfferQuery.for_job(job, 0.0).cache_key()
