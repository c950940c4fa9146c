"""The registered migration policies: each decides Stay / Move / Stop from a JobState and a snapshot.

Every policy keeps the deadline with a Safety Net (except skypilot_eager_next_region, which, like
SkyPilot's managed jobs, never falls back to on-demand). Times are hours; `d` is the changeover.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from spotshift.catalog import region_of
from spotshift.cost_model import work_rate
from spotshift.models import Market, MarketSnapshot, MigrationReason, Offer
from spotshift.policy.egress import transfer_cost_usd
from spotshift.policy.state import Decision, JobState, Move, Stay, Stop
from spotshift.policy.view import (HOUR, View, changeover_left, expected_saving_usd, make_view, move_cost_usd,
                                   rate)

DEFAULT_POLICY = "spotshift"
MONTH_HOURS = 720.0
TIE_H = 1e-6  # slack this close to a threshold counts as on it: clock arithmetic must not tip a decision


def _below(slack: float, level: float) -> bool:
    """Whether `slack` hours is under `level`, beyond the noise of adding and subtracting times."""
    return slack < level - TIE_H


class Policy(Protocol):
    name: str

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision: ...


def _later(now: datetime, hours: float) -> datetime:
    return now + timedelta(hours=max(hours, 0.0))


def _fresh(state: JobState, until: datetime) -> datetime:
    """`until`, or earlier when the outlook the decision rests on changes before then."""
    refresh = state.outlook.refresh_at if state.outlook is not None else None
    return until if refresh is None else min(until, refresh)


def _launch_reason(state: JobState) -> MigrationReason:
    return MigrationReason.PREEMPTED if state.was_preempted else MigrationReason.CHEAPER


def _home(state: JobState, snapshot: MarketSnapshot) -> str | None:
    """The single-zone policies' zone: the job's home zone, else where it runs, else the cheapest."""
    if state.home_zone:
        return state.home_zone
    if state.current is not None:
        return state.current.zone
    spot = make_view(state, snapshot, snapshot.taken_at).spot
    return spot[0].zone if spot else None


def _move(state: JobState, view: View, target: Offer, reason: MigrationReason) -> Move:
    """A Move that states what it is expected to save (view.expected_saving_usd: against the current
    offer, or idle against the best on-demand one)."""
    return Move(target, reason, expected_saving_usd=expected_saving_usd(state, state.current or view.best_od, target))


def _spot_only(state: JobState, view: View, now: datetime, target: Offer | None = None) -> Decision:
    """A job with no on-demand offer to fall back on (markets=["spot"], or none priced): every
    Safety Net rule weighs slack kept for on-demand, which cannot exist here (its slack is -inf:
    the job would wait "until now" in a loop and never launch). Idle: launch on `target`, else the
    cheapest spot offer; no spot: wait for the next scout. On spot: stay. Without on-demand the
    deadline is not guaranteed."""
    if state.current is not None:
        until = state.ready_at if changeover_left(state, now) > 0 else _fresh(state, state.deadline)
        return Stay("spot only: no on-demand offer to fall back on", until=until)
    if not view.spot:
        return Stay("waiting for spot capacity: no on-demand offer to fall back on", until=_fresh(state, state.deadline))
    return _move(state, view, target or view.spot[0], _launch_reason(state))


def _on_od(state: JobState) -> bool:
    return state.current is not None and state.current.market is Market.ON_DEMAND


def _safety_net(state: JobState, view: View, margin: float) -> Decision | None:
    """Go (or stay) on on-demand when the slack to finish there falls below `margin`."""
    if view.best_od is None:
        return None
    if _on_od(state):
        return Stay("safety net: on-demand to the end", until=state.deadline) if _below(view.od_slack, margin) else None
    if _below(view.od_slack, margin):
        return _move(state, view, view.best_od, MigrationReason.DEADLINE)
    return None


def _spot_until(state: JobState, view: View, now: datetime, margin: float) -> datetime:
    """How long a Stay on spot holds: training on spot keeps the on-demand slack, but a changeover
    eats it, so during one the Safety Net may fire before it ends."""
    if state.ready_at is None or state.ready_at <= now or view.best_od is None:
        return state.ready_at or state.deadline
    return min(state.ready_at, _later(now, view.od_slack - margin))


def _zone_view(state: JobState, snapshot: MarketSnapshot, now: datetime, multi_zone: bool,
               safety_margin_d: float) -> tuple[View, float, float, Decision | None]:
    """The view of a single-zone (home zone) or multi-zone policy, the changeover d, the Safety Net
    margin and the Safety Net's decision (None = it has nothing to say)."""
    view = make_view(state, snapshot, now, None if multi_zone else _home(state, snapshot))
    d = state.changeover_hours
    margin = safety_margin_d * d
    return view, d, margin, _safety_net(state, view, margin)


