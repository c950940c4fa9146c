"""Entrypoint: `python -m training --spec <s3://…/spec.json | path>` (console script spotshift-train),
or one rank of `torchrun --standalone --nproc_per_node=<GPUs> -m training --spec ...`.
Exit codes: see training/exitcodes.py. torchrun turns any non-zero worker exit into 1, so rank 0 also
writes its code to $SPOTSHIFT_EXIT_CODE_FILE when set (the user-data reads it back).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from training.exitcodes import EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spotshift-train", description="Train one spotshift job on this machine.")
    parser.add_argument("--spec", required=True, help="s3://bucket/jobs/<id>/spec.json or a local path")
    parser.add_argument("--log-level", default=os.environ.get("SPOTSHIFT_TRAIN_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    from training.distributed import world_from_env

    world = world_from_env()
    rank = f" [rank {world.rank}/{world.size}]" if world.distributed else ""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s{rank}: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    from training.loop import TrainerIO, run_training
    from training.spec import TrainingSpec
    from training.stopping import StopFlag, install_sigterm
    from training.storage import default_s3_client, open_store, read_uri_bytes

    stop = StopFlag()
    install_sigterm(stop)  # before anything slow, so an early SIGTERM is not lost
    s3 = default_s3_client() if args.spec.startswith("s3://") else None
    try:
        spec = TrainingSpec.model_validate_json(read_uri_bytes(args.spec, s3))
    except (FileNotFoundError, ValidationError) as exc:
        logging.getLogger("training").error("cannot read the spec %s: %s", args.spec, exc)
        return EXIT_FAILED
    # one spec per job, many instances: each names itself in progress.json (set by the user-data
    # from IMDS on EC2, by the local backend otherwise)
    if spec.instance_id is None and os.environ.get("SPOTSHIFT_INSTANCE_ID"):
        spec = spec.model_copy(update={"instance_id": os.environ["SPOTSHIFT_INSTANCE_ID"]})
    if spec.output.startswith("s3://") or spec.model.startswith("s3://") or spec.dataset.startswith("s3://"):
        s3 = s3 or default_s3_client()
    io = TrainerIO(store=open_store(spec.output, s3), s3=s3)
    code = run_training(spec, io, stop, world).exit_code
    if world.rank == 0:
        report_exit_code(code)
    return code


def report_exit_code(code: int) -> None:
    """Write this process's exit code to $SPOTSHIFT_EXIT_CODE_FILE (the user-data sets it): torchrun
    exits 1 for any failed worker, so the user-data reads rank 0's own code from there."""
    path = os.environ.get("SPOTSHIFT_EXIT_CODE_FILE")
    if path:
        try:
            with open(path, "w") as out:
                out.write(str(code))
        except OSError as exc:
            logging.getLogger("training").warning("cannot write the exit code to %s: %s", path, exc)


if __name__ == "__main__":
    raise SystemExit(main())
