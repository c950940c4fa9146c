"""The collaborators a flow run works with (stores, S3, market, compute, clock): blocks.runtime's
frozen Runtime, built there from settings (Runtime.from_settings) or handed in by a test or the
demo: flows never build clients themselves."""

from __future__ import annotations

from blocks.runtime import Runtime, no_fault

__all__ = ["TRAIN_JOB_DEPLOYMENT", "Runtime", "no_fault"]

TRAIN_JOB_DEPLOYMENT = "train-job/train-job"
