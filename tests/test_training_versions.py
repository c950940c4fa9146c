"""training.versions: what a checkpoint records of its libraries, and which differences refuse a
resume (another transformers or peft MAJOR.MINOR) or only warn (a patch, torch, datasets, the trainer)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib.metadata import version

import pytest

from training.contract import CheckpointManifest, LibraryVersions
from training.exitcodes import PermanentFailure
from training.versions import (
    IncompatibleCheckpoint, check_resume, installed_version, minor_release, running_versions, version_differences,
)

RUNNING = LibraryVersions(torch="2.13.0+cpu", transformers="5.26.1", peft="0.21.2", datasets="5.2.0", trainer="0.1.0")


def manifest(versions: LibraryVersions | None, step: int = 40) -> CheckpointManifest:
    return CheckpointManifest(step=step, files=[], created_at=datetime(2026, 1, 1, tzinfo=UTC), versions=versions)


def test_the_running_versions_are_the_installed_distributions():
    running = running_versions()
    assert running.torch == version("torch") and running.transformers == version("transformers")
    assert running.datasets == version("datasets")
    assert running.trainer == version("spotshift")  # the dev venv: no spotshift_trainer wheel installed


def test_a_library_that_is_not_installed_is_none_and_the_first_installed_distribution_wins():
    assert installed_version("no-such-distribution-spotshift") is None
    assert installed_version("no-such-distribution-spotshift", "spotshift") == version("spotshift")


@pytest.mark.parametrize("text, release", [
    ("5.26.1", (5, 26)), ("2.5.1+cu124", (2, 5)), ("5.26.0.dev0", (5, 26)), ("garbled", None), (None, None),
])
def test_minor_release(text, release):
    assert minor_release(text) == release


def test_another_transformers_minor_version_is_refused_naming_both_versions():
    written = RUNNING.model_copy(update={"transformers": "5.25.0"})
    with pytest.raises(IncompatibleCheckpoint) as refused:
        check_resume(manifest(written), RUNNING)
    message = str(refused.value)
    assert "checkpoint step-40 was written with transformers 5.25.0" in message
    assert "this trainer has transformers 5.26.1" in message and "minor versions" in message
    assert isinstance(refused.value, PermanentFailure)  # the trainer exits EXIT_PERMANENT on it
    assert len(f"IncompatibleCheckpoint: {message}") < 500  # the heartbeat's error keeps it whole


def test_another_peft_major_version_is_refused_and_both_libraries_are_named():
    written = RUNNING.model_copy(update={"transformers": "4.57.0", "peft": "1.0.0"})
    with pytest.raises(IncompatibleCheckpoint, match="transformers 4.57.0 and peft 1.0.0; this trainer has "
                                                     "transformers 5.26.1 and peft 0.21.2"):
        check_resume(manifest(written), RUNNING)


def test_a_patch_level_or_other_library_difference_only_warns(caplog):
    written = RUNNING.model_copy(update={"transformers": "5.26.0", "torch": "2.12.0+cu124", "trainer": "0.0.9"})
    with caplog.at_level(logging.WARNING, logger="training.versions"):
        check_resume(manifest(written), RUNNING)  # no exception: the resume goes on
    warned = [r.getMessage() for r in caplog.records]
    assert any("transformers 5.26.0" in m and "transformers 5.26.1" in m for m in warned)
    assert any("torch 2.12.0+cu124" in m and "torch 2.13.0+cpu" in m for m in warned)
    assert any("trainer 0.0.9" in m for m in warned)


def test_peft_on_one_side_only_warns_rather_than_refuses():
    """A full fine-tune's environment may lack peft: absent is recorded as None, not a crash."""
    differences = version_differences(RUNNING.model_copy(update={"peft": None}), RUNNING)
    assert [(d.library, d.written, d.running, d.refused) for d in differences] == [("peft", None, "0.21.2", False)]


def test_same_versions_resume_silently(caplog):
    with caplog.at_level(logging.WARNING, logger="training.versions"):
        check_resume(manifest(RUNNING), RUNNING)
    assert caplog.records == []


def test_a_manifest_written_before_versions_were_recorded_loads_and_resumes_with_a_note(caplog):
    old = manifest(None).model_dump(mode="json")
    del old["versions"]
    loaded = CheckpointManifest.model_validate(old)
    assert loaded.versions is None
    with caplog.at_level(logging.WARNING, logger="training.versions"):
        check_resume(loaded, RUNNING)
    assert any("step-40 records no library versions" in r.getMessage() for r in caplog.records)
