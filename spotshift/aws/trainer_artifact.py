"""The trainer wheel: `training/` of this checkout packed as its own small wheel (its runtime
dependencies only; torch comes from the image) and uploaded content-addressed under artifacts/."""

from __future__ import annotations

import base64
import hashlib
import io
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from spotshift.aws.calls import call_aws
from spotshift.aws.errors import NotFound

DIST_NAME = "spotshift_trainer"
VERSION = "0.1.0"
WHEEL_NAME = f"{DIST_NAME}-{VERSION}-py3-none-any.whl"
ARTIFACTS_PREFIX = "artifacts/"
FROM_MAIN_DEPENDENCIES = ("boto3", "pydantic", "huggingface_hub")  # the trainer imports these besides the train extra
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # same bytes for the same sources: the key is their hash


@dataclass(frozen=True)
class TrainerWheel:
    """A built wheel: its bytes and their sha256 (the artifact key's folder)."""

    data: bytes
    sha256: str

    @property
    def key(self) -> str:
        return f"{ARTIFACTS_PREFIX}{self.sha256}/{WHEEL_NAME}"

    def uri(self, bucket: str) -> str:
        return f"s3://{bucket}/{self.key}"


def _name(requirement: str) -> str:
    return requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0].strip()


def trainer_requirements(pyproject: Path) -> list[str]:
    """The `train` extra without torch (the image's PyTorch stays), plus what the trainer needs
    from the main dependencies; never the orchestrator's (prefect, supabase, ...)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    train = [r for r in project["optional-dependencies"]["train"] if _name(r).lower() != "torch"]
    main = [r for r in project["dependencies"] if _name(r).lower() in FROM_MAIN_DEPENDENCIES]
    return train + main


def _metadata(requirements: list[str]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {VERSION}",
             "Summary: the spotshift trainer (runs on the training instance)", "Requires-Python: >=3.10"]
    return "\n".join(lines + [f"Requires-Dist: {r}" for r in requirements]) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_trainer_wheel(repo: Path) -> TrainerWheel:
    """The wheel of `repo/training` (every .py, .sh and .tmpl file), deterministic."""
    source = repo / "training"
    files = {f"training/{p.relative_to(source).as_posix()}": p.read_bytes()
             for p in sorted(source.rglob("*")) if p.is_file() and p.suffix in (".py", ".sh", ".tmpl")
             and "__pycache__" not in p.parts}
    info = f"{DIST_NAME}-{VERSION}.dist-info"
    files[f"{info}/METADATA"] = _metadata(trainer_requirements(repo / "pyproject.toml")).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: spotshift\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files[f"{info}/entry_points.txt"] = b"[console_scripts]\nspotshift-train = training.__main__:main\n"
    record = "\n".join(_record_line(p, d) for p, d in files.items()) + f"\n{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in files.items():
            entry = zipfile.ZipInfo(path, _FIXED_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)
    data = buffer.getvalue()
    return TrainerWheel(data=data, sha256=hashlib.sha256(data).hexdigest())


def publish_trainer_wheel(s3: Any, bucket: str, wheel: TrainerWheel, *, account: str | None = None,
                          region: str = "") -> str:
    """Upload the wheel unless its key is already there; its s3:// URI."""
    owner = {"ExpectedBucketOwner": account} if account else {}
    try:
        call_aws(s3.head_object, region=region, Bucket=bucket, Key=wheel.key, **owner)
    except NotFound:
        call_aws(s3.put_object, region=region, Bucket=bucket, Key=wheel.key, Body=wheel.data,
                 ChecksumAlgorithm="SHA256", **owner)
    return wheel.uri(bucket)


def checkout_root() -> Path:
    """The checkout the running orchestrator comes from (training/ and pyproject.toml live there)."""
    import training

    return Path(training.__file__).resolve().parents[1]


def wheel_publisher(s3: Any, bucket: str, *, account: str | None = None, region: str = "",
                    repo: Path | None = None) -> Callable[[], str]:
    """A callable that builds and uploads the wheel on its first call and returns its URI (the
    same URI after that: one wheel per orchestrator process)."""
    uri: list[str] = []

    def publish() -> str:
        if not uri:
            uri.append(publish_trainer_wheel(s3, bucket, build_trainer_wheel(repo or checkout_root()),
                                             account=account, region=region))
        return uri[0]
    return publish
