"""Process exit codes of the trainer: the orchestrator reads them to tell done, stopped and failed apart.

EXIT_DONE          0   max_steps reached; final/ written; progress state "done".
EXIT_FAILED        1   an error; progress state "failed" (best effort); the last complete checkpoint stays.
EXIT_CHECKPOINTED 75   stopped on request (SIGTERM, EC2 spot instance-action notice, or control.json):
                       a checkpoint of the last finished step is durable in S3 and progress state is
                       "checkpointed"; start the same spec again (anywhere) to resume. 75 is EX_TEMPFAIL.
"""

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_CHECKPOINTED = 75
