"""spotshift.smoke: the smoke's offer choice, its cost estimate against the cap, the cost of what
ran, the phases and the summary (pure: no AWS, no Prefect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spotshift.models import EndReason, Market, Offer, Workload
from spotshift.smoke import (
    SmokeAssumptions, SmokeFailed, SmokeReport, SmokeStep, SmokeTimeline, choose_smoke_offer, cost_verdict,
    estimate_smoke_cost, refusal, render_summary, smoke_job_request, workloads_cost,
)

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)
GPU = {"g4dn.xlarge": ("T4", 1, 4), "g4dn.2xlarge": ("T4", 1, 8), "g5.xlarge": ("A10G", 1, 4),
       "g5g.xlarge": ("T4G", 1, 4), "p3.2xlarge": ("V100", 1, 8), "g4dn.12xlarge": ("T4", 4, 48)}


def offer(instance_type: str, usd: float, zone: str = "us-east-1a", market: Market = Market.SPOT) -> Offer:
    gpu, count, vcpus = GPU[instance_type]
    return Offer(instance_type=instance_type, gpu=gpu, gpu_count=count, gpu_memory_gib=16, vcpus=vcpus,
                 memory_gib=16, region="us-east-1", zone=zone, market=market, usd_per_hour=usd, observed_at=NOW,
                 source="ec2:spot-price-history")


def everything(_: str) -> bool:
    return True


def test_the_cheapest_spot_offer_is_chosen_on_demand_never():
    offers = [offer("g5.xlarge", 0.40), offer("g4dn.xlarge", 0.20, "us-east-1b"), offer("g4dn.xlarge", 0.10,
              market=Market.ON_DEMAND), offer("g4dn.xlarge", 0.25, "us-east-1c")]
    choice = choose_smoke_offer(offers, quota_vcpus={}, supported=everything)
    assert (choice.offer.instance_type, choice.offer.zone, choice.offer.usd_per_hour) == ("g4dn.xlarge", "us-east-1b", 0.20)
    assert choice.considered == 3 and choice.skipped == ()


def test_equal_prices_take_the_smallest_instance():
    # moto's spot prices are all the same dummy: the smallest GPU instance, not a p5, must win
    offers = [offer("g4dn.12xlarge", 1e-5), offer("g4dn.2xlarge", 1e-5), offer("g4dn.xlarge", 1e-5, "us-east-1d"),
              offer("g4dn.xlarge", 1e-5, "us-east-1a")]
    choice = choose_smoke_offer(offers, quota_vcpus={}, supported=everything)
    assert (choice.offer.instance_type, choice.offer.zone) == ("g4dn.xlarge", "us-east-1a")


def test_unsupported_families_and_quotas_too_small_are_skipped_with_the_reason():
    offers = [offer("g5g.xlarge", 0.05), offer("p3.2xlarge", 0.08), offer("g4dn.2xlarge", 0.10),
              offer("g5.xlarge", 0.30)]
    choice = choose_smoke_offer(offers, quota_vcpus={"p3.2xlarge": 0.0, "g4dn.2xlarge": 4.0, "g5.xlarge": 4.0},
                                supported=lambda t: not t.startswith("g5g"))
    assert choice.offer.instance_type == "g5.xlarge"
    assert choice.skipped == ("g5g.xlarge: the region's image does not support it",
                              "p3.2xlarge: needs 8 vCPUs, its spot quota allows 0",
                              "g4dn.2xlarge: needs 8 vCPUs, its spot quota allows 4")


def test_an_unknown_quota_is_tried_and_nothing_usable_gives_no_offer():
    assert choose_smoke_offer([offer("g4dn.xlarge", 0.2)], quota_vcpus={"g4dn.xlarge": None},
                              supported=everything).offer is not None
    none = choose_smoke_offer([offer("g4dn.xlarge", 0.2)], quota_vcpus={"g4dn.xlarge": 0.0}, supported=everything)
    assert none.offer is None and none.skipped == ("g4dn.xlarge: needs 4 vCPUs, its spot quota allows 0",)


def test_the_estimate_prices_two_instance_lives_with_ebs_and_public_ipv4():
    a = SmokeAssumptions(boot_s=600, step_s=5, checkpoint_s=30, resume_s=30, shutdown_s=90, root_volume_gib=200)
    first, second = a.lifetimes_s()
    assert (first, second) == (600 + 50 + 30 + 90, 600 + 30 + 50 + 30 + 90)
    est = estimate_smoke_cost(offer("g4dn.xlarge", 0.2), a)
    hours = (first + second) / 3600
    assert est.cost.instances_usd == pytest.approx(hours * 0.2)
    assert est.cost.ebs_usd == pytest.approx(hours * 200 * 0.08 / 730)
    assert est.cost.ipv4_usd == pytest.approx(hours * 0.005)
    assert 0.05 < est.total_usd < 0.25  # a g4dn.xlarge spot smoke fits the default cap


def test_short_lives_are_billed_one_minute_each():
    a = SmokeAssumptions(boot_s=1, step_s=0, checkpoint_s=0, resume_s=0, shutdown_s=0)
    est = estimate_smoke_cost(offer("g4dn.xlarge", 3.6), a)
    assert est.cost.billed_seconds == 120 and est.cost.instances_usd == pytest.approx(0.12)


def test_an_estimate_above_the_cap_is_refused_naming_both():
    est = estimate_smoke_cost(offer("g4dn.xlarge", 0.2))
    assert refusal(est, 0.25) is None
    text = refusal(est, 0.01)
    assert f"about ${est.total_usd:.4f}, above the cap of $0.01" in text and "nothing was launched" in text


def workload(instance_id: str, seconds: float, usd: float, end: EndReason) -> Workload:
    return Workload(job_id="smoke-1", instance_id=instance_id, instance_type="g4dn.xlarge", region="us-east-1",
                    zone="us-east-1a", market=Market.SPOT, usd_per_hour=usd, started_at=NOW,
                    ended_at=NOW + timedelta(seconds=seconds), billed_seconds=seconds, end_reason=end)


def test_the_cost_of_what_ran_comes_from_the_billed_workloads_and_a_cost_above_the_cap_fails():
    a = SmokeAssumptions()
    cost = workloads_cost([workload("i-1", 600, 0.36, EndReason.PREEMPTED), workload("i-2", 900, 0.36,
                                                                                     EndReason.COMPLETED)], a)
    assert cost.instances_usd == pytest.approx(0.15)
    assert cost.total_usd == pytest.approx(0.15 + 1500 / 3600 * (a.ebs_usd_per_hour + 0.005))
    assert cost_verdict(cost, 0.25) is None
    failed = cost_verdict(cost, 0.10)
    assert failed.step is SmokeStep.COST and "above the cap of $0.10" in failed.detail


def test_the_job_request_is_the_chosen_type_in_the_region_spot_only_twenty_steps():
    req = smoke_job_request(offer("g4dn.xlarge", 0.2), model="s3://spotshift-bucket/jobs/smoke-1/inputs/model/",
                            dataset="s3://spotshift-bucket/jobs/smoke-1/inputs/corpus.jsonl", max_usd=0.25, now=NOW, key="smoke-1")
    assert (req.max_steps, req.checkpoint_every_steps, req.regions, req.instance_types, req.markets) == \
        (20, 10, ["us-east-1"], ["g4dn.xlarge"], [Market.SPOT])
    assert req.budget_usd == 0.25 and req.approval.max_auto_plan_usd == 0.25 and req.deadline > NOW


def test_the_summary_names_phases_cost_and_the_failed_step():
    timeline = SmokeTimeline()
    for i, name in enumerate(("start", "checked", "chosen", "launch_1", "running_1", "heartbeat_1")):
        timeline.mark(name, NOW + timedelta(seconds=10 * i))
    timeline.mark("start", NOW + timedelta(hours=1))  # the first mark stays
    assert timeline.phases() == [("preflight (check)", 10.0), ("offer and estimate", 10.0), ("launch 1", 10.0),
                                 ("boot 1 (to first heartbeat)", 10.0)]
    est = estimate_smoke_cost(offer("g4dn.xlarge", 0.2))
    failed = SmokeReport("us-east-1", 0.25, offer=est.offer, estimate=est, timeline=timeline, job_id="smoke-1",
                         failure=SmokeFailed(SmokeStep.CHECKPOINT, "i-1 ended before a checkpoint"))
    lines = render_summary(failed)
    assert lines[0] == "spotshift aws smoke in us-east-1 (job smoke-1)"
    assert any("g4dn.xlarge (1x T4) spot in us-east-1a at $0.2000/h" in line for line in lines)
    assert lines[-1] == "FAIL at step checkpoint: i-1 ended before a checkpoint"
    assert not failed.passed
    passed = render_summary(SmokeReport("us-east-1", 0.25, estimate=est, cost=est.cost))
    assert passed[-1].startswith("PASS") and any(line.strip().startswith("cost ") for line in passed)
