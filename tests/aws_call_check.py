"""The call -> IAM action check: every AWS call the tests recorded (tests/aws_call_recorder.py) is
mapped to the actions AWS authorizes it under (tests/aws_call_actions.py) and the ARN each touches,
and the printed policy of its principal (spotshift.aws.iam: setup_policy, runtime_policy,
trainer_policy) must allow each action on that ARN. A call the table lacks fails too.

The policy is printed with the names the call itself touched (its bucket, role, instance profile,
secret) in moto's account, and with the data prefixes the test's Settings granted: tests pick
fresh names per test, so what is checked is the action, the kind of resource (a bucket vs its
objects, the prefix under it, a role vs a profile vs the spot service-linked role) and the ARN's
layout -- not that a test used the deployment's own bucket (tests/test_aws_iam.py holds the names
on the policy documents).

Matching is parliament's (is_glob_match for actions, case-insensitive; is_arn_match for ARNs,
segment by segment; a "?" in a policy's ARN is read as "*", a little wider). Not evaluated:
Conditions (an Allow counts whatever its Condition; a Deny with a Condition is not applied, one
without is), permission boundaries, SCPs and resource policies.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import warnings
from collections import Counter, defaultdict
from typing import Any, NamedTuple

with warnings.catch_warnings():  # parliament imports pkg_resources
    warnings.simplefilter("ignore")
    from parliament import is_arn_match, is_glob_match

from tests.aws_call_actions import CALL_ACTIONS, SOURCES, Need

ACCOUNT = "123456789012"  # moto's account: every ARN built here and every policy printed here name it
PARTITION = "aws"
TABLE = "tests/aws_call_actions.py (CALL_ACTIONS)"
SERVICE_LINKED_ROLES = {"spot.amazonaws.com": "AWSServiceRoleForEC2Spot"}
POLICY_FUNCTIONS = {"setup": "setup_policy", "runtime": "runtime_policy", "trainer": "trainer_policy"}


class Names(NamedTuple):
    """What a policy is printed with (see the module docstring)."""
    bucket: str
    trainer_role: str
    instance_profile: str
    secret_arn: str | None
    data_prefixes: tuple[str, ...]


class Failure(NamedTuple):
    record: dict[str, Any]
    need: Need | None  # None: the call is not in the table
    arn: str
    policy: str

    def line(self) -> str:
        r = self.record
        call = f"{r['principal']} {r['service']}.{r['operation']} ({r.get('region') or 'global'})"
        where = f"\n      at {' <- '.join(r.get('where', [])[:3])}\n      in {r.get('test', '?')}"
        if r["principal"] == "recorder-error":
            return f"the recorder failed on a call: {r.get('where')} in {r.get('test', '?')}"
        if self.need is None:
            return (f"{call}: not in the table: add '{r['service']}.{r['operation']}' to {TABLE} with the IAM "
                    f"actions AWS checks for it and its source{where}")
        return f"{call} needs {self.need.action} on {self.arn}: not allowed by {self.policy}{where}"


# ---- names and ARNs ----

def _name_from_arn(value: str) -> str:
    return value.rsplit("/", 1)[-1] if value.startswith("arn:") else value


def names_of(record: dict[str, Any], data_prefixes: tuple[str, ...] = ()) -> Names:
    p = record["params"]
    profile_param = p.get("IamInstanceProfile") or {}
    profile = (p.get("InstanceProfileName")
               or _name_from_arn(profile_param.get("Name") or profile_param.get("Arn") or ""))
    role = p.get("RoleName") if p.get("RoleName") not in SERVICE_LINKED_ROLES.values() else None
    role = role or profile or "spotshift-trainer"
    secret = secret_arn(p["SecretId"], record["region"]) if p.get("SecretId") else None
    return Names(p.get("Bucket") or "spotshift-bucket-the-call-names-none", role, profile or role, secret,
                 tuple(sorted(data_prefixes)))


def secret_arn(secret_id: str, region: str) -> str:
    """A secret's ARN (Secrets Manager appends six random characters to the name)."""
    if secret_id.startswith("arn:"):
        return secret_id
    return f"arn:{PARTITION}:secretsmanager:{region or 'us-east-1'}:{ACCOUNT}:secret:{secret_id}-AbCdEf"


def role_arn(name: str) -> str:
    slr = {v: k for k, v in SERVICE_LINKED_ROLES.items()}
    path = f"aws-service-role/{slr[name]}/" if name in slr else ""
    return f"arn:{PARTITION}:iam::{ACCOUNT}:role/{path}{name}"


