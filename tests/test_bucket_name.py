"""The one bucket rule (spotshift.settings.bucket_name): SPOTSHIFT_BUCKET when set; on the ec2 backend
otherwise spotshift-<account>-<region>, what `spotshift aws setup` creates; offline `spotshift-jobs`."""

from __future__ import annotations

from spotshift.settings import Settings, bucket_name


def no_sts() -> str:
    raise AssertionError("the account is asked for only when the name depends on it")


def test_a_named_bucket_wins_everywhere():
    assert bucket_name(Settings(bucket="mine", compute_backend="ec2"), no_sts) == "mine"
    assert bucket_name(Settings(bucket="mine"), no_sts) == "mine"


def test_on_aws_an_unnamed_bucket_is_the_accounts_own_in_the_bucket_region():
    settings = Settings(compute_backend="ec2", aws_region="eu-west-1")
    assert bucket_name(settings, lambda: "123456789012") == "spotshift-123456789012-eu-west-1"


def test_offline_an_unnamed_bucket_is_the_default():
    assert bucket_name(Settings(compute_backend="local"), no_sts) == "spotshift-jobs"
