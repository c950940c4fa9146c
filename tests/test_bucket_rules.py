"""spotshift/aws/bucket_rules.py: spotshift's lifecycle rules merged by ID beside a bucket's own, the
stricter public access block, the owner's rules that work against spotshift's data, the creation tag."""

from __future__ import annotations

import pytest

from spotshift.aws.bucket_rules import (ABORT_MULTIPART_RULE, EXPIRE_CHECKPOINTS_RULE, PUBLIC_ACCESS_FLAGS,
                                        bucket_lifecycle, created_by_setup, legacy_prefix_rules, merge_lifecycle,
                                        stricter_public_access_block)

WANTED = bucket_lifecycle(30)["Rules"]
LOGS = {"ID": "expire-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 7}}
LEGACY = {"ID": "old-style", "Status": "Enabled", "Prefix": "tmp/", "Expiration": {"Days": 1}}


def texts(plan) -> list[str]:
    return [c.done() for c in plan.changes]


def test_a_new_bucket_gets_both_rules_added():
    plan = merge_lifecycle([], WANTED)
    assert plan.rules == WANTED and not plan.conflicts
    assert texts(plan) == [
        "added lifecycle rule spotshift-abort-multipart (abort uploads after 1 day on every object)",
        "added lifecycle rule spotshift-expire-finished-checkpoints (expire after 30 days on tag spotshift:expire=true)"]
    assert [c.planned() for c in plan.changes][0].startswith("would add lifecycle rule spotshift-abort-multipart")


def test_the_owners_rules_stay_in_their_order_and_spotshifts_come_after():
    plan = merge_lifecycle([LOGS, LEGACY], WANTED)
    assert plan.rules == [LOGS, LEGACY, *WANTED]
    assert [c.what.split(" (")[0] for c in plan.changes] == [f"lifecycle rule {ABORT_MULTIPART_RULE}",
                                                             f"lifecycle rule {EXPIRE_CHECKPOINTS_RULE}"]


def test_a_rule_of_spotshifts_id_is_replaced_in_place_and_the_change_says_from_what():
    old = {**WANTED[1], "Expiration": {"Days": 90}}
    plan = merge_lifecycle([old, LOGS, WANTED[0]], WANTED)
    assert plan.rules == [WANTED[1], LOGS, WANTED[0]]
    assert texts(plan) == ["replaced lifecycle rule spotshift-expire-finished-checkpoints (expire after 90 days on tag "
                           "spotshift:expire=true -> expire after 30 days on tag spotshift:expire=true)"]


@pytest.mark.parametrize("spelling", [{"Filter": {}}, {"Filter": {"Prefix": ""}}, {"Prefix": ""}, {}],
                         ids=["empty-filter", "empty-prefix", "legacy-prefix", "no-filter"])
def test_s3s_spellings_of_an_empty_filter_are_the_same_rule(spelling):
    abort = {k: v for k, v in WANTED[0].items() if k != "Filter"} | spelling
    plan = merge_lifecycle([abort, WANTED[1]], WANTED)
    assert plan.changes == ()


def test_an_owners_rule_that_expires_or_archives_spotshifts_data_is_kept_and_named():
    expire_all = {"ID": "expire-all", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": 7}}
    archive_jobs = {"ID": "archive", "Status": "Enabled", "Filter": {"Prefix": "jobs/old"},
                    "Transitions": [{"Days": 30, "StorageClass": "DEEP_ARCHIVE"}]}
    plan = merge_lifecycle([expire_all, archive_jobs, LOGS], WANTED)
    assert plan.rules[:3] == [expire_all, archive_jobs, LOGS]
    first, second = plan.conflicts
    assert first.startswith("the bucket's lifecycle rule 'expire-all' (expire after 7 days on every object) applies "
                            "to spotshift's jobs/ and artifacts/ and expires them")
    assert "left as it is" in first
    assert "'archive'" in second and "jobs/ and moves them to DEEP_ARCHIVE (unreadable for a resume" in second


@pytest.mark.parametrize("rule", [
    LOGS,  # another prefix
    {"ID": "tagged", "Status": "Enabled", "Filter": {"Tag": {"Key": "team", "Value": "x"}}, "Expiration": {"Days": 1}},
    {"ID": "off", "Status": "Disabled", "Filter": {}, "Expiration": {"Days": 1}},
    {"ID": "ia", "Status": "Enabled", "Filter": {}, "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}]},
    {"ID": "markers", "Status": "Enabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
], ids=["other-prefix", "other-tag", "disabled", "readable-class", "delete-markers-only"])
def test_rules_that_leave_spotshifts_data_alone_are_not_named(rule):
    assert merge_lifecycle([rule], WANTED).conflicts == ()


def test_legacy_prefix_rules_are_found_for_the_hint():
    assert legacy_prefix_rules([LOGS, LEGACY, *WANTED]) == ["old-style"]


def test_the_public_access_block_becomes_the_stricter_of_both():
    block, changes = stricter_public_access_block({"BlockPublicAcls": True, "IgnorePublicAcls": False})
    assert block == dict.fromkeys(PUBLIC_ACCESS_FLAGS, True)
    assert [c.planned() for c in changes] == ["would set IgnorePublicAcls=true", "would set BlockPublicPolicy=true",
                                              "would set RestrictPublicBuckets=true"]
    assert stricter_public_access_block(None)[1] == stricter_public_access_block({})[1]
    assert len(stricter_public_access_block(None)[1]) == 4
    assert stricter_public_access_block(dict.fromkeys(PUBLIC_ACCESS_FLAGS, True))[1] == ()


def test_only_the_setup_tag_marks_a_bucket_setup_created():
    assert created_by_setup([{"Key": "team", "Value": "ml"}, {"Key": "spotshift:created-by", "Value": "setup"}])
    assert not created_by_setup([{"Key": "spotshift:created-by", "Value": "someone"}])
    assert not created_by_setup([])
