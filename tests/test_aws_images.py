"""Per-region images: a settings override, else the Deep Learning AMI's public SSM parameter
(Stubber: moto's SSM does not serve it), else the newest matching image (moto's describe_images)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from deployments.local_aws import client
from spotshift.aws.errors import ImageUnavailable, PermissionDenied
from spotshift.aws.images import ImageResolver, RegionImage, resolve_image

PARAM = "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.9-ubuntu-24.04/latest/ami-id"


def stubbed(service: str, region: str = "us-west-2"):
    c = boto3.client(service, region_name=region, aws_access_key_id="x", aws_secret_access_key="x")
    return c, Stubber(c)


def test_the_ssm_parameter_names_the_regions_image():
    ssm, ssm_stub = stubbed("ssm")
    ec2, ec2_stub = stubbed("ec2")
    ssm_stub.add_response("get_parameter", {"Parameter": {"Name": PARAM, "Value": "ami-0aaaaaaaaaaaaaaaa", "Type": "String"}},
                          {"Name": PARAM})
    ec2_stub.add_response("describe_images", {"Images": [{"ImageId": "ami-0aaaaaaaaaaaaaaaa", "Architecture": "x86_64",
                                                          "Name": "Deep Learning OSS ... PyTorch 2.9"}]},
                          {"ImageIds": ["ami-0aaaaaaaaaaaaaaaa"]})
    with ssm_stub, ec2_stub:
        image = resolve_image("us-west-2", ssm=ssm, ec2=ec2, parameter=PARAM)
    assert image.image_id == "ami-0aaaaaaaaaaaaaaaa" and image.source == f"ssm:{PARAM}"


def test_without_the_parameter_the_newest_matching_image_of_the_region(moto_endpoint):
    ec2 = client("ec2", moto_endpoint, "eu-west-1")
    old = ec2.register_image(Name="DLAMI test 20250101", RootDeviceName="/dev/sda1")["ImageId"]
    image = resolve_image("eu-west-1", ssm=client("ssm", moto_endpoint, "eu-west-1"), ec2=ec2, parameter=PARAM,
                          name_pattern="DLAMI test *", owners=["self"])
    assert image.image_id == old and image.source.startswith("describe_images:")


def test_nothing_resolves_names_what_was_tried_and_how_to_fix_it(moto_endpoint):
    with pytest.raises(ImageUnavailable, match="SPOTSHIFT_IMAGE_IDS") as info:
        resolve_image("ap-south-1", ssm=client("ssm", moto_endpoint, "ap-south-1"),
                      ec2=client("ec2", moto_endpoint, "ap-south-1"), parameter=PARAM, name_pattern="nothing-*")
    assert PARAM in str(info.value) and "nothing-*" in str(info.value)


def test_an_override_that_does_not_exist_in_the_region_is_an_image_error(moto_endpoint):
    with pytest.raises(ImageUnavailable, match="ami-0123456789abcdef0"):
        resolve_image("us-east-1", ssm=None, ec2=client("ec2", moto_endpoint), override="ami-0123456789abcdef0")


def test_a_denied_parameter_read_is_a_permission_error_not_a_fallback():
    ssm, ssm_stub = stubbed("ssm")
    ssm_stub.add_client_error("get_parameter", service_error_code="AccessDeniedException", service_message="no")
    with ssm_stub, pytest.raises(PermissionDenied):
        resolve_image("us-west-2", ssm=ssm, ec2=None, parameter=PARAM, name_pattern="x")


def test_families_the_image_does_not_support_are_refused():
    dlami = RegionImage("us-east-1", "ami-1", "ssm:p")
    assert dlami.supports("g5.xlarge") and dlami.supports("p4d.24xlarge")
    assert not dlami.supports("g5g.xlarge") and not dlami.supports("p3.2xlarge")  # arm; dropped by the DLAMI
    assert RegionImage("us-east-1", "ami-2", "ssm:p", architecture="arm64").supports("g5g.xlarge")


def test_each_region_is_resolved_once():
    calls = []
    resolver = ImageResolver(lambda r: calls.append(r) or RegionImage(r, "ami-1", "settings"))
    assert [resolver("us-east-1").region, resolver("us-east-1").region, resolver("us-west-2").region] == \
        ["us-east-1", "us-east-1", "us-west-2"]
    assert calls == ["us-east-1", "us-west-2"]
