"""`spotshift estimate --file job.json [--json] [--meta-check]`: what a job needs and where it could
run, at what cost, without starting anything (the embedded on-demand market; measured rates where
recorded). The model is sized without torch; --meta-check builds it on the meta device as well."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime


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
                           meta_check=getattr(args, "meta_check", False))
    print(json.dumps(est.to_json(), indent=2) if args.json else render(est, top=args.top))
    return 0 if est.offers else 1
