"""Moved to spotshift.cost_model (#21); this name remains only for spotshift.estimate's import."""

from spotshift.cost_model import rank_offers

__all__ = ["rank_offers"]
