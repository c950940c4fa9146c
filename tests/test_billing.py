from datetime import UTC, datetime, timedelta

from spotshift.billing import MIN_BILLED_SECONDS, billed_seconds, cost_report, summarize
from spotshift.models import EndReason, Market, Migration, MigrationReason, Workload

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def wl(i: int, seconds: float, price: float, market=Market.SPOT) -> Workload:
    return Workload(id=f"wl-{i}", job_id="j", instance_type="p3.2xlarge", region="us-east-1",
                    zone="us-east-1a", market=market, usd_per_hour=price, started_at=T0,
                    ended_at=T0 + timedelta(seconds=seconds), billed_seconds=billed_seconds(T0, T0 + timedelta(seconds=seconds)),
                    end_reason=EndReason.COMPLETED)


def test_per_second_billing_with_a_one_minute_minimum():
    assert billed_seconds(T0, T0 + timedelta(seconds=10)) == MIN_BILLED_SECONDS
    assert billed_seconds(T0, T0 + timedelta(seconds=3601.5)) == 3601.5


def test_totals_and_the_on_demand_equivalent():
    s = summarize([wl(1, 3600, 1.0), wl(2, 1800, 0.5)], {"p3.2xlarge": 3.06})
    assert abs(s.total_usd - 1.25) < 1e-9
    assert abs(s.on_demand_usd - 3.06 * 1.5) < 1e-9
    assert 0.72 < s.saving_ratio < 0.74


def test_report_lists_every_segment_and_the_migration():
    m = Migration(job_id="j", from_workload_id="wl-1", to_workload_id="wl-2", reason=MigrationReason.CHEAPER,
                  expected_saving_usd=0.4, downtime_seconds=12.5, started_at=T0)
    text = cost_report("j", [wl(1, 3600, 1.0), wl(2, 1800, 0.5)], [m], {"p3.2xlarge": 3.06})
    assert text.count("| p3.2xlarge |") == 2
    assert "$1.2500" in text and "$4.5900" in text and "12.5" in text
