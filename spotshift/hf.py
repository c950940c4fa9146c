"""Hugging Face model metadata from the Hub, a local directory or S3, without torch: the shape from
config.json (spotshift.sizing.architecture), the parameter count from the safetensors headers of the
weights (spotshift.sizing.safetensors; the Hub's safetensors metadata, ranged GETs on S3). Clients are
passed in; nothing is downloaded but config.json and safetensors headers. torch is never imported
here (a contract in pyproject.toml): the meta-device check is `spotshift estimate --meta-check`'s."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from spotshift.models import classify_model_ref
from spotshift.sizing.architecture import CONFIG_ALIASES, shape_of, size_from_config
from spotshift.sizing.model import ModelMetadataUnavailable, ModelSize
from spotshift.sizing.safetensors import (DTYPE_BYTES, INDEX_FILE, SINGLE_FILE, header_length, parse_header,
                                          params_by_dtype, shard_files, weight_bytes)

__all__ = ["CONFIG_ALIASES", "DTYPE_BYTES", "HubApi", "ModelMetadata", "ModelMetadataUnavailable", "metadata_from",
           "model_config", "model_metadata", "model_size", "safetensors_file_params", "size_from_config",
           "size_from_formula", "weight_params"]

size_from_formula = size_from_config  # the name earlier callers use: config arithmetic, no torch


class ModelMetadata(BaseModel):
    """What sizing needs to know about a model: its parameters, stored bytes and shape."""

    model_config = ConfigDict(frozen=True)

    ref: str
    source: str = Field(description="'hub', 'local' or 's3'")
    params: int = Field(ge=0, description="parameter count (every tensor in the safetensors files)")
    weight_bytes: int = Field(ge=0, description="bytes of the stored weights")
    dtype: str = Field(description="the dtype holding most parameters, e.g. 'F32', 'BF16'")
    model_type: str | None = None
    n_layers: int | None = None
    hidden: int | None = None
    n_heads: int | None = None
    vocab: int | None = None
    intermediate: int | None = None
    max_positions: int | None = None


# --- what the model is: config.json and the safetensors headers --------------------------------


class HubApi(Protocol):
    """The huggingface_hub.HfApi calls used here."""

    def model_info(self, repo_id: str, *, expand: list[str] | None = None, **kwargs) -> Any: ...
    def hf_hub_download(self, repo_id: str, filename: str, **kwargs) -> str: ...
    def get_safetensors_metadata(self, repo_id: str, **kwargs) -> Any: ...


def model_size(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
               hub_cache_dir: str | Path | None = None) -> ModelSize:
    """Parameters and shape of a Hub repo id, a local directory or an s3:// prefix: the shape and
    linear layers from config.json, the parameter count from the safetensors headers where weights
    exist (else config arithmetic). No weights are read and torch is not imported."""
    config = model_config(ref, hf_api=hf_api, s3_client=s3_client, hub_cache_dir=hub_cache_dir)
    size = size_from_config(config)
    counts = weight_params(ref, hf_api=hf_api, s3_client=s3_client)
    if not counts:
        return size
    return size.model_copy(update={"params": sum(counts.values()), "params_from": "safetensors"})


def model_config(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
                 hub_cache_dir: str | Path | None = None) -> dict[str, Any]:
    """The config.json of a Hub repo id, a local directory or an s3:// prefix."""
    kind = classify_model_ref(ref)
    if kind == "local":
        return _load_json(Path(ref).expanduser() / "config.json", ref)
    if kind == "s3":
        folder = _s3_folder(ref, s3_client)
        data = _s3_reader(s3_client, folder)("config.json")
        if data is None:
            raise ModelMetadataUnavailable(f"model {ref!r}: no config.json under the prefix ({folder}config.json)")
        return json.loads(data)
    extra = {"cache_dir": str(hub_cache_dir)} if hub_cache_dir is not None else {}
    return _load_json(Path(_hub(hf_api).hf_hub_download(ref, "config.json", **extra)), ref)


def weight_params(ref: str, *, hf_api: HubApi | None = None, s3_client=None) -> Counter | None:
    """Parameter count per stored dtype from the safetensors headers of a model's weights
    (model.safetensors, or the shards model.safetensors.index.json names); None where there are
    none (a config.json alone, .bin weights) or, for a Hub model, where the Hub is offline
    (HF_HUB_OFFLINE): config arithmetic sizes those."""
    kind = classify_model_ref(ref)
    if kind == "local":
        directory = Path(ref).expanduser()
        return _params_of_files(_local_reader(directory), str(directory) + "/")
    if kind == "s3":
        folder = _s3_folder(ref, s3_client)
        return _params_of_files(_s3_reader(s3_client, folder), folder)
    return _hub_params(ref, _hub(hf_api))


