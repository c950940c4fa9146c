from datetime import UTC, datetime, timedelta

import pytest

from spotshift.catalog import work_units_per_hour
from spotshift.models import JobCreate, Market, Workload
from spotshift.planning import V100_SUSTAINED_FLOPS, estimate_work_v100_hours, offer_of_workload, remaining_work

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_pre_run_estimate_is_six_flops_per_parameter_and_token():
    req = JobCreate.model_validate(dict(model="gpt2", dataset="s3://bucket/d.txt", max_steps=1_000, batch_size=8,
                                        grad_accum=2, seq_len=512, budget_usd=10, deadline=T0 + timedelta(days=2)),
                                   context={"now": T0})
    hours = estimate_work_v100_hours(124_000_000, req)
    tokens = 1_000 * 8 * 2 * 512
    assert hours == pytest.approx(6 * 124e6 * tokens / V100_SUSTAINED_FLOPS / 3600)
    assert 0.02 < hours < 0.1  # GPT-2 small on 8M tokens: a few minutes of a V100


def test_remaining_work_is_measured_once_a_rate_is_known():
    # 300 steps left at 100 steps/h on an A100 instance (8 x 2.3 V100s): 3 h x its work units per hour
    assert remaining_work(700, 1_000, 100.0, "p4d.24xlarge", estimate_total=5.0) == pytest.approx(
        3 * work_units_per_hour("p4d.24xlarge"))
    assert remaining_work(700, 1_000, None, None, estimate_total=5.0) == pytest.approx(1.5)
    assert remaining_work(1_000, 1_000, 100.0, "p3.2xlarge", estimate_total=5.0) == 0


def test_a_workload_row_becomes_the_offer_it_runs_on():
    w = Workload(job_id="j", instance_type="g5.12xlarge", region="us-west-2", zone="us-west-2b",
                 market=Market.SPOT, usd_per_hour=2.1, started_at=T0)
    o = offer_of_workload(w, T0)
    assert (o.gpu, o.gpu_count, o.gpu_memory_gib, o.zone, o.market, o.usd_per_hour) == (
        "A10G", 4, 24, "us-west-2b", Market.SPOT, 2.1)
    assert o.key == ("us-west-2", "us-west-2b", "g5.12xlarge", "spot")