@dataclass(frozen=True)
class OnDemand:
    """on_demand: start on the cheapest on-demand offer and stay there.
    `start -> od running -> ... -> done` (never preempted, never moves)."""

    name: str = "on_demand"

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        if state.remaining_work <= 0:
            return Stop("done")
        if state.current is not None:
            return Stay("on-demand until done", until=state.deadline)
        view = make_view(state, snapshot, now)
        if view.best_od is None:
            return Stay("no on-demand offer yet")
        return _move(state, view, view.best_od, MigrationReason.DEADLINE)


@dataclass(frozen=True)
class Greedy:
    """greedy (single zone) / greedy_multi (every zone): spot whenever available, idle otherwise,
    on-demand to the end once the slack only covers the changeover.
    `z1 spot -> z1 preempted -> idle ... -> z1 spot -> preempted -> slack <= 2d -> od to the end`;
    greedy_multi takes the cheapest available zone after a preemption instead of waiting for z1."""

    name: str = "greedy"
    multi_zone: bool = False
    safety_margin_d: float = 1.0

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        if state.remaining_work <= 0:
            return Stop("done")
        view, d, margin, net = _zone_view(state, snapshot, now, self.multi_zone, self.safety_margin_d)
        if view.best_od is None:
            return _spot_only(state, view, now)
        if net is not None or _on_od(state):
            return net or Stay("on-demand to the end", until=state.deadline)
        if state.current is not None:
            return Stay("spot while it lasts", until=_spot_until(state, view, now, margin))
        if view.spot and not _below(view.od_slack - d, margin):
            return _move(state, view, view.spot[0], _launch_reason(state))
        if view.best_od is not None and _below(view.od_slack - d, margin):
            return _move(state, view, view.best_od, MigrationReason.DEADLINE)
        return Stay("waiting for spot", until=_later(now, view.od_slack - d - margin))


@dataclass(frozen=True)
class UniformProgress:
    """uniform_progress ("Can't Be Late", single zone) / uniform_progress_multi (every zone): spot
    whenever available; on-demand while progress is behind the straight line t*C0/R0; back from
    on-demand to spot only when ahead of the line by `hysteresis_d` changeovers; Safety Net at 2d.
    `z1 spot -> preempted -> behind the line -> od -> ahead again, z1 back -> z1 spot -> ... -> done`."""

    name: str = "uniform_progress"
    multi_zone: bool = False
    safety_margin_d: float = 1.0
    hysteresis_d: float = 1.0

    def _ahead(self, state: JobState, now: datetime) -> float:
        """Hours of work done beyond the uniform-progress line (negative = behind)."""
        if state.total_work is None or state.started_at is None:
            return float("inf")
        span = (state.deadline - state.started_at) / HOUR
        elapsed = (now - state.started_at) / HOUR
        return (state.total_work - state.remaining_work) - state.total_work * elapsed / span

    def _ahead_at(self, state: JobState, now: datetime, level: float, on_od: bool) -> datetime | None:
        """When `ahead` reaches `level` while training on on-demand (rising) or idle (falling)."""
        if state.total_work is None or state.started_at is None:
            return None
        slope = state.total_work / ((state.deadline - state.started_at) / HOUR)
        speed = (1.0 - slope) if on_od else -slope
        gap = level - self._ahead(state, now)
        if speed == 0 or gap / speed < 0:
            return now
        return _later(now, gap / speed)

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        if state.remaining_work <= 0:
            return Stop("done")
        view, d, margin, net = _zone_view(state, snapshot, now, self.multi_zone, self.safety_margin_d)
        if view.best_od is None:
            return _spot_only(state, view, now)
        if net is not None:
            return net
        ahead = self._ahead(state, now)
        spot_ok = bool(view.spot) and not _below(view.od_slack - d, margin)
        if _on_od(state):
            if spot_ok and ahead >= self.hysteresis_d * d and changeover_left(state, now) == 0:
                return _move(state, view, view.spot[0], MigrationReason.CHEAPER)
            return Stay("on-demand while behind", until=self._ahead_at(state, now, self.hysteresis_d * d, on_od=True))
        if state.current is not None:
            return Stay("spot while it lasts", until=_spot_until(state, view, now, margin))
        if spot_ok:
            return _move(state, view, view.spot[0], _launch_reason(state))
        if view.best_od is not None and (ahead < 0 or _below(view.od_slack - d, margin)):
            return _move(state, view, view.best_od, MigrationReason.DEADLINE)
        until = min(self._ahead_at(state, now, 0.0, on_od=False), _later(now, view.od_slack - d - margin))
        return Stay("waiting for spot", until=until)