def resource_arns(kind: str, record: dict[str, Any], names: Names) -> list[str]:
    """The ARNs a Need of `kind` is checked on (a resource a call creates ends in /*, as AWS
    authorizes it before it has an id)."""
    p, region = record["params"], record.get("region") or "us-east-1"
    ec2 = f"arn:{PARTITION}:ec2:{region}:{ACCOUNT}"
    s3 = f"arn:{PARTITION}:s3:::"
    nics = p.get("NetworkInterfaces") or [{}]
    builders = {
        "*": lambda: ["*"],
        "bucket": lambda: [f"{s3}{p['Bucket']}"],
        "object": lambda: [f"{s3}{p['Bucket']}/{p['Key']}"],
        "each-deleted-object": lambda: [f"{s3}{p['Bucket']}/{k}" for k in p.get("DeleteKeys", [])],
        "copy-source": lambda: [f"{s3}{p['CopySource'].lstrip('/').split('?versionId=')[0]}"],
        "role": lambda: [role_arn(p.get("RoleName") or names.trainer_role)],
        "instance-profile": lambda: [f"arn:{PARTITION}:iam::{ACCOUNT}:instance-profile/{names.instance_profile}"],
        "service-linked-role": lambda: [role_arn(SERVICE_LINKED_ROLES.get(p.get("AWSServiceName", ""),
                                                                          "AWSServiceRoleFor-unknown-service"))],
        "launch-profile-role": lambda: [role_arn(names.trainer_role)],
        "secret": lambda: [names.secret_arn],
        "parameter": lambda: [f"arn:{PARTITION}:ssm:{region}:{'' if p['Name'].startswith('/aws/') else ACCOUNT}"
                              f":parameter/{p['Name'].lstrip('/')}"],
        "quota": lambda: [f"arn:{PARTITION}:servicequotas:{region}:{ACCOUNT}:"
                          f"{p.get('ServiceCode')}/{p.get('QuotaCode')}"],
        "new-instance": lambda: [f"{ec2}:instance/*"],
        "new-volume": lambda: [f"{ec2}:volume/*"],
        "new-network-interface": lambda: [f"{ec2}:network-interface/*"],
        "new-spot-request": lambda: [f"{ec2}:spot-instances-request/*"],
        "launch-subnet": lambda: [f"{ec2}:subnet/{p.get('SubnetId') or nics[0].get('SubnetId') or '*'}"],
        "launch-security-groups": lambda: [f"{ec2}:security-group/{g}" for g in
                                           (p.get("SecurityGroupIds") or nics[0].get("Groups") or ["*"])],
        "launch-image": lambda: [f"arn:{PARTITION}:ec2:{region}::image/{p.get('ImageId', '*')}"],
        "tagged-at-creation": lambda: [f"{ec2}:{t}/*" for t in p.get("TagSpecifications", [])],
        "instances": lambda: [f"{ec2}:instance/{i}" for i in p.get("InstanceIds", [])],
        "new-security-group": lambda: [f"{ec2}:security-group/*"],
        "vpc": lambda: [f"{ec2}:vpc/{p.get('VpcId') or '*'}"],
        "security-group": lambda: [f"{ec2}:security-group/{p.get('GroupId') or '*'}"],
    }
    return builders[kind]()


def needed(need: Need, params: dict[str, Any]) -> bool:
    if need.when is None:
        return True
    key, _, value = need.when.partition("=")
    return bool(params.get(key)) and (not value or params.get(key) == value)


# ---- policies and evaluation ----

@functools.lru_cache(maxsize=4096)
def policy_for(principal: str, names: Names) -> tuple[str, dict[str, Any]]:
    """(its name, the printed policy) of `principal` with `names`."""
    iam = importlib.import_module("spotshift.aws.iam")
    name = POLICY_FUNCTIONS[principal]
    fn = getattr(iam, name, None) or iam.orchestrator_policy  # before the setup/runtime split
    accepts = _parameters(iam, fn, principal)
    values = {"bucket": names.bucket, "trainer_role": names.trainer_role, "instance_profile": names.instance_profile,
              "account": ACCOUNT, "partition": PARTITION, "secret_arn": names.secret_arn,
              "data_prefixes": list(names.data_prefixes)}
    return f"spotshift.aws.iam.{fn.__name__}", fn(**{k: v for k, v in values.items() if k in accepts})


def _parameters(iam: Any, fn: Any, principal: str) -> set[str]:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # setup_policy(**kw) -> setup_statements(...)
        inner = getattr(iam, f"{principal}_statements", None) or getattr(iam, "orchestrator_statements", None)
        if inner is not None:
            return set(inspect.signature(inner).parameters)
    return set(params)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _action_matches(statement: dict[str, Any], action: str) -> bool:
    if "Action" in statement:
        return any(is_glob_match(a.lower(), action.lower()) for a in _listed(statement["Action"]))
    return not any(is_glob_match(a.lower(), action.lower()) for a in _listed(statement["NotAction"]))


def _resource_matches(statement: dict[str, Any], arn: str) -> bool:
    def match(pattern: str) -> bool:
        if pattern == "*":
            return True
        if arn == "*":  # an action that takes no resource type is granted only by Resource "*"
            return False
        return is_arn_match("", arn, pattern.replace("?", "*"))  # parliament knows no "?": read as "*"
    if "Resource" in statement:
        return any(match(r) for r in _listed(statement["Resource"]))
    return not any(match(r) for r in _listed(statement["NotResource"]))


