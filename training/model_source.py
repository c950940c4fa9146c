"""Where models and datasets come from: a local path, an s3:// prefix/object, or a Hub repo id."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from training.exitcodes import PermanentFailure
from training.missing_keys import DENIED_CODES, error_code
from training.storage import S3Store, default_s3_client, read_uri_bytes

# S3 answers that no restart can change: the input is refused, or its bucket is gone or closed
UNREADABLE_CODES = DENIED_CODES | {"NoSuchBucket", "AllAccessDisabled", "AccountProblem", "InvalidObjectState"}


class InputUnreadable(PermanentFailure):
    """The job's model or dataset in S3 is absent or refused to the instance's role. A relaunch
    reads the same input with the same role: the trainer exits 78 and the job ends FAILED naming it,
    instead of relaunching a few times to fail the same way."""

    def __init__(self, field: str, uri: str, reason: str):
        self.field, self.uri = field, uri
        super().__init__(
            f"the job's {field} {uri} cannot be read: {reason}. If it exists, grant the instance role read on "
            f"its prefix (spotshift aws setup --data s3://<bucket>/<prefix>/) and submit again; otherwise "
            f"submit with a {field} that exists")


@contextmanager
def reading_s3_input(field: str, uri: str) -> Iterator[None]:
    """Turn an absent or refused S3 input into InputUnreadable; anything else (throttling, a 5xx,
    the network) propagates as it is, and a relaunch may succeed."""
    from botocore.exceptions import ClientError

    try:
        yield
    except (FileNotFoundError, PermissionError) as exc:  # PermissionDenied is a PermissionError
        raise InputUnreadable(field, uri, str(exc)) from exc
    except ClientError as exc:
        code = error_code(exc)
        if code not in UNREADABLE_CODES:
            raise
        message = exc.response.get("Error", {}).get("Message", "")
        raise InputUnreadable(field, uri, f"S3 answered {code} to {exc.operation_name}"
                                          + (f" ({message})" if message else "")) from exc


def download_prefix(s3, uri: str, target: Path, workers: int = 8) -> Path:
    """Copy every object under an s3:// prefix into `target` (parallel); returns target."""
    store = S3Store.from_uri(s3, uri)
    keys = [k for k in store.list_keys("") if not k.endswith("/")]
    if not keys:
        raise FileNotFoundError(f"no objects under {uri}")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda k: store.download_file(k, target / k), keys))
    return target


def resolve_model_dir(model: str, scratch: Path, s3=None) -> str:
    """A path or Hub id that from_pretrained accepts: s3:// prefixes are downloaded into scratch."""
    if model.startswith("s3://"):
        with reading_s3_input("model", model):
            return str(download_prefix(s3 or default_s3_client(), model, scratch / "model"))
    if os.path.isabs(model) or model.startswith("."):
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory {model} does not exist")
    return model  # a local directory or a Hugging Face Hub repo id


def read_dataset_bytes(dataset: str, s3=None) -> bytes:
    if dataset.startswith("s3://"):
        with reading_s3_input("dataset", dataset):
            return read_uri_bytes(dataset, s3)
    return read_uri_bytes(dataset, s3)


def _load_split(dataset: str, split: str):
    """One split through the `datasets` library: a Hub dataset (hf://datasets/<owner>/<name>), a
    directory in a Hub dataset repo's layout (data files), or a save_to_disk directory."""
    import datasets

    from training.spec import HF_DATASET_PREFIX

    if dataset.startswith(HF_DATASET_PREFIX):
        return datasets.load_dataset(dataset[len(HF_DATASET_PREFIX):], split=split)
    path = Path(dataset)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset directory {dataset} does not exist")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"dataset {dataset} has no split {split!r}. Choose between {', '.join(loaded)}")
            return loaded[split]
        return loaded
    return datasets.load_dataset(str(path), split=split)


def load_records(dataset: str, split: str, text_column: str, s3=None) -> list:
    """The records (texts, or prompt/completion pairs) of a .txt/.jsonl corpus (local or s3://) or
    of one split of a `datasets` dataset."""
    from training.data import parse_records, records_from_columns
    from training.spec import dataset_kind

    if dataset_kind(dataset) == "corpus":
        return parse_records(read_dataset_bytes(dataset, s3), dataset)
    table = _load_split(dataset, split)
    return records_from_columns({name: table[name] for name in table.column_names}, text_column,
                                f"dataset {dataset} split {split!r}")
