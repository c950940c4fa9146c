"""spotshift: train Hugging Face models on the cheapest AWS GPU capacity that meets the deadline."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["submit", "status", "approve", "list_jobs", "get_job", "__version__"]


def __getattr__(name: str):
    # the API pulls in Prefect and the stores: load it on first use, keep `import spotshift` light
    if name in ("submit", "status", "approve", "list_jobs", "get_job"):
        from spotshift import api

        return getattr(api, name)
    raise AttributeError(f"module 'spotshift' has no attribute {name!r}")
