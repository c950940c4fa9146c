"""Helpers for the `spotshift aws` tests: clients bound to a moto server, and botocore Stubbers for
what moto cannot answer (Service Quotas' EC2 codes), named as such."""

from __future__ import annotations

from typing import Any, Callable

import boto3
from botocore.stub import Stubber

from spotshift.aws.calls import retry_config
from spotshift.aws.quotas import gpu_quotas


def moto_clients(endpoint: str, *, key: str = "testing", secret: str = "testing",
                 stubs: dict[str, Callable[[str], Any]] | None = None) -> Callable[[str, str], Any]:
    """(service, region) -> a client of the moto server; `stubs` replaces services moto lacks."""
    cache: dict[tuple[str, str], Any] = {}

    def clients(service: str, region: str):
        if stubs and service in stubs:
            return stubs[service](region)
        if (service, region) not in cache:
            cache[(service, region)] = boto3.client(service, endpoint_url=endpoint, region_name=region,
                                                    aws_access_key_id=key, aws_secret_access_key=secret,
                                                    config=retry_config(1))
        return cache[(service, region)]
    return clients


def stubbed_quotas(values: dict[str, float], *, defaults: dict[str, float] | None = None,
                   errors: dict[str, str] | None = None) -> Callable[[str], Any]:
    """Stubber (moto's Service Quotas knows no EC2 codes): each region answers get_service_quota for
    every G/P quota with values[code] vCPUs (default 64). A code in `defaults` has no applied value,
    as on a new account: GetServiceQuota answers AWS's NoSuchResourceException, then
    GetAWSDefaultServiceQuota answers defaults[code]. A code in `errors` answers that AWS error code."""
    defaults, errors = defaults or {}, errors or {}

    def make(region: str):
        client = boto3.client("service-quotas", region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
        stubber = Stubber(client)
        for _, _, quota in gpu_quotas():
            params = {"ServiceCode": "ec2", "QuotaCode": quota.code}
            if quota.code in errors:
                stubber.add_client_error("get_service_quota", errors[quota.code], f"stubbed {errors[quota.code]}",
                                         400, expected_params=params)
            elif quota.code in defaults:
                stubber.add_client_error("get_service_quota", "NoSuchResourceException",
                                         f"The request failed because the specified service quota {quota.code} "
                                         "has no applied value.", 400, expected_params=params)
                stubber.add_response("get_aws_default_service_quota", {"Quota": {
                    "QuotaCode": quota.code, "ServiceCode": "ec2", "Value": defaults[quota.code]}}, params)
            else:
                stubber.add_response("get_service_quota", {"Quota": {"QuotaCode": quota.code, "ServiceCode": "ec2",
                                                                     "Value": values.get(quota.code, 64.0)}}, params)
        stubber.activate()
        return client
    return make
