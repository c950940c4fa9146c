from datetime import UTC, datetime, timedelta

from spotshift.monitoring import RateMeter, Verdict, assess, permanent_failure, remaining_hours
from training.contract import Progress, TrainerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def beat(state="training", instance="i-1", step=5):
    return Progress(state=TrainerState(state), step=step, max_steps=10, instance_id=instance, updated_at=T0)


def test_only_this_instances_heartbeat_counts():
    # the previous instance's "checkpointed" on the same prefix is not this one's
    assert assess(beat("checkpointed", "i-old"), instance_id="i-new", now=T0, last_sign_of_life=T0,
                  stall_seconds=60) is Verdict.STARTING
    assert assess(beat("checkpointed"), instance_id="i-1", now=T0, last_sign_of_life=T0,
                  stall_seconds=60) is Verdict.CHECKPOINTED


def test_states_and_stall_detection_on_the_callers_clock():
    kw = dict(instance_id="i-1", last_sign_of_life=T0, stall_seconds=60)
    assert assess(beat("done"), now=T0, **kw) is Verdict.DONE
    assert assess(beat("failed"), now=T0, **kw) is Verdict.FAILED
    assert assess(beat(), now=T0 + timedelta(seconds=59), **kw) is Verdict.TRAINING
    assert assess(beat(), now=T0 + timedelta(seconds=61), **kw) is Verdict.STALLED
    assert assess(None, now=T0 + timedelta(seconds=61), **kw) is Verdict.STALLED


def test_rate_and_remaining_hours():
    m = RateMeter()
    assert m.steps_per_hour is None
    m.observe(10, T0)
    m.observe(70, T0 + timedelta(minutes=30))
    assert m.steps_per_hour == 120
    assert remaining_hours(70, 310, m.steps_per_hour, fallback=99) == 2
    assert remaining_hours(70, 310, None, fallback=99) == 99


def test_a_new_instance_gets_its_own_time_for_the_first_heartbeat():
    kw = dict(instance_id="i-1", last_sign_of_life=T0, stall_seconds=60, first_heartbeat_seconds=1800)
    assert assess(None, now=T0 + timedelta(seconds=600), **kw) is Verdict.STARTING  # booting, installing
    assert assess(None, now=T0 + timedelta(seconds=1801), **kw) is Verdict.STALLED
    assert assess(beat(), now=T0 + timedelta(seconds=61), **kw) is Verdict.STALLED  # once it beats, 60 s


REFUSAL = ("IncompatibleCheckpoint: checkpoint step-40 was written with transformers 5.25.0; this trainer has "
           "transformers 5.26.1: a resume across minor versions can change tokenization and optimizer state layout")


def test_a_permanent_failure_is_a_terminal_verdict_with_the_trainers_reason():
    kw = dict(instance_id="i-1", now=T0, last_sign_of_life=T0, stall_seconds=60)
    refused = beat("failed", step=0).model_copy(update={"permanent": True, "error": REFUSAL})
    assert assess(refused, **kw) is Verdict.FAILED_PERMANENTLY
    assert permanent_failure(refused) == REFUSAL
    assert permanent_failure(refused, instance_id="i-1") == REFUSAL
    # an ordinary failure may be fixed elsewhere: retried, not terminal
    ordinary = beat("failed").model_copy(update={"error": "RuntimeError: CUDA error"})
    assert assess(ordinary, **kw) is Verdict.FAILED
    assert permanent_failure(ordinary) is None


def test_a_permanent_failure_counts_only_for_the_instance_that_reported_it():
    refused = beat("failed", instance="i-old").model_copy(update={"permanent": True, "error": REFUSAL})
    assert permanent_failure(refused, instance_id="i-new") is None
    assert assess(refused, instance_id="i-new", now=T0, last_sign_of_life=T0, stall_seconds=60) is Verdict.STARTING
    assert permanent_failure(None) is None and permanent_failure(beat("training")) is None