def is_allowed(policy: dict[str, Any], action: str, arn: str) -> bool:
    """An Allow statement matches the action and the ARN, and no unconditional Deny does
    (Conditions are not evaluated: see the module docstring)."""
    statements = _listed(policy["Statement"]) if not isinstance(policy["Statement"], dict) else [policy["Statement"]]
    hits = [s for s in statements if _action_matches(s, action) and _resource_matches(s, arn)]
    if any(s["Effect"] == "Deny" and "Condition" not in s for s in hits):
        return False
    return any(s["Effect"] == "Allow" for s in hits)


def data_prefixes_by_test(records: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """test -> the data prefixes its Settings granted (found beside its orchestrator's calls)."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in records:
        out[r.get("test", "")].update(r.get("data_prefixes") or ())
    return {t: tuple(sorted(p)) for t, p in out.items()}


def check_records(records: list[dict[str, Any]], policies: Any = None) -> list[Failure]:
    """Every recorded call's needs that its principal's printed policy does not allow, and every
    call the table lacks. `policies(principal, names) -> (name, policy)` replaces the printed ones
    (a test's mutated policy)."""
    return _check(records, policies or policy_for, data_prefixes_by_test(records))


def _check(records: list[dict[str, Any]], policies: Any, prefixes: dict[str, tuple[str, ...]]) -> list[Failure]:
    failures = []
    for r in records:
        if r["principal"] == "grant":  # not a call (aws_call_recorder's aws_data_grant)
            continue
        entry = CALL_ACTIONS.get(f"{r['service']}.{r['operation']}")
        if entry is None:
            failures.append(Failure(r, None, "", ""))
            continue
        names = names_of(r, prefixes.get(r.get("test", ""), ()))
        name, policy = policies(r["principal"], names)
        for need in entry[0]:
            if needed(need, r["params"]):
                failures += [Failure(r, need, arn, name) for arn in resource_arns(need.resource, r, names)
                             if not is_allowed(policy, need.action, arn)]
    return failures


def without_action(policy: dict[str, Any], action: str) -> dict[str, Any]:
    """`policy` with `action` removed from every statement (a statement left with none dropped)."""
    statements = []
    for s in _listed(policy["Statement"]):
        actions = [a for a in _listed(s.get("Action", [])) if a != action]
        if actions or "NotAction" in s:
            statements.append({**s, "Action": actions} if "Action" in s else s)
    return {**policy, "Statement": statements}


def dropping(principal: str, action: str):
    """The printed policies, with `action` removed from `principal`'s (check_records' `policies`)."""
    def policies(p: str, names: Names) -> tuple[str, dict[str, Any]]:
        name, policy = policy_for(p, names)
        return (f"{name} without {action}", without_action(policy, action)) if p == principal else (name, policy)
    return policies


def unnoticed_removals(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (principal, action) pairs the calls need whose removal from the printed policy the check
    would not notice (another statement or a wildcard grants it too): [] when each one matters."""
    prefixes = data_prefixes_by_test(records)
    users: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        entry = CALL_ACTIONS.get(f"{r['service']}.{r['operation']}") if r["principal"] != "grant" else None
        for need in entry[0] if entry else ():
            if needed(need, r["params"]):
                users[(r["principal"], need.action)].append(r)
    unnoticed = []
    for (principal, action), used_by in sorted(users.items()):
        failures = _check(used_by, dropping(principal, action), prefixes)
        if not any(f.need is not None and f.need.action == action for f in failures):
            unnoticed.append((principal, action))
    return unnoticed


def render_report(records: list[dict[str, Any]], failures: list[Failure],
                  unnoticed: list[tuple[str, str]] | None = None) -> str:
    records = [r for r in records if r["principal"] != "grant"]
    by_principal = Counter(r["principal"] for r in records)
    calls = len({(r["principal"], r["service"], r["operation"]) for r in records})
    head = (f"{len(records)} recorded calls ({', '.join(f'{p} {n}' for p, n in sorted(by_principal.items()))}; "
            f"{calls} distinct principal/operation pairs)")
    if not failures:
        text = f"{head}: every action they need is allowed by the printed policies"
        if unnoticed is None:
            return text + "."
        if not unnoticed:
            return text + ", and removing any one of them from its policy fails this check."
        return (text + "; removing these from their policy goes unnoticed (granted again by a wildcard or "
                "another statement): " + ", ".join(f"{p} {a}" for p, a in unnoticed) + ".")
    groups: dict[tuple, list[Failure]] = defaultdict(list)
    for f in failures:  # one line per principal, operation, action and resource pattern
        groups[(f.record["principal"], f.record["service"], f.record["operation"], f.need,
                f.arn.rsplit("/", 1)[0])].append(f)
    lines = [f"  - {fs[0].line()}" + (f"\n      and {len(fs) - 1} more like it" if len(fs) > 1 else "")
             for fs in groups.values()]
    return (f"{head}: {len(failures)} not allowed (conditions not evaluated; sources of the table: "
            f"{', '.join(sorted(SOURCES))}):\n" + "\n".join(lines))
