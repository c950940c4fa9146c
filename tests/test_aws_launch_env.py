"""LaunchEnvironment completes a flow's launch request for its region: the region's image, the
zone's subnet and the security group, and the EC2 user-data (wheel, torchrun per GPU, log, power off)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from deployments.local_aws import client
from spotshift.aws.ec2 import LaunchRequest
from spotshift.aws.errors import CapacityUnavailable, ImageUnavailable
from spotshift.aws.images import RegionImage
from spotshift.aws.launch_env import LaunchEnvironment, TrainerBoot
from spotshift.aws.network import LaunchNetwork
from spotshift.aws.setup import ensure_security_group
from spotshift.catalog import INSTANCE_TYPES
from spotshift.models import Market, Offer


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
    with pytest.raises(CapacityUnavailable, match="no usable subnet in us-west-2z"):
        env.complete(request("g5.xlarge", "us-west-2z"))


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
