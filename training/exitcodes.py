"""Process exit codes of the trainer: the orchestrator reads them to tell done, stopped and failed apart.

EXIT_DONE          0   max_steps reached; final/ written; progress state "done".
EXIT_FAILED        1   an error; progress state "failed" (best effort); the last complete checkpoint stays.
                       Another attempt may succeed: the orchestrator resumes the job elsewhere (a few times).
EXIT_CHECKPOINTED 75   stopped on request (SIGTERM, EC2 spot instance-action notice, or control.json):
                       a checkpoint of the last finished step is durable in S3 and progress state is
                       "checkpointed"; start the same spec again (anywhere) to resume. 75 is EX_TEMPFAIL.
EXIT_PERMANENT    78   a failure no restart, here or elsewhere, can fix (a PermanentFailure, e.g. the
                       checkpoint was written by another transformers or peft minor version): progress
                       state "failed" with `permanent: true` and the reason in `error`; the orchestrator
                       ends the job FAILED with that reason and launches nothing more. 78 is EX_CONFIG.
"""

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_CHECKPOINTED = 75
EXIT_PERMANENT = 78


class PermanentFailure(Exception):
    """A failure that no restart of the same spec can fix: the trainer exits EXIT_PERMANENT."""