def safetensors_file_params(path: str | Path) -> Counter:
    """Parameter count per dtype of one local .safetensors file, from its header."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelMetadataUnavailable(f"{path}: no such safetensors file")
    return _params_of_file(_local_reader(path.parent), path.name, str(path.parent) + "/")


# A reader answers the bytes of one file of the model (all of it, or `length` bytes from `start`),
# None when the file is not there.
Reader = Callable[..., bytes | None]


def _params_of_files(read: Reader, where: str) -> Counter | None:
    index = read(INDEX_FILE)
    if index is None:
        return _params_of_file(read, SINGLE_FILE, where, optional=True)
    counts: Counter = Counter()
    for name in shard_files(json.loads(index), where + INDEX_FILE):
        counts += _params_of_file(read, name, where)
    return counts


def _params_of_file(read: Reader, name: str, where: str, optional: bool = False) -> Counter | None:
    first = read(name, 0, 8)
    if first is None:
        if optional:
            return None
        raise ModelMetadataUnavailable(f"{where}{name}: named by {INDEX_FILE} but not there")
    length = header_length(first, where + name)
    return params_by_dtype(parse_header(read(name, 8, length) or b"", where + name))


def _local_reader(directory: Path) -> Reader:
    def read(name: str, start: int | None = None, length: int | None = None) -> bytes | None:
        path = directory / name
        if not path.is_file():
            return None
        with path.open("rb") as f:
            if start is None:
                return f.read()
            f.seek(start)
            return f.read(length)

    return read


def _s3_reader(s3, folder: str) -> Reader:
    """Reads through spotshift.aws.job_inputs.read_input_object: typed errors naming the key, a 403
    told from a missing key, a refusal naming `spotshift aws setup --data`; a range is a ranged GET."""
    from spotshift.aws.job_inputs import read_input_object

    def read(name: str, start: int | None = None, length: int | None = None) -> bytes | None:
        byte_range = None if start is None else (start, start + (length or 1) - 1)
        return read_input_object(s3, folder + name, field="model", grant=folder, byte_range=byte_range)

    return read


def _s3_folder(ref: str, s3_client) -> str:
    if s3_client is None:
        raise ValueError(f"model {ref!r} is on S3: pass s3_client (e.g. AwsCredentials.get_s3_client())")
    return ref.rstrip("/") + "/"


def _hub(hf_api: HubApi | None) -> HubApi:
    if hf_api is not None:
        return hf_api
    from huggingface_hub import HfApi

    return HfApi()


def _hub_params(ref: str, hf_api: HubApi) -> Counter | None:
    from huggingface_hub import constants
    from huggingface_hub.errors import NotASafetensorsRepoError

    if constants.HF_HUB_OFFLINE:
        return None
    try:
        repo = hf_api.get_safetensors_metadata(ref)
    except NotASafetensorsRepoError:
        return None
    counts: Counter = Counter()
    for file in repo.files_metadata.values():
        counts += params_by_dtype({name: {"dtype": t.dtype, "shape": t.shape} for name, t in file.tensors.items()})
    return counts


def _load_json(path: Path, ref: str) -> dict[str, Any]:
    if not path.is_file():
        raise ModelMetadataUnavailable(f"model {ref!r}: no config.json at {path}")
    return json.loads(path.read_text())


# --- metadata with stored bytes and dtype ------------------------------------------------------


def model_metadata(ref: str, *, hf_api: HubApi | None = None, s3_client=None,
                   hub_cache_dir: str | Path | None = None) -> ModelMetadata:
    """Metadata of a Hub repo id, a local directory or an s3:// prefix (config.json + safetensors headers).

    From the Hub: the safetensors parameter counts of `model_info` and the repo's config.json
    (cached in `hub_cache_dir`, default the Hugging Face cache). From S3: ranged GETs of the headers.
    """
    kind = classify_model_ref(ref)
    if kind != "hub":
        config = model_config(ref, s3_client=s3_client)
        return metadata_from(ref, kind, config, weight_params(ref, s3_client=s3_client) or {})
    info = _hub(hf_api).model_info(ref, expand=["safetensors", "config"])
    if info.safetensors is None:
        raise ModelMetadataUnavailable(f"model {ref!r}: the Hub lists no safetensors weights for it")
    config = model_config(ref, hf_api=hf_api, hub_cache_dir=hub_cache_dir)
    return metadata_from(ref, "hub", config, dict(info.safetensors.parameters))


def metadata_from(ref: str, source: str, config: dict[str, Any], dtype_params: dict[str, int]) -> ModelMetadata:
    """Build ModelMetadata from a config dict and the parameter count per stored dtype."""
    if not dtype_params:
        raise ModelMetadataUnavailable(f"model {ref!r}: no safetensors weights found")
    return ModelMetadata(
        ref=ref, source=source, params=sum(dtype_params.values()), weight_bytes=weight_bytes(dtype_params),
        dtype=max(dtype_params, key=dtype_params.get), model_type=config.get("model_type"), **shape_of(config),
    )
