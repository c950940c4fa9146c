"""Trace-driven simulator of the registered policies and the offline optimum they are judged by."""

from spotshift.sim.grid import TickJob
from spotshift.sim.market import TraceMarket
from spotshift.sim.optimum import optimal_costs
from spotshift.sim.simulator import RunResult, simulate

__all__ = ["RunResult", "TickJob", "TraceMarket", "optimal_costs", "simulate"]
