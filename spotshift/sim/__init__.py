"""Trace-driven simulator of the registered policies and the offline optimum they are judged by."""

from spotshift.sim.grid import TickJob
from spotshift.sim.market import TraceMarket
from spotshift.sim.optimum import OptimalSchedule, optimal_costs, optimal_schedule
from spotshift.sim.simulator import RunResult, simulate

__all__ = ["OptimalSchedule", "RunResult", "TickJob", "TraceMarket", "optimal_costs", "optimal_schedule", "simulate"]
