"""Where models and datasets come from: a local path, an s3:// prefix/object, or a Hub repo id."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from training.storage import S3Store, default_s3_client, read_uri_bytes


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
        return str(download_prefix(s3 or default_s3_client(), model, scratch / "model"))
    if os.path.isabs(model) or model.startswith("."):
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model directory {model} does not exist")
    return model  # a local directory or a Hugging Face Hub repo id


def read_dataset_bytes(dataset: str, s3=None) -> bytes:
    return read_uri_bytes(dataset, s3)
