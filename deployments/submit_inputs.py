"""Submit's judgement of an EC2 job's inputs, before anything is stored: every S3 input must lie
where the trainer and the orchestrator may read (spotshift.job_inputs), and a local model or
dataset is uploaded under the job's own prefix (spotshift.aws.job_inputs) and the request rewritten
to point there. A local-backend job is stored as submitted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from spotshift.aws.job_inputs import InputUpload, LocalInput, delete_keys, scan_local_input, upload_local_input
from spotshift.job_inputs import (InputsRefused, granted_prefixes, local_inputs, s3_refusals, upload_key_prefix,
                                  uploaded_uri, with_inputs)
from spotshift.models import JobCreate, JobEvent, new_id
from spotshift.settings import Settings
from training.contract import JobPaths

log = logging.getLogger("spotshift.submit")
UPLOAD_EVENT = "input-uploaded"


@dataclass
class AdmittedJob:
    """The request to store (local inputs replaced by their S3 URIs), the id it must be stored
    under (its uploads live under that id's prefix) and what was uploaded."""

    request: JobCreate
    job_id: str | None = None
    uploads: list[InputUpload] = field(default_factory=list)
    uploaded_keys: list[str] = field(default_factory=list)
    bucket: str = ""
    s3: Any = None

    def events(self, now) -> list[JobEvent]:
        """One stored event per upload (GET /jobs/{id} and the POST answer show them)."""
        return [JobEvent(at=now, kind=UPLOAD_EVENT, message=u.describe(),
                         data={"field": u.field, "source": u.source, "uri": u.uri, "bytes": u.bytes,
                               "files": u.files, "seconds": round(u.seconds, 3)}) for u in self.uploads]

    def abandon(self) -> None:
        """The job was not stored under `job_id` (the same idempotency key won a race): remove the uploads."""
        if self.uploaded_keys:
            delete_keys(self.s3, self.bucket, self.uploaded_keys)


class ProjectBucket:
    """The project bucket's name and an S3 client for it, each resolved on first use: a runtime's own
    (a flow's or the API's: bucket already resolved, client at hand), else from its settings as a
    flow run would (the account's default bucket unless SPOTSHIFT_BUCKET is set; ExpectedBucketOwner
    on every call: spotshift.settings.bucket_name). A submit that uploads nothing and names its
    bucket makes no AWS call."""

    def __init__(self, runtime: Any):
        self._settings = runtime.settings
        self._client = runtime.s3
        self._name = self._settings.bucket if runtime.s3 is not None else None  # a runtime's is resolved
        self._account: str | None = None

    @property
    def name(self) -> str:
        if self._name is None:
            from spotshift.settings import bucket_name

            self._name = bucket_name(self._settings, self._identity)
        return self._name

    @property
    def client(self) -> Any:
        if self._client is None:
            from spotshift.aws.bucket_owner import expect_bucket_owner

            self._client = expect_bucket_owner(self._credentials().get_s3_client(), self._identity())
        return self._client

    def _credentials(self) -> Any:
        from blocks.aws import load_aws_credentials

        return load_aws_credentials(self._settings)

    def _identity(self) -> str:
        if self._account is None:
            sts = self._credentials().model_copy(update={"region_name": self._settings.aws_region}).get_client("sts")
            self._account = sts.get_caller_identity()["Account"]
        return self._account


def admit(request: JobCreate, settings: Settings, project: ProjectBucket, *,
          on_upload: Callable[[InputUpload], None] | None = None) -> AdmittedJob:
    """The job as it may be stored. EC2: InputsRefused (naming each field, the granted prefixes and
    the `spotshift aws setup --data` command) when an S3 input lies outside every readable prefix or a
    local input cannot be uploaded (missing, unreadable, over SPOTSHIFT_MAX_INPUT_UPLOAD_BYTES);
    else the local inputs are uploaded to the `project` bucket."""
    if settings.compute_backend != "ec2":
        return AdmittedJob(request)
    granted_prefixes(settings.data_prefixes)  # a bad setting is named before any AWS call
    bucket = project.name
    refusals = s3_refusals(request, bucket=bucket, data_prefixes=settings.data_prefixes)
    scanned: list[LocalInput] = []
    for item in local_inputs(request):
        try:
            scanned.append(scan_local_input(item, limit_bytes=settings.max_input_upload_bytes))
        except InputsRefused as exc:
            refusals += exc.refusals
    if refusals:
        raise InputsRefused(refusals)
    admitted = AdmittedJob(request, job_id=new_id("job"), bucket=bucket)
    if not scanned:
        return admitted
    admitted.s3 = s3 = project.client
    paths = JobPaths(bucket=bucket, job_id=admitted.job_id)
    values: dict[str, str] = {}
    try:
        for local in scanned:
            prefix = upload_key_prefix(paths, local.field)
            uri = uploaded_uri(paths, local.field, None if local.field == "model" else local.files[0][1])
            admitted.uploaded_keys += [prefix + rel for _, rel in local.files]
            upload = upload_local_input(s3, local, bucket, prefix, uri)
            log.info("Job %s: %s", admitted.job_id, upload.describe())
            admitted.uploads.append(upload)
            values[local.field] = uri
            if on_upload is not None:
                on_upload(upload)
    except Exception:
        admitted.abandon()
        raise
    admitted.request = with_inputs(request, values)
    return admitted