@dataclass(frozen=True)
class EagerNextRegion:
    """skypilot_eager_next_region: spot only, never on-demand. After a preemption relaunch in the
    cheapest available zone of another region (any region if none), else wait for capacity.
    `us-east-1a preempted -> us-west-2a running -> preempted -> no capacity anywhere -> wait -> ...`
    (it misses the deadline when capacity stays away)."""

    name: str = "skypilot_eager_next_region"

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        if state.remaining_work <= 0:
            return Stop("done")
        if state.current is not None:
            return Stay("spot while it lasts", until=state.ready_at or state.deadline)
        view = make_view(state, snapshot, now)
        spot = view.spot
        if not spot:
            return Stay("no spot capacity: waiting", until=state.deadline)
        elsewhere = [o for o in spot if o.region != state.checkpoint_region]
        target = elsewhere[0] if state.was_preempted and elsewhere else spot[0]
        return _move(state, view, target, _launch_reason(state))


@dataclass(frozen=True)
class SpotShift:
    """spotshift (default): spot where it pays, each changeover priced with the slack it eats;
    on-demand only while the slack is below a reserve for the spot downtime ahead; Safety Net when
    the slack left after the changeover to on-demand falls below `safety_margin_d` changeovers.
    `idle -> z1 (least $ per work hour, changeover and slack spread over its expected run) -> z2
    cheaper by more than the move -> z2 preempted -> no spot, slack below the reserve -> od -> z3
    up, its run expected to repay the changeovers there and back -> z3 spot -> ... -> slack <= d ->
    od, back to spot while the slack still pays one more changeover there and back -> od to the end`.
    A slack hour is worth nothing while the slack easily covers the changeovers the remaining work is
    expected to need, and up to the on-demand premium of a typical spot run per changeover when it
    does not: tight deadlines prefer long-lived zones. Slack well above the reserve buys patience: an
    idle loose job waits for a zone expected to stay up longer, and only such a job moves voluntarily;
    where spot was often down lately, a tight job goes on-demand through an outage instead of idling.
    Carrying the checkpoint to another region is priced into every launch there; an idle loose job
    whose checkpoint's region is expected back soon waits for it instead of paying the transfer.
    A job whose slack could pay the changeovers of riding the market's longest-lived zone but not of
    riding its typical one spends the slack no faster than its work (`_paced`): behind that pace it
    goes on-demand rather than idle and leaves on-demand only once back on it, so a flapping spell,
    whose runs fall far short of the outlook's averages, cannot use up the slack the long runs need
    later."""

    name: str = "spotshift"
    safety_margin_d: float = 0.1  # Safety Net: on-demand when the slack beyond its changeover falls to
    # this many d. The deadline only needs remaining work + d <= time left, so the margin is small; a
    # larger one (the paper's 2d in all) ends jobs on on-demand early at tight deadlines
    reserve_per_work: float = 0.4  # slack kept per work hour left, per unit of recent spot downtime
    outage_reserve: float = 0.12  # ... and at least this much where spot was down `outage_downtime` of
    # the recent past (less where it was down less): tight jobs in outage-prone markets do not idle
    # through outages they cannot afford, loose ones still do
    outage_downtime: float = 0.1
    move_margin_d: float = 3.0  # a voluntary move must save this many changeovers' worth beyond its cost
    move_spare_d: float = 25.0  # ... and is made only while the slack above the reserve exceeds this
    # many changeovers: a move's changeover eats slack, which tight jobs need for preemptions
    min_run_d: float = 1.0  # launch spot only where it is expected to stay up this many changeovers
    patience_d: float = 10.0  # ... and, when idle, this many more per hour of slack above the reserve
    # per work hour left: loose jobs wait for a long-lived zone instead of launching into flapping ones,
    # but never for a run longer than the changeover plus the job's whole work (a job of minutes with
    # hours of slack launches at once: any zone expected to outlast it will do; the bench's 48 h jobs
    # are never capped, where waiting near their end still buys longer runs)
    region_wait_share: float = 0.5  # idle, a job waits for spot capacity in its checkpoint's region
    # rather than carry the checkpoint elsewhere when a zone there is expected back within this share of
    # the slack above the reserve, times that slack per work hour left (loose jobs wait, tight ones move)
    region_wait_min_share: float = 0.05  # ... and only when the transfer costs at least this share of the
    # target's $/h for every hour waited (no idling to save cents)
    default_run_hours: float = 8.0  # a spot run's length when neither outlook nor risk says anything
    scan_step_h: float = 1 / 60  # a Stay on spot or on-demand looks this finely for the first instant
    scan_h: float = 0.25  # ... within this many hours (or until the outlook's refresh) a move would pay
    tightness_power: float = 4.0  # tightness = (slack needed / slack left) ** this, at most 1: near 0
    # until the slack is nearly used up, so loose jobs choose by price alone

    def _run_hours(self, state: JobState, offer: Offer) -> float:
        """Expected hours `offer`'s capacity stays up: the outlook's estimate, else its interruption
        risk read as a monthly rate, else `default_run_hours`."""
        if state.outlook is not None and offer.zone in state.outlook.run_hours:
            return state.outlook.run_hours[offer.zone]
        p = offer.interruption.probability
        if p is None:
            return self.default_run_hours
        return MONTH_HOURS / -math.log1p(-min(p, 0.999999)) if p > 0 else float("inf")

    def _slack_usd(self, state: JobState, view: View, free: float, work: float) -> float:
        """Dollars one hour of slack is worth now: the on-demand premium over a typical spot run per
        changeover (the spot work a changeover's slack buys before the Safety Net would end it on
        on-demand), times how tight the slack `free` is for the changeovers `work` hours need."""
        if view.best_od is None or not view.spot:
            return 0.0
        d = state.changeover_hours
        runs = sorted(self._run_hours(state, o) for o in view.spot)
        typical = runs[len(runs) // 2]
        need = work * d / max(typical, 1e-9)
        tight = 1.0 if free <= 0 else min(1.0, need / free) ** self.tightness_power
        premium = rate(view.best_od, state.work_rates) - min(rate(o, state.work_rates) for o in view.spot)
        return tight * max(premium, 0.0) * min(typical, work) / max(d, 1e-9)

    def _score(self, state: JobState, offer: Offer, run: float, slack_usd: float, transfer: bool = True) -> float:
        """Dollars per work hour on `offer`: its rate plus its relaunch changeover, the slack that
        changeover eats and (`transfer`) carrying the checkpoint to its region, spread over its
        expected run."""
        d = state.changeover_hours
        carry = transfer_cost_usd(state.checkpoint_region, offer.region, state.checkpoint_gb) if transfer else 0.0
        r = rate(offer, state.work_rates)
        return r + ((r + slack_usd) * d + carry) / max(run, 1e-9)

    def _best_spot(
        self, state: JobState, view: View, slack_usd: float, spare_per_work: float = 0.0, job: float = math.inf
    ) -> tuple[Offer, float, float] | None:
        """(offer, expected run hours, score) of the spot offer with the least score among those
        expected to outlast `min_run_d` changeovers, plus `patience_d` per hour of `spare_per_work`
        (at most the changeover plus `job` hours)."""
        d = state.changeover_hours
        floor = max(d * self.min_run_d, min(d * self.patience_d * spare_per_work, d + job))
        best = None
        for o in view.spot:
            run = self._run_hours(state, o)
            if run <= floor:
                continue
            cost = self._score(state, o, run, slack_usd)
            if best is None or cost < best[2]:
                best = (o, run, cost)
        return best

    def _checkpoint_region_back(
        self, state: JobState, target: Offer, slack_usd: float, spare: float, work: float
    ) -> float | None:
        """Hours to wait for spot capacity in the checkpoint's region instead of carrying the
        checkpoint to `target`'s: when a zone there is expected back within the slack above the
        reserve, and the slack that wait eats is worth less than the transfer. None: don't wait."""
        carry = transfer_cost_usd(state.checkpoint_region, target.region, state.checkpoint_gb)
        if carry <= 0 or state.outlook is None:
            return None
        back = min((h for z, h in state.outlook.gap_hours.items() if region_of(z) == state.checkpoint_region),
                   default=None)
        longest = self.region_wait_share * spare * min(1.0, spare / max(work, 1e-9))
        if back is None or back > longest or slack_usd * back >= carry:
            return None
        if carry < self.region_wait_min_share * back * target.usd_per_hour:
            return None  # a transfer this small is not worth idling for (a tiny checkpoint)
        return back

    def _reserve_rate(self, state: JobState) -> float:
        """Hours of slack kept per hour of work left: more where spot was often down lately."""
        downtime = 1.0 - state.outlook.uptime if state.outlook is not None else 1.0
        outage_prone = min(1.0, downtime / self.outage_downtime) if self.outage_downtime > 0 else 1.0
        return max(self.reserve_per_work * downtime, self.outage_reserve * outage_prone)

    def _return_saving(self, state: JobState, od: Offer, best: tuple[Offer, float, float], work: float) -> float:
        """Dollars leaving on-demand for `best` saves over its expected run, net of the changeover
        there and the one back to on-demand after its preemption (> 0: the return pays)."""
        offer, run, score = best
        return (rate(od, state.work_rates) - score) * min(work, run) - (offer.usd_per_hour + od.usd_per_hour) * state.changeover_hours

    def decide(self, state: JobState, snapshot: MarketSnapshot, now: datetime) -> Decision:
        if state.remaining_work <= 0:
            return Stop("done")
        view = make_view(state, snapshot, now)
        if view.best_od is None:
            return self._without_on_demand(state, view, now)
        d = state.changeover_hours
        margin = self.safety_margin_d * d
        net = _safety_net(state, view, margin)
        if net is not None:
            return net
        if state.current is not None and changeover_left(state, now) > 0:
            until = state.ready_at if _on_od(state) else _spot_until(state, view, now, margin)
            return Stay("changeover in progress", until=until)
        work = view.hours_left - view.od_slack - d  # hours to finish on the best on-demand offer
        free = view.od_slack - d - margin  # slack above the Safety Net after one more launch
        if _on_od(state):
            return self._from_on_demand(state, view, now, free, work)
        if state.current is not None:
            return self._from_spot(state, view, now, free, work)
        return self._from_idle(state, view, now, free, work)

    def _without_on_demand(self, state: JobState, view: View, now: datetime) -> Decision:
        """No on-demand offer: `_spot_only`, launching on the spot offer of least expected cost per
        work hour (`_score` with the slack worth nothing), else the cheapest."""
        best = self._best_spot(state, view, 0.0) if view.spot and state.current is None else None
        return _spot_only(state, view, now, best[0] if best is not None else None)

    def _return_target(self, state: JobState, view: View, free: float, work: float) -> Move | None:
        """The move from on-demand to spot, with `work` on-demand hours left: leaving needs slack for
        the changeover there and, after a preemption, the one back, and must repay both; the Move
        carries what it is expected to save net of both (what an approval policy weighs)."""
        if not view.spot or free < state.changeover_hours or free < self._paced_slack(state, view, work):
            return None
        best = self._best_spot(state, view, self._slack_usd(state, view, free, work))
        if best is None:
            return None
        saving = self._return_saving(state, view.best_od, best, work)
        return Move(best[0], MigrationReason.CHEAPER, expected_saving_usd=saving) if saving > 0 else None

    def _from_on_demand(self, state: JobState, view: View, now: datetime, free: float, work: float) -> Decision:
        move = self._return_target(state, view, free, work)
        if move is not None:
            return move
        if not view.spot:
            return Stay("on-demand until a spot run repays its changeovers", until=state.deadline)
        # training on on-demand leaves the slack as it is and shortens the work: the return may pay later
        until = self._first_at(state, now, work, 1.0, lambda w: self._return_target(state, view, free, w) is not None)
        return Stay("on-demand until a spot run repays its changeovers", until=until)

    def _move_target(self, state: JobState, view: View, free: float, work: float) -> Move | None:
        """A voluntary move from the spot offer the job trains on, with `work` on-demand hours left:
        only with `move_spare_d` changeovers of slack above the reserve, saving `move_margin_d` more."""
        d = state.changeover_hours
        spare = free - self._reserve_rate(state) * work
        if spare < self.move_spare_d * d:
            return None
        slack_usd = self._slack_usd(state, view, free, work)
        best = self._best_spot(state, view, slack_usd)
        if best is None or best[0].key == state.current.key:
            return None
        here = self._score(state, state.current, self._run_hours(state, state.current), slack_usd)
        target, run = best[0], best[1]
        there = self._score(state, target, run, slack_usd, transfer=False)  # move_cost_usd has it
        saving = (here - there) * min(work, run) - move_cost_usd(state, target) - slack_usd * d
        if saving > self.move_margin_d * d * target.usd_per_hour:
            return Move(target, MigrationReason.CHEAPER, expected_saving_usd=saving)
        return None

    def _from_spot(self, state: JobState, view: View, now: datetime, free: float, work: float) -> Decision:
        move = self._move_target(state, view, free, work)
        if move is not None:
            return move
        # training on spot leaves the slack as it is and shortens the work: a move may pay later
        speed = work_rate(state.current, state.work_rates) / work_rate(view.best_od, state.work_rates) \
            if view.best_od is not None else 1.0
        until = self._first_at(state, now, work, speed, lambda w: self._move_target(state, view, free, w) is not None)
        return Stay("no move pays back its changeover", until=until)

    def _from_idle(self, state: JobState, view: View, now: datetime, free: float, work: float) -> Decision:
        spare = free - self._reserve_rate(state) * work  # slack above the reserve (< 0: waiting would
        # likely end on on-demand)
        slack_usd = self._slack_usd(state, view, free, work)
        best = self._best_spot(state, view, slack_usd, max(spare, 0.0) / max(work, 1e-9), self._job_hours(state, work))
        if best is not None and free >= 0:
            back = self._checkpoint_region_back(state, best[0], slack_usd, spare, work)
            if back is not None:
                return Stay("waiting for capacity where the checkpoint is", until=_fresh(state, _later(now, back)))
            return _move(state, view, best[0], _launch_reason(state))
        paced = self._paced_slack(state, view, work)
        if view.best_od is not None and (spare < 0 or free < paced):
            return _move(state, view, view.best_od, MigrationReason.DEADLINE)
        wait = min(self._idle_wait(state, view, spare, work), free - paced + TIE_H)  # idling eats the slack
        return Stay("waiting for spot capacity", until=_fresh(state, _later(now, wait)))

    def _paced_slack(self, state: JobState, view: View, work: float) -> float:
        """The slack above the Safety Net after one more launch (`free`) that a paced job keeps with
        `work` on-demand hours left: its slack at the start per hour of its whole work, times `work`
        (0 when the job is not paced, see `_paced`)."""
        if view.best_od is None or state.total_work is None or state.started_at is None:
            return 0.0
        job = state.total_work / work_rate(view.best_od, state.work_rates)
        at_start = (state.deadline - state.started_at) / HOUR - job - (2 + self.safety_margin_d) * state.changeover_hours
        return at_start * work / job if self._paced(state, job, at_start) else 0.0

    @staticmethod
    def _paced(state: JobState, job: float, at_start: float) -> bool:
        """Whether a job of `job` on-demand hours with `at_start` hours of slack is paced: its slack
        pays the changeovers of the whole job if it rides the zone whose runs are the longest on
        average (one changeover per run) but not if it rides the typical zone (the median of those
        averages). Tighter, it cannot afford even the best zone: there is no later run to keep the
        slack for. Looser, it can afford the typical zone: no spell of short runs can use it up."""
        runs = sorted(state.outlook.fresh_run_hours.values()) if state.outlook is not None else []
        if not runs or job <= 0:
            return False
        per_run = job * state.changeover_hours
        return per_run / runs[-1] < at_start <= per_run / runs[len(runs) // 2]

    @staticmethod
    def _job_hours(state: JobState, work: float) -> float:
        """The job's whole work in hours of the best on-demand offer (`work`: the hours left there)."""
        if state.total_work is None or state.remaining_work <= 0:
            return work
        return work * state.total_work / state.remaining_work

    def _idle_wait(self, state: JobState, view: View, spare: float, work: float) -> float:
        """Hours an idle job that launched nothing now waits before its rules could decide otherwise
        with the same market and outlook: the spare above the reserve falls by one an hour, so the
        patience floor falls with it until the longest expected spot run clears it (launch), or the
        spare runs out (on-demand) first."""
        d = state.changeover_hours
        longest = max((self._run_hours(state, o) for o in view.spot), default=0.0)
        if longest > d * self.min_run_d and self.patience_d > 0 and d > 0:
            if longest > d + self._job_hours(state, work):
                return 0.0  # patience never asks for a run longer than the changeover and the whole job
            # launch once patience_d * d * (spare - t) / work < longest (TIE_H past the instant of equality)
            return min(spare, max(0.0, spare - longest * work / (self.patience_d * d) + TIE_H))
        return spare

    def _first_at(self, state: JobState, now: datetime, work: float, speed: float,
                  pays: Callable[[float], bool]) -> datetime:
        """The first instant before the outlook's refresh (or `scan_h` from now) at which `pays(w)`
        holds, `w` being the on-demand hours of work left while the job trains where it is at `speed`
        on-demand hours per hour (a scan by `scan_step_h`, then bisection); that refresh if never."""
        horizon = self.scan_h if state.outlook is None or state.outlook.refresh_at is None else \
            (state.outlook.refresh_at - now) / HOUR
        horizon = min(horizon, work / max(speed, 1e-9))
        lo, t = 0.0, 0.0
        while t < horizon:
            t = min(t + self.scan_step_h, horizon)
            if pays(work - speed * t):
                hi = t
                for _ in range(12):
                    mid = (lo + hi) / 2
                    lo, hi = (lo, mid) if pays(work - speed * mid) else (mid, hi)
                return _later(now, hi)
            lo = t
        return _fresh(state, _later(now, horizon)) if state.outlook is not None else _later(now, horizon)


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        SpotShift(),
        OnDemand(),
        Greedy(),
        Greedy(name="greedy_multi", multi_zone=True),
        UniformProgress(),
        UniformProgress(name="uniform_progress_multi", multi_zone=True),
        EagerNextRegion(),
    )
}


def get_policy(name: str) -> Policy:
    """The registered policy called `name`; an unknown name lists the valid ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}. Choose between {', '.join(POLICIES)}") from None


def decide(state: JobState, snapshot: MarketSnapshot, now: datetime, policy: str = DEFAULT_POLICY) -> Decision:
    """Stay, Move or Stop for a running (or waiting) job, by the named policy."""
    return get_policy(policy).decide(state, snapshot, now)
