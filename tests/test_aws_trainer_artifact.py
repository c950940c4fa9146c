"""The trainer wheel: only training/, its own dependencies (no torch, nothing of the orchestrator),
the same bytes for the same sources, uploaded once under artifacts/<sha256>/."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from spotshift.aws.trainer_artifact import build_trainer_wheel, publish_trainer_wheel, wheel_publisher

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_only_the_trainer_and_its_own_dependencies():
    wheel = build_trainer_wheel(REPO)
    names = zipfile.ZipFile(io.BytesIO(wheel.data)).namelist()
    assert "training/__main__.py" in names and "training/bootstrap.py" in names
    assert not [n for n in names if n.startswith(("spotshift/", "flows/", "tasks/", "deployments/", "blocks/"))]
    metadata = zipfile.ZipFile(io.BytesIO(wheel.data)).read("spotshift_trainer-0.1.0.dist-info/METADATA").decode()
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert any(r.startswith("transformers") for r in requires) and any(r.startswith("boto3") for r in requires)
    assert not any(r.startswith(("torch", "prefect", "supabase", "pymongo")) for r in requires)


def test_the_same_sources_give_the_same_key(tmp_path):
    assert build_trainer_wheel(REPO).key == build_trainer_wheel(REPO).key


def test_the_wheel_is_uploaded_once_under_its_hash(s3, bucket):
    wheel = build_trainer_wheel(REPO)
    publish = wheel_publisher(s3, bucket, repo=REPO)
    uri = publish()
    assert uri == f"s3://{bucket}/artifacts/{wheel.sha256}/spotshift_trainer-0.1.0-py3-none-any.whl"
    assert s3.get_object(Bucket=bucket, Key=wheel.key)["Body"].read() == wheel.data
    first = s3.head_object(Bucket=bucket, Key=wheel.key)["LastModified"]
    assert publish_trainer_wheel(s3, bucket, wheel) == uri and publish() == uri
    assert s3.head_object(Bucket=bucket, Key=wheel.key)["LastModified"] == first


def test_the_pinned_requirements_lie_beside_the_wheel_and_name_it_by_its_hash(s3, bucket):
    import hashlib

    wheel = build_trainer_wheel(REPO)
    publish_trainer_wheel(s3, bucket, wheel)
    stored = s3.get_object(Bucket=bucket, Key=wheel.requirements_key)["Body"].read()
    assert wheel.requirements_key == f"artifacts/{wheel.sha256}/requirements.txt"
    assert stored == wheel.requirements and hashlib.sha256(stored).hexdigest() == wheel.sha256
    text = stored.decode()
    assert text.startswith((REPO / "requirements" / "trainer.txt").read_text())
    assert text.rstrip().endswith(f"./spotshift_trainer-0.1.0-py3-none-any.whl "
                                  f"--hash=sha256:{hashlib.sha256(wheel.data).hexdigest()}")
    assert "\ntorch==" not in text and "\ntransformers==" in text
