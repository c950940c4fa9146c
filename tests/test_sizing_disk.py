"""spotshift.sizing.disk: what a job keeps on the instance's local disk, and the root EBS volume
that holds it, or only the image when the type's instance store takes the job's data."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest

from spotshift.catalog import INSTANCE_STORE_DISKS, INSTANCE_TYPES
from spotshift.hf import size_from_formula
from spotshift.models import Job, JobCreate, JobMeasurements, TrainingMethod
from spotshift.sizing import JobSizing, TrainingShape
from spotshift.sizing.disk import (
    DATA_MARGIN, GIB, ROOT_MARGIN_GIB, DiskNeed, RootVolumeTooLarge, disk_need, job_disk_need, plan_root_volume,
)

LLAMA_7B = {"model_type": "llama", "hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
            "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000}
IMAGE_GIB = 75
MAX = 2048


def sizing(method: TrainingMethod = TrainingMethod.FULL, config: dict = LLAMA_7B) -> JobSizing:
    return JobSizing(model=size_from_formula(config), shape=TrainingShape(method=method))


def data_gib(total_bytes: int) -> int:
    return math.ceil(total_bytes * (1 + DATA_MARGIN) / GIB)


def plan(need: DiskNeed | None, instance_type: str, image_gib: int = IMAGE_GIB, max_gib: int = MAX):
    return plan_root_volume(image_gib, need, instance_type, INSTANCE_STORE_DISKS.get(instance_type, (0, 0)),
                            max_gib=max_gib)


def test_a_full_fine_tune_keeps_fp32_weights_a_checkpoint_with_adam_moments_and_the_final_model():
    s = sizing()
    params = s.model.params
    need = disk_need(s)
    assert 6.5e9 < params < 7e9
    assert (need.model_bytes, need.checkpoint_bytes, need.output_bytes, need.dataset_bytes) == \
        (4 * params, 12 * params, 4 * params, 0)


def test_lora_keeps_the_base_model_and_only_the_adapters_plus_the_merged_model_when_asked():
    s = sizing(TrainingMethod.LORA)
    adapters, params = s.trainable_params, s.model.params
    assert 0 < adapters < params / 100
    need = disk_need(s)
    assert (need.model_bytes, need.checkpoint_bytes, need.output_bytes) == (4 * params, 12 * adapters, 4 * adapters)
    assert disk_need(s, merge_adapter=True).output_bytes == 4 * adapters + 4 * params


def test_known_sizes_replace_the_estimates():
    need = disk_need(sizing(), model_bytes=13_500_000_000, checkpoint_bytes=80_000_000_000, dataset_bytes=2_000_000)
    assert (need.model_bytes, need.checkpoint_bytes, need.dataset_bytes) == (13_500_000_000, 80_000_000_000, 2_000_000)


def test_a_type_whose_instance_store_holds_the_data_gets_the_image_and_a_margin_only():
    root = plan(disk_need(sizing()), "g5.xlarge")  # one 250 GB disk: 232 GiB > the 7B model's ~151 GiB
    assert root.size_gib == IMAGE_GIB + ROOT_MARGIN_GIB and root.data_on_instance_store
    assert "instance store" in root.detail and "checkpoint" in root.detail


@pytest.mark.parametrize("instance_type", ["p3.2xlarge",  # EBS only
                                           "g4dn.xlarge"])  # one 125 GB disk: smaller than the data
def test_without_an_instance_store_that_holds_the_data_the_root_volume_holds_it(instance_type):
    need = disk_need(sizing())
    root = plan(need, instance_type)
    assert not root.data_on_instance_store
    assert root.size_gib == IMAGE_GIB + ROOT_MARGIN_GIB + data_gib(20 * sizing().model.params)
    assert root.size_gib >= IMAGE_GIB  # EC2 refuses a root volume smaller than the image's snapshot


def test_only_one_disk_of_the_instance_store_counts():
    """g6.8xlarge has two 450 GB disks: data of 600 GiB goes to the root volume (the fallback formats one disk)."""
    need = DiskNeed(model_bytes=600 * GIB, checkpoint_bytes=0, output_bytes=0)
    assert not plan(need, "g6.8xlarge").data_on_instance_store
    assert plan(DiskNeed(model_bytes=300 * GIB, checkpoint_bytes=0, output_bytes=0), "g6.8xlarge").data_on_instance_store


def test_an_unknown_need_adds_nothing_and_uses_any_instance_store():
    assert plan(None, "g5.xlarge").size_gib == plan(None, "p3.2xlarge").size_gib == IMAGE_GIB + ROOT_MARGIN_GIB
    assert plan(None, "g5.xlarge").data_on_instance_store and not plan(None, "p3.2xlarge").data_on_instance_store


def test_a_root_volume_above_the_cap_is_refused_naming_the_size_the_cap_and_the_setting():
    need = disk_need(sizing())
    with pytest.raises(RootVolumeTooLarge) as info:
        plan(need, "p3.2xlarge", max_gib=200)
    message = str(info.value)
    assert f"{IMAGE_GIB + ROOT_MARGIN_GIB + data_gib(20 * sizing().model.params)} GiB root volume on p3.2xlarge" \
        in message
    assert "root_volume_max_gib=200" in message and "SPOTSHIFT_ROOT_VOLUME_MAX_GIB" in message
    assert plan(need, "g5.xlarge", max_gib=200).size_gib == IMAGE_GIB + ROOT_MARGIN_GIB  # the instance store holds it


def test_a_stored_job_uses_its_measured_checkpoint_and_none_without_a_sizing():
    request = JobCreate.model_construct(merge_adapter=False)
    job = Job.model_construct(id="j1", sizing=sizing(), request=request,
                              measured=JobMeasurements(checkpoint_gb=50.0))
    assert job_disk_need(job).checkpoint_bytes == 50_000_000_000
    fresh = job.model_copy(update={"measured": JobMeasurements()})
    assert job_disk_need(fresh).checkpoint_bytes == 12 * sizing().model.params
    assert job_disk_need(job.model_copy(update={"sizing": None})) is None


def test_the_catalogs_instance_store_is_ec2s_describe_instance_types():
    """Every catalog type against the DescribeInstanceTypes snapshot moto ships (InstanceStorageInfo):
    the same disks and sizes, and none where EC2 lists none."""
    import moto

    data = json.loads(gzip.open(Path(moto.__file__).parent / "ec2/resources/instance_types.json.gz").read())
    for name in INSTANCE_TYPES:
        storage = (data.get(name) or {}).get("InstanceStorageInfo")
        expected = (storage["Disks"][0]["Count"], storage["Disks"][0]["SizeInGB"]) if storage else (0, 0)
        assert INSTANCE_TYPES[name].instance_store == expected, name
