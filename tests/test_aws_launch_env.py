"""LaunchEnvironment completes a flow's launch request for its region: the region's image, the
zone's subnet and the security group, and the EC2 user-data (wheel, torchrun per GPU, log, power off)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest

from deployments.local_aws import client
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.errors import CapacityUnavailable, ImageUnavailable
from spotshift.aws.ec2_backend import Ec2Backend
from spotshift.aws.images import RegionImage, resolve_image
from spotshift.aws.launch_env import LaunchEnvironment, TrainerBoot
from spotshift.aws.network import LaunchNetwork, SubnetUnusable
from spotshift.aws.setup import ensure_security_group
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market, Offer
from spotshift.sizing.disk import GIB, ROOT_MARGIN_GIB, DiskNeed


def request(name: str, zone: str) -> LaunchRequest:
    t = INSTANCE_TYPES[name]
    offer = Offer(instance_type=t.name, gpu=t.gpu, gpu_count=t.gpu_count, gpu_memory_gib=t.gpu_memory_gib,
                  vcpus=t.vcpus, memory_gib=t.memory_gib, region=zone[:-1], zone=zone, market=Market.SPOT,
                  usd_per_hour=1.0, observed_at=datetime(2026, 11, 1, tzinfo=UTC), source="test")
    return LaunchRequest(job_id="j1", workload_id="wl-1", offer=offer, spec_uri="s3://b/jobs/j1/spec.json")


@pytest.fixture
def env(moto_endpoint):
    group = f"spotshift-{uuid.uuid4().hex[:8]}"
    ensure_security_group(client("ec2", moto_endpoint, "us-west-2"), group, region="us-west-2")
    images = {"us-west-2": RegionImage("us-west-2", "ami-0bbbbbbbbbbbbbbbb", "ssm:p")}
    boot = TrainerBoot(wheel_uri=lambda: "s3://b/artifacts/abc/spotshift_trainer-0.1.0-py3-none-any.whl",
                       python="/opt/pytorch/bin/python", bucket_region="us-east-1", hub_token_secret="hf-token")
    network = LaunchNetwork(lambda r: client("ec2", moto_endpoint, r), security_group=group)
    return LaunchEnvironment(images=images.__getitem__, network=network, boot=boot)


def test_a_request_gets_its_regions_image_network_and_the_ec2_user_data(env):
    done = env.complete(request("g5.12xlarge", "us-west-2b"))
    assert done.image_id == "ami-0bbbbbbbbbbbbbbbb"
    assert done.subnet_id.startswith("subnet-") and done.security_group_ids[0].startswith("sg-") and done.public_ip
    script = done.user_data
    assert "--nproc_per_node=4 -m training --spec s3://b/jobs/j1/spec.json" in script  # g5.12xlarge: 4 GPUs
    assert "WHEEL_URI=s3://b/artifacts/abc/spotshift_trainer-0.1.0-py3-none-any.whl" in script
    assert "PYTHON=/opt/pytorch/bin/python" in script and "s3://b/jobs/j1/logs/" in script
    assert "shutdown -h now" in script and "169.254.169.254" in script
    assert "--secret-id hf-token" in script and "export AWS_DEFAULT_REGION=us-east-1" in script


def test_a_family_the_image_cannot_boot_blocks_the_offer(env):
    with pytest.raises(ImageUnavailable, match="does not support p3.2xlarge"):
        env.complete(request("p3.2xlarge", "us-west-2b"))


def test_a_zone_without_a_subnet_blocks_its_offers(env, moto_endpoint):
    """SubnetUnusable: a CapacityUnavailable that blocks the offer, not recorded as the zone's capacity lost."""
    with pytest.raises(SubnetUnusable, match="no subnet in us-west-2z: the default VPC has none there") as info:
        env.complete(request("g5.xlarge", "us-west-2z"))
    assert isinstance(info.value, CapacityUnavailable) and type(info.value) is not CapacityUnavailable


