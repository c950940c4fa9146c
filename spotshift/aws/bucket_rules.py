"""What `spotshift aws setup` wants on its bucket and how that merges with a bucket's own settings:
spotshift's lifecycle rules added or replaced by their IDs beside the owner's, the stricter public
access block, the tag that says setup created the bucket. Pure: the caller reads and writes S3."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spotshift.aws.iam import ARTIFACTS_PREFIX, JOBS_PREFIX

ABORT_MULTIPART_RULE = "spotshift-abort-multipart"
EXPIRE_CHECKPOINTS_RULE = "spotshift-expire-finished-checkpoints"
EXPIRE_TAG = {"Key": "spotshift:expire", "Value": "true"}
CREATED_BY_TAG = {"Key": "spotshift:created-by", "Value": "setup"}  # set on a bucket setup created, nowhere else
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
SPOTSHIFT_PREFIXES = (JOBS_PREFIX, ARTIFACTS_PREFIX)
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})  # a read needs a restore first
_PAST = {"create": "created", "add": "added", "replace": "replaced", "set": "set", "tag": "tagged", "put": "put"}


@dataclass(frozen=True)
class Change:
    """One change a setup step makes (or, in a dry run, would make): `verb` one of create, add,
    replace, set, tag, put; `what` its object ("lifecycle rule spotshift-abort-multipart")."""

    verb: str
    what: str

    def planned(self) -> str:
        return f"would {self.verb} {self.what}"

    def done(self) -> str:
        return f"{_PAST.get(self.verb, self.verb)} {self.what}"


@dataclass(frozen=True)
class LifecyclePlan:
    """The lifecycle rules to write (the owner's, in their order, then spotshift's new ones), what
    changes, and the owner's rules that work against spotshift's data (kept as they are)."""

    rules: list[dict[str, Any]]
    changes: tuple[Change, ...]
    conflicts: tuple[str, ...]


def bucket_lifecycle(expire_days: int) -> dict[str, Any]:
    """Abort incomplete multipart uploads after a day; expire objects the orchestrator marked
    finished (tag spotshift:expire=true, set on a closed job's checkpoints) after `expire_days`.
    The abort rule filters on an empty prefix: S3 refuses AbortIncompleteMultipartUpload in a rule
    that filters on tags."""
    return {"Rules": [
        {"ID": ABORT_MULTIPART_RULE, "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": EXPIRE_CHECKPOINTS_RULE, "Status": "Enabled", "Filter": {"Tag": dict(EXPIRE_TAG)},
         "Expiration": {"Days": expire_days}},
    ]}


def merge_lifecycle(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> LifecyclePlan:
    """The owner's rules stay as they are, in their order; a rule of `wanted` replaces the rule of
    the same ID (in place) or is added at the end. Rules equal up to S3's spelling of an empty
    filter (no Filter, Filter {}, Filter {"Prefix": ""}, the legacy top-level Prefix) are unchanged."""
    by_id = {r["ID"]: r for r in wanted}
    rules, changes = [], []
    for rule in current:
        new = by_id.pop(rule.get("ID", ""), None)
        if new is None:
            rules.append(rule)
            continue
        rules.append(new)
        if _canonical(rule) != _canonical(new):
            changes.append(Change("replace", f"lifecycle rule {new['ID']} ({_summary(rule)} -> {_summary(new)})"))
    for new in by_id.values():
        rules.append(new)
        changes.append(Change("add", f"lifecycle rule {new['ID']} ({_summary(new)})"))
    owners = [r for r in current if r.get("ID") not in {w["ID"] for w in wanted}]
    return LifecyclePlan(rules, tuple(changes), tuple(c for r in owners for c in _conflicts(r)))


def legacy_prefix_rules(rules: list[dict[str, Any]]) -> list[str]:
    """IDs of the rules that use the deprecated top-level Prefix instead of a Filter (S3 may refuse
    them beside rules with a Filter, as spotshift's are)."""
    return [r.get("ID", "?") for r in rules if "Prefix" in r and "Filter" not in r]


def stricter_public_access_block(current: dict[str, Any] | None) -> tuple[dict[str, bool], tuple[Change, ...]]:
    """The stricter of the bucket's block (None: it has none) and spotshift's (all four on): a True
    stays True, so every flag ends on; the changes name each flag that was off or missing."""
    current = current or {}
    return ({flag: True for flag in PUBLIC_ACCESS_FLAGS},
            tuple(Change("set", f"{flag}=true") for flag in PUBLIC_ACCESS_FLAGS if current.get(flag) is not True))


def created_by_setup(tags: list[dict[str, str]]) -> bool:
    """True when the bucket's tag set carries the tag setup puts on a bucket it created."""
    return any(t.get("Key") == CREATED_BY_TAG["Key"] and t.get("Value") == CREATED_BY_TAG["Value"] for t in tags)


def _canonical(rule: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in rule.items() if v is not None and k != "Prefix"}
    filt = rule.get("Filter")
    if "Prefix" in rule and filt is None:
        filt = {"Prefix": rule["Prefix"] or ""}
    out["Filter"] = filt if filt else {"Prefix": ""}
    return out


def _filter_parts(rule: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(prefix, tags) a rule selects objects by (legacy top-level Prefix, Filter or Filter.And)."""
    if "Prefix" in rule and not rule.get("Filter"):
        return rule["Prefix"] or "", []
    filt = rule.get("Filter") or {}
    inner = filt.get("And", filt)
    tags = inner.get("Tags", []) if "And" in filt else ([filt["Tag"]] if "Tag" in filt else [])
    return inner.get("Prefix", "") or "", tags


def _summary(rule: dict[str, Any]) -> str:
    prefix, tags = _filter_parts(rule)
    where = " and ".join([f"prefix {prefix!r}"] * bool(prefix) + [f"tag {t['Key']}={t['Value']}" for t in tags])
    actions = []
    if "Expiration" in rule:
        exp = rule["Expiration"]
        actions.append(f"expire after {_days(exp['Days'])}" if "Days" in exp else
                       f"expire on {exp['Date']}" if "Date" in exp else "remove expired delete markers")
    if "AbortIncompleteMultipartUpload" in rule:
        actions.append(f"abort uploads after {_days(rule['AbortIncompleteMultipartUpload']['DaysAfterInitiation'])}")
    for t in rule.get("Transitions", []):
        actions.append(f"move to {t.get('StorageClass')}")
    state = "" if rule.get("Status") == "Enabled" else f", {rule.get('Status', 'no status')}"
    return f"{', '.join(actions) or 'no action'} on {where or 'every object'}{state}"


def _days(n: int) -> str:
    return f"{n} day{'' if n == 1 else 's'}"


def _conflicts(rule: dict[str, Any]) -> list[str]:
    """What an owner's enabled rule does to spotshift's data under jobs/ or artifacts/: current
    objects expired (a running job's checkpoints or its final model deleted) or moved to an archive
    class (unreadable until restored). A rule whose tag filter spotshift's objects never carry
    touches none of them."""
    if rule.get("Status") != "Enabled":
        return []
    prefix, tags = _filter_parts(rule)
    if any(t != EXPIRE_TAG for t in tags):
        return []
    hit = [p for p in SPOTSHIFT_PREFIXES if p.startswith(prefix) or prefix.startswith(p)]
    if not hit:
        return []
    exp = rule.get("Expiration") or {}
    archive = sorted({t.get("StorageClass") for t in rule.get("Transitions", [])} & ARCHIVE_CLASSES)
    what = []
    if "Days" in exp or "Date" in exp:
        what.append("expires them (a job's checkpoints and final model deleted; S3 applies the earliest of "
                    "overlapping expirations)")
    if archive:
        what.append(f"moves them to {'/'.join(archive)} (unreadable for a resume until restored)")
    return [f"the bucket's lifecycle rule {rule.get('ID', '?')!r} ({_summary(rule)}) applies to spotshift's "
            f"{' and '.join(hit)} and {' and '.join(what)}: left as it is; narrow its filter if jobs should keep "
            "their data"] if what else []
