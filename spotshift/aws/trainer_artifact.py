"""The trainer wheel: `training/` of this checkout packed as its own small wheel (its runtime
dependencies only; torch comes from the image), uploaded under artifacts/<sha256>/ beside the
requirements the instance installs it with: the trainer's share of the lock (requirements/trainer.txt,
every package pinned and hash-checked) and the wheel itself, by its hash. The folder is the sha256 of
that requirements file, so it names the wheel and every pin at once."""

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
from training.bootstrap import REQUIREMENTS_NAME  # where the user-data reads it

DIST_NAME = "spotshift_trainer"
VERSION = "0.1.0"
WHEEL_NAME = f"{DIST_NAME}-{VERSION}-py3-none-any.whl"
ARTIFACTS_PREFIX = "artifacts/"
FROM_MAIN_DEPENDENCIES = ("boto3", "pydantic", "huggingface_hub")  # the trainer imports these besides the train extra
TRAINER_LOCK = Path("requirements") / "trainer.txt"  # written by `make lock` from requirements/lock.txt
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # same bytes for the same sources: the key is their hash


@dataclass(frozen=True)
class TrainerWheel:
    """A built wheel and the requirements that install it: their bytes, and the sha256 of the
    requirements (the artifacts folder, which so names both)."""

    data: bytes
    sha256: str
    requirements: bytes = b""

    @property
    def key(self) -> str:
        return f"{ARTIFACTS_PREFIX}{self.sha256}/{WHEEL_NAME}"

    @property
    def requirements_key(self) -> str:
        return f"{ARTIFACTS_PREFIX}{self.sha256}/{REQUIREMENTS_NAME}"

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


def trainer_requirements_in(pyproject: Path) -> str:
    """The input of `make lock`'s trainer resolution: one requirement a line."""
    return "".join(f"{r}\n" for r in trainer_requirements(pyproject))


def install_requirements(trainer_lock: str, wheel_sha256: str) -> str:
    """What the instance runs `pip install --no-deps --require-hashes -r` on: the trainer's share of the
    lock, then the wheel itself (a path relative to the folder it is downloaded to) by its hash."""
    return (trainer_lock.rstrip("\n") + "\n# the trainer itself (spotshift.aws.trainer_artifact)\n"
            f"./{WHEEL_NAME} --hash=sha256:{wheel_sha256}\n")


def _metadata(requirements: list[str], requires_python: str) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {DIST_NAME}", f"Version: {VERSION}",
             "Summary: the spotshift trainer (runs on the training instance)", f"Requires-Python: {requires_python}"]
    return "\n".join(lines + [f"Requires-Dist: {r}" for r in requirements]) + "\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_trainer_wheel(repo: Path) -> TrainerWheel:
    """The wheel of `repo/training` (every .py, .sh and .tmpl file) and its install requirements
    (from `repo/requirements/trainer.txt`), deterministic. FileNotFoundError without that file."""
    lock_path = repo / TRAINER_LOCK
    if not lock_path.is_file():
        raise FileNotFoundError(f"{lock_path} is missing: `make lock` writes it from requirements/lock.txt")
    source = repo / "training"
    files = {f"training/{p.relative_to(source).as_posix()}": p.read_bytes()
             for p in sorted(source.rglob("*")) if p.is_file() and p.suffix in (".py", ".sh", ".tmpl")
             and "__pycache__" not in p.parts}
    info = f"{DIST_NAME}-{VERSION}.dist-info"
    pyproject = repo / "pyproject.toml"
    requires_python = tomllib.loads(pyproject.read_text())["project"]["requires-python"]
    files[f"{info}/METADATA"] = _metadata(trainer_requirements(pyproject), requires_python).encode()
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
    requirements = install_requirements(lock_path.read_text(), hashlib.sha256(data).hexdigest()).encode()
    return TrainerWheel(data=data, sha256=hashlib.sha256(requirements).hexdigest(), requirements=requirements)


def publish_trainer_wheel(s3: Any, bucket: str, wheel: TrainerWheel, *, account: str | None = None,
                          region: str = "") -> str:
    """Upload the wheel, then its requirements, each unless its key is already there; the wheel's
    s3:// URI (the requirements lie beside it)."""
    owner = {"ExpectedBucketOwner": account} if account else {}
    for key, body in ((wheel.key, wheel.data), (wheel.requirements_key, wheel.requirements)):
        try:
            call_aws(s3.head_object, region=region, Bucket=bucket, Key=key, **owner)
        except NotFound:
            call_aws(s3.put_object, region=region, Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="SHA256",
                     **owner)
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


if __name__ == "__main__":  # `make lock`: python -m spotshift.aws.trainer_artifact requirements
    import sys

    if sys.argv[1:] != ["requirements"]:
        sys.exit("usage: python -m spotshift.aws.trainer_artifact requirements")
    sys.stdout.write(trainer_requirements_in(checkout_root() / "pyproject.toml"))