def test_torchrun_starts_only_the_processes_the_global_batch_keeps_busy(env):
    """A global batch of 2 samples on a 4-GPU instance: 2 trainer processes (the trainer refuses more
    ranks than samples per step), never more than the instance's GPUs."""
    from flows.steps import trainer_processes
    from spotshift.hf import size_from_formula
    from spotshift.models import Job, JobCreate
    from spotshift.sizing import JobSizing, TrainingShape

    small = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1000}
    sized = JobSizing(model=size_from_formula(small), shape=TrainingShape(micro_batch=1, seq_len=128, samples_per_step=2))
    job = Job.model_construct(id="j1", sizing=sized, request=JobCreate.model_construct())
    four_gpus = request("g5.12xlarge", "us-west-2b")
    assert trainer_processes(job, four_gpus.offer) == 2
    assert "--nproc_per_node=2 -m training" in env.complete(four_gpus.model_copy(update={"processes": 2})).user_data
    assert "--nproc_per_node=4 -m training" in env.complete(four_gpus.model_copy(update={"processes": 9})).user_data
    assert trainer_processes(job.model_copy(update={"sizing": None}), four_gpus.offer) is None


# --- the root volume (moto's EC2: its image's root is /dev/xvda of 15 GiB) ---------------------


def root_volume_env(moto_endpoint, max_gib: int = 2048) -> tuple[LaunchEnvironment, RegionImage]:
    image = resolve_image("us-east-1", ssm=None, ec2=client("ec2", moto_endpoint), override="ami-999844e0")
    boot = TrainerBoot(wheel_uri=lambda: "s3://b/artifacts/abc/t.whl", python="/opt/pytorch/bin/python",
                       bucket_region="us-east-1")
    return LaunchEnvironment(images=lambda region: image, boot=boot, root_volume_max_gib=max_gib), image


NEED = DiskNeed(model_bytes=40 * GIB, checkpoint_bytes=100 * GIB, output_bytes=40 * GIB)  # 216 GiB with its margin


@pytest.mark.parametrize("instance_type, on_store", [("g5.xlarge", True),  # a 250 GB instance-store disk holds it
                                                     ("p3.2xlarge", False)])  # EBS only
def test_the_launched_instance_has_a_gp3_root_volume_sized_for_the_job_and_deleted_with_it(
        moto_endpoint, instance_type, on_store):
    env, image = root_volume_env(moto_endpoint)
    assert (image.root_device_name, image.root_volume_gib) == ("/dev/xvda", 15)  # DescribeImages' root mapping
    backend = Ec2Backend(lambda region: client("ec2", moto_endpoint, region), regions=["us-east-1"],
                         wait_poll_s=0.05, launch_env=env)
    req = request(instance_type, "us-east-1b").model_copy(update={"disk": NEED, "instance_profile": None})
    launched = backend.start(req)

    ec2 = client("ec2", moto_endpoint)
    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [launched.instance_id]}])["Volumes"]
    expected = 15 + ROOT_MARGIN_GIB + (0 if on_store else NEED.with_margin_gib)
    assert [(v["Size"], v["VolumeType"]) for v in volumes] == [(expected, "gp3")]
    attachment = volumes[0]["Attachments"][0]
    # as strict as AWS: the mapping names the image's root device (another name adds a second volume)
    # and is no smaller than its snapshot (AWS refuses that with InvalidBlockDeviceMapping)
    assert attachment["Device"] == image.root_device_name
    assert expected >= image.root_volume_gib
    user_data = base64.b64decode(ec2.describe_instance_attribute(
        InstanceId=launched.instance_id, Attribute="userData")["UserData"]["Value"]).decode()
    assert ("spotshift_instance_store()" in user_data) is on_store
    assert ("SCRATCH=/opt/spotshift/data\nexport HF_HOME=" in user_data) is not on_store
    backend.stop(launched.instance_id, "test")
    remaining = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volumes[0]["VolumeId"]]}])["Volumes"]
    assert remaining == []  # DeleteOnTermination (moto's describe calls omit the flag): no volume left to pay for


def test_a_root_volume_above_the_cap_blocks_the_offer_before_anything_is_launched(moto_endpoint):
    env, _ = root_volume_env(moto_endpoint, max_gib=100)
    backend = Ec2Backend(lambda region: client("ec2", moto_endpoint, region), regions=["us-east-1"],
                         wait_poll_s=0.05, launch_env=env)
    req = request("p3.2xlarge", "us-east-1b").model_copy(update={"disk": NEED, "instance_profile": None})
    with pytest.raises(CapacityUnavailable, match="root_volume_max_gib=100") as info:
        backend.start(req)
    assert info.value.code == "RootVolumeTooLarge" and not info.value.is_quota  # this offer only: the next may fit
    assert backend.list(req.job_id) == []
    assert env.complete(req.model_copy(update={"offer": request("g5.xlarge", "us-east-1b").offer})).root_volume_gib == 25
