"""Helpers for the `spotshift aws` tests: clients bound to a moto server, and botocore Stubbers for
what moto cannot answer (Service Quotas' EC2 codes), named as such."""

from __future__ import annotations

from typing import Any, Callable

import boto3
from botocore.stub import Stubber

from spotshift.aws.calls import retry_config
from spotshift.aws.quotas import gpu_quotas


_COMPLETED_DEFAULT_VPCS: set[tuple[str, str]] = set()  # (endpoint, region)


def moto_clients(endpoint: str, *, key: str = "testing", secret: str = "testing",
                 stubs: dict[str, Callable[[str], Any]] | None = None) -> Callable[[str, str], Any]:
    """(service, region) -> a client of the moto server; `stubs` replaces services moto lacks. The
    first EC2 client of a region completes its default VPC as AWS makes it (complete_default_vpc)."""
    cache: dict[tuple[str, str], Any] = {}

    def clients(service: str, region: str):
        if stubs and service in stubs:
            return stubs[service](region)
        if (service, region) not in cache:
            cache[(service, region)] = boto3.client(service, endpoint_url=endpoint, region_name=region,
                                                    aws_access_key_id=key, aws_secret_access_key=secret,
                                                    config=retry_config(1))
            if service == "ec2" and (endpoint, region) not in _COMPLETED_DEFAULT_VPCS:
                complete_default_vpc(cache[(service, region)])
                _COMPLETED_DEFAULT_VPCS.add((endpoint, region))
        return cache[(service, region)]
    return clients


def complete_default_vpc(ec2: Any) -> str | None:
    """Give the region's default VPC what AWS creates with every default VPC and moto 5.2 does not:
    an internet gateway attached to it and the main route table's 0.0.0.0/0 route to that gateway
    (moto's has only the local route, so `check` would rightly find no way to S3 or the package
    index). Idempotent; the gateway's id (None without a default VPC)."""
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        return None
    vpc = vpcs[0]["VpcId"]
    attached = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])
    if attached["InternetGateways"]:
        igw = attached["InternetGateways"][0]["InternetGatewayId"]
    else:
        igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in main.get("Routes", [])):
        ec2.create_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    return igw


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
