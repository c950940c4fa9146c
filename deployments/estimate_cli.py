"""`spotshift estimate --file job.json [--json] [--meta-check]`: what a job needs and where it could
run, at what cost, without starting anything (the embedded on-demand market; measured rates where
recorded). The model is sized without torch; --meta-check builds it on the meta device as well."""

from __future__ import annotations

import argparse
import functools
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from spotshift.sizing.architecture import model_size_of
from spotshift.sizing.model import LinearGroup, ModelSize


def add_estimate_parser(sub) -> None:
    e = sub.add_parser("estimate", help="a job's GPU and host memory and its feasible placements, cheapest first")
    e.add_argument("--file", required=True, help="a JSON JobCreate, as for submit")
    e.add_argument("--json", action="store_true", help="print the estimate as JSON")
    e.add_argument("--top", type=int, default=10, help="placements to print (text output)")
    e.add_argument("--meta-check", action="store_true",
                   help="also build the model on the meta device (needs torch and transformers, the train extra) "
                        "and check the parameter count of config.json and the safetensors headers against it")


def run_estimate(args: argparse.Namespace, now: datetime | None = None) -> int:
    from blocks.stores import open_throughput_store
    from spotshift.estimate import estimate_offline, render
    from spotshift.models import JobCreate

    with open(args.file) as f:
        job = JobCreate.model_validate(json.load(f))
    measured = open_throughput_store().for_model(job.model, job.method.value)
    est = estimate_offline(job, now or datetime.now(UTC), measurements=measured,
                           meta_size_of=size_on_meta_device if getattr(args, "meta_check", False) else None)
    print(json.dumps(est.to_json(), indent=2) if args.json else render(est, top=args.top))
    return 0 if est.offers else 1


def size_on_meta_device(config: dict[str, Any]) -> ModelSize:
    """ModelSize of the model transformers builds from `config` on the meta device (no memory): any
    architecture transformers knows. Imports torch and transformers (the train extra): only
    `spotshift estimate --meta-check` and the tests call it, never the orchestrator."""
    try:
        return _size_on_meta_device(json.dumps(config, sort_keys=True))
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"--meta-check needs torch and transformers, the train extra "
                                  f"(pip install 'spotshift[train]'): {exc}", name=exc.name) from exc


@functools.lru_cache(maxsize=64)
def _size_on_meta_device(config_json: str) -> ModelSize:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = json.loads(config_json)
    fields = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(config["model_type"], **fields))
    linears: Counter = Counter()
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear):
            shape = (module.in_features, module.out_features)
        elif type(module).__name__ == "Conv1D" and weight is not None and weight.dim() == 2:
            shape = tuple(weight.shape)  # transformers' Conv1D stores (in, out)
        else:
            continue
        linears[(name.rsplit(".", 1)[-1], *shape)] += 1
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    untied = head is not None and head.weight is not embed
    size = model_size_of(config, sum(p.numel() for p in model.parameters()),
                         embed.numel() + (head.weight.numel() if untied else 0),
                         tuple(LinearGroup(name=n, in_features=i, out_features=o, count=c)
                               for (n, i, o), c in linears.items()))
    return size.model_copy(update={"params_from": "meta-device"})
