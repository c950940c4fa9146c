"""spotshift: train Hugging Face models on the cheapest AWS GPU capacity that meets the deadline.

The domain (models, market, policy, stores, AWS adapters), importable without Prefect. The Python
API that submits and steers jobs is `deployments.api`; the command line is `deployments.cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
