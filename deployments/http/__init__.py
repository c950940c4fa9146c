"""The jobs HTTP API (FastAPI): submit, list, read, approve, reject, cancel, metrics and a job page."""
