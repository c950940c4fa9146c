"""blocks.runtime.runtime_from_settings' EC2 wiring against the moto server: every allowed region, the account's
bucket by default, per-region images and network on each launch, the Pricing API through its
own endpoint region and the Spot Advisor feed."""

from __future__ import annotations

import uuid

from blocks.runtime import _aws_market, _ec2_backend
from spotshift.market.spot_advisor import fetch_url
from spotshift.settings import Settings
from tests.aws_helpers import moto_clients


def test_the_ec2_runtime_knows_every_region_and_defaults_to_the_accounts_bucket(moto_endpoint, tmp_path):
    settings = Settings(home=tmp_path, compute_backend="ec2", aws_region="eu-west-1",
                        regions=["us-east-1", "eu-west-1", "ap-south-1"])
    settings, backend, account = _ec2_backend(settings, moto_clients(moto_endpoint))
    assert account == "123456789012" and settings.bucket == "spotshift-123456789012-eu-west-1"
    assert backend._regions == ["us-east-1", "eu-west-1", "ap-south-1"]
    assert backend.preflight is not None and backend.launch_env.boot.python == "/opt/pytorch/bin/python"
    explicit, _, _ = _ec2_backend(Settings(home=tmp_path, bucket="mine", compute_backend="ec2"), moto_clients(moto_endpoint))
    assert explicit.bucket == "mine"


def test_the_live_market_reads_pricing_in_its_endpoint_region_and_the_spot_advisor(moto_endpoint, tmp_path):
    settings = Settings(home=tmp_path, compute_backend="ec2", aws_region="eu-west-1", pricing_region="us-east-1",
                        image_ids={"eu-west-1": "ami-999844e0"}, security_group=f"sg-{uuid.uuid4().hex[:6]}")
    settings, backend, account = _ec2_backend(settings, moto_clients(moto_endpoint))
    market = _aws_market(settings, moto_clients(moto_endpoint), backend, live=True)
    assert market.on_demand.pricing.meta.region_name == "us-east-1"
    assert market.risks.fetch is fetch_url and market.risks.cache_file == tmp_path / "spot-advisor.json"
    assert market.supports("eu-west-1", "g5.xlarge") and not market.supports("eu-west-1", "g5g.xlarge")
