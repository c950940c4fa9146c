"""Where an EC2 job's inputs may come from: the trainer and the orchestrator read only the project
bucket's jobs/ and the data prefixes granted with `spotshift aws setup --data`; a local model or
dataset is uploaded under the job's prefix at submit. Pure: decisions over the request and names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from spotshift.data_prefixes import DataPrefix, parse_data_prefixes
from spotshift.models import HF_DATASET_PREFIX, JobCreate, classify_model_ref
from training.contract import JOBS_PREFIX, JobPaths

InputKind = Literal["s3", "local", "hub"]
INPUT_FIELDS = ("model", "dataset")
SETUP_DATA = "spotshift aws setup --data"
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class JobInput:
    """One input of a job: its field (model or dataset), the value submitted and where it lives."""

    field: str
    value: str
    kind: InputKind

    @property
    def location(self) -> str:
        """What the trainer reads: a model's s3:// prefix as a folder (it lists `<prefix>/`), a
        dataset's object as it is."""
        return self.value.rstrip("/") + "/" if self.field == "model" else self.value

    @property
    def grant(self) -> str:
        """The data prefix whose grant covers this S3 input: the model's folder, the dataset's parent."""
        if self.field == "model":
            return self.location
        return self.value.rsplit("/", 1)[0] + "/"


def job_inputs(request: JobCreate) -> list[JobInput]:
    """The job's inputs (model, dataset) and where each lives."""
    dataset = request.dataset
    dataset_kind: InputKind = ("hub" if dataset.startswith(HF_DATASET_PREFIX)
                               else "s3" if dataset.startswith("s3://") else "local")
    return [JobInput("model", request.model, classify_model_ref(request.model)),  # type: ignore[arg-type]
            JobInput("dataset", dataset, dataset_kind)]


@dataclass(frozen=True)
class InputRefusal:
    """Why one field of a job cannot be used as submitted (the value and the way out in `reason`)."""

    field: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field} {self.value!r}: {self.reason}"


class InputsRefused(ValueError):
    """A job refused at submit because of its inputs: nothing was stored, uploaded or launched.
    `refusals` names each field (the HTTP API answers 422 with one entry per field)."""

    def __init__(self, refusals: list[InputRefusal]):
        self.refusals = refusals
        super().__init__("; ".join(str(r) for r in refusals))


def granted_prefixes(data_prefixes: list[str] | tuple[str, ...]) -> tuple[DataPrefix, ...]:
    """SPOTSHIFT_DATA_PREFIXES parsed; a bad entry is a ValueError naming the setting and the value."""
    try:
        return parse_data_prefixes(list(data_prefixes))
    except ValueError as exc:
        raise ValueError(f"SPOTSHIFT_DATA_PREFIXES: {exc}") from None


def readable_prefixes(bucket: str, data_prefixes: list[str] | tuple[str, ...]) -> tuple[DataPrefix, ...]:
    """Everything both roles may read: the project bucket's jobs/ (every job's, e.g. an earlier
    job's final/ model) and the granted data prefixes."""
    return (DataPrefix(bucket, JOBS_PREFIX), *granted_prefixes(data_prefixes))


def s3_refusals(request: JobCreate, *, bucket: str, data_prefixes: list[str] | tuple[str, ...]) -> list[InputRefusal]:
    """The S3 inputs of an EC2 job that neither role may read, each with the `setup --data` command
    that would grant it; and an output_bucket other than the project bucket (the roles write only
    there). Hub ids and local paths are not judged here."""
    readable = readable_prefixes(bucket, data_prefixes)
    allowed = ", ".join(p.uri for p in readable)
    refusals = [
        InputRefusal(i.field, i.value,
                     f"outside every S3 prefix the trainer and the orchestrator may read ({allowed}); grant it "
                     f"with `{SETUP_DATA} {i.grant}`, attach the runtime policy it prints, and export the "
                     "SPOTSHIFT_DATA_PREFIXES line it prints")
        for i in job_inputs(request) if i.kind == "s3" and not any(p.covers(i.location) for p in readable)]
    if request.output_bucket is not None and request.output_bucket != bucket:
        refusals.append(InputRefusal("output_bucket", request.output_bucket,
                                     f"the trainer role writes only to the project bucket {bucket!r}; leave "
                                     "output_bucket unset (or set SPOTSHIFT_BUCKET and run `spotshift aws setup`)"))
    return refusals


def local_inputs(request: JobCreate) -> list[JobInput]:
    """The inputs an EC2 instance cannot read where they are: local paths, uploaded at submit."""
    return [i for i in job_inputs(request) if i.kind == "local"]


def upload_key_prefix(paths: JobPaths, field: str) -> str:
    """Where a local input of the job goes: jobs/<job_id>/inputs/<field>/."""
    return paths.input_prefix(field)


def upload_name(file_name: str) -> str:
    """The object name a local dataset file is uploaded under: its own when that is a plain file name
    (letters, digits, . _ -), else dataset<suffix>, so that the job's URI passes validation."""
    if _SAFE_FILE_NAME.fullmatch(file_name) and ".." not in file_name:
        return file_name
    suffix = file_name.rsplit(".", 1)[1] if "." in file_name else ""
    return "dataset" + (f".{suffix}" if re.fullmatch(r"[A-Za-z0-9]{1,16}", suffix) else "")


def uploaded_uri(paths: JobPaths, field: str, file_name: str | None = None) -> str:
    """The value the job's spec gets for an uploaded input: the model's folder, or the dataset's
    object (`file_name` as upload_name gives it)."""
    return f"s3://{paths.bucket}/{upload_key_prefix(paths, field)}{upload_name(file_name) if file_name else ''}"


def size_refusal(field: str, value: str, total_bytes: int, limit_bytes: int) -> InputRefusal | None:
    """A local input larger than SPOTSHIFT_MAX_INPUT_UPLOAD_BYTES is not uploaded through submit."""
    if total_bytes <= limit_bytes:
        return None
    return InputRefusal(field, value, f"{human_bytes(total_bytes)} is more than submit uploads "
                        f"(SPOTSHIFT_MAX_INPUT_UPLOAD_BYTES = {human_bytes(limit_bytes)}): copy it to S3 yourself "
                        f"(aws s3 sync), under a prefix granted with `{SETUP_DATA}`, and submit its s3:// URI")


def with_inputs(request: JobCreate, values: dict[str, str]) -> JobCreate:
    """The request with uploaded inputs' S3 URIs in place of their local paths."""
    unknown = set(values) - set(INPUT_FIELDS)
    if unknown:
        raise ValueError(f"not an input field: {sorted(unknown)[0]!r}. Choose between {', '.join(INPUT_FIELDS)}")
    return request.model_copy(update=values)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
