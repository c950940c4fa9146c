"""Reading EC2 vCPU quotas as a first-time account meets them: no applied value (AWS answers
NoSuchResourceException: the AWS default is read), and a quota that cannot be read is unknown
with its reason, never zero. Service Quotas: Stubber (moto's knows no EC2 codes), named as such."""

from __future__ import annotations

import boto3

from spotshift.aws.calls import retry_config
from spotshift.aws.quotas import QUOTAS, increase_hint, read_quota
from spotshift.models import Market
from tests.aws_helpers import stubbed_quotas

G_SPOT = QUOTAS[("G", Market.SPOT)]
P_SPOT = QUOTAS[("P", Market.SPOT)]


def test_no_applied_value_falls_back_to_the_aws_default():
    client = stubbed_quotas({}, defaults={G_SPOT.code: 8.0})("us-east-1")
    reading = read_quota(client, QUOTAS[("G", Market.ON_DEMAND)], region="us-east-1")  # the stub's first answer
    assert (reading.vcpus, reading.source) == (64.0, "applied")
    reading = read_quota(client, G_SPOT, region="us-east-1")  # NoSuchResourceException, then the default
    assert (reading.vcpus, reading.source, reading.usable) == (8.0, "AWS default", True)
    assert reading.describe() == "All G and VT Spot Instance Requests (L-3819A6DF): 8 vCPUs (AWS default)"


def test_a_default_of_zero_is_known_and_not_usable():
    client = stubbed_quotas({}, defaults={code: 0.0 for code in ("L-DB2E81BA", G_SPOT.code)})("us-east-1")
    read_quota(client, QUOTAS[("G", Market.ON_DEMAND)], region="us-east-1")
    reading = read_quota(client, G_SPOT, region="us-east-1")
    assert (reading.known, reading.vcpus, reading.usable) == (True, 0.0, False)


def test_access_denied_is_unknown_with_the_reason_not_zero():
    client = stubbed_quotas({}, errors={"L-DB2E81BA": "AccessDeniedException"})("us-east-1")
    reading = read_quota(client, QUOTAS[("G", Market.ON_DEMAND)], region="us-east-1")
    assert (reading.known, reading.usable, reading.denied) == (False, True, True)
    assert "AccessDeniedException on GetServiceQuota in us-east-1" in reading.reason
    assert reading.describe().startswith("Running On-Demand G and VT instances (L-DB2E81BA): unknown (")


def test_a_region_without_service_quotas_is_unknown():
    unreachable = boto3.client("service-quotas", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                               aws_access_key_id="x", aws_secret_access_key="x", config=retry_config(1))
    reading = read_quota(unreachable, P_SPOT, region="us-east-1")
    assert (reading.known, reading.usable, reading.denied) == (False, True, False)
    assert "EndpointConnectionError" in reading.reason


def test_the_increase_hint_names_the_code_the_console_and_the_cli():
    hint = increase_hint(P_SPOT, "eu-west-1")
    assert "https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/ec2/quotas/L-7212CCBC" in hint
    assert ("aws service-quotas request-service-quota-increase --region eu-west-1 --service-code ec2 "
            "--quota-code L-7212CCBC --desired-value 8") in hint  # a p3.2xlarge, the smallest P type
