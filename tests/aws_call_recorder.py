"""Records every AWS call the project's code makes while the tests run, with the principal that
would make it on AWS, for the call -> IAM action check (tests/aws_call_check.py).

How a call is seen: a `before-parameter-build` handler is added to botocore's BUILTIN_HANDLERS,
which every botocore session registers when it is created, so it sees every client (boto3's,
prefect-aws's, Stubber-wrapped ones) of this process. Subprocesses (the local backend's trainers)
record too: the plugin puts tests/aws_call_site on PYTHONPATH, whose sitecustomize installs the
same handler when SPOTSHIFT_TEST_AWS_CALL_LOG names the log directory.

Who made it (the stack, innermost first, continued into the stack that started the thread, so
boto3's transfer threads and the trainer's uploader count as their caller):
- no frame of the project (spotshift/, training/, flows/, tasks/, blocks/, deployments/, tests/),
  or the innermost such frame (past the call wrappers of spotshift/aws/calls.py) is under tests/
  (a test arranging or reading state, or exercising call_aws itself) or is one of
  the embedded stand-ins for AWS (LOCAL_STAND_INS: the local backend making the instance profile
  an admin would, the moto helpers): not recorded;
- a frame of `spotshift aws setup`/`teardown` (SETUP_CODE): the setup policy;
- else the outermost project frame outside tests/ is under training/: the trainer's policy (the
  trainer's own entry point, or a test driving the trainer's code);
- else: the orchestrator's runtime policy (the orchestrator also calls training/'s storage code).

Each distinct call of a test (principal, service, operation, region, the parameters that name what
it touches) is appended once, as a JSON line, to <log dir>/<pid>.jsonl, with the data prefixes of
the spotshift Settings found on the stack (what the test granted; a test without Settings declares
them with the aws_data_grant fixture): the check prints the policies with them, for the trainer's
calls of the same test too; the controller's
pytest_sessionfinish checks them all (tests/aws_call_check.py) and fails the session if a call is
not allowed by its printed policy.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

DROP_ENV = "SPOTSHIFT_TEST_AWS_CALL_DROP"  # PRINCIPAL:ACTION, to see the check fail without that action
ENV = "SPOTSHIFT_TEST_AWS_CALL_LOG"  # not AWS_*: the local backend passes no AWS_* variable to a trainer
REPO = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "aws_call_site"
PROJECT_DIRS = frozenset({"spotshift", "training", "flows", "tasks", "blocks", "deployments", "tests"})
# functions that run with the setup policy (`spotshift aws setup`/`teardown` and what they call);
# None = every function of the file but those in SETUP_FILE_RUNTIME_HELPERS (shared with `check`)
SETUP_CODE: dict[str, frozenset[str] | None] = {
    "deployments/aws_cli.py": frozenset({"_setup", "_teardown"}),
    "spotshift/aws/setup.py": None,
}
SETUP_FILE_RUNTIME_HELPERS = frozenset({"check_bucket"})
# the call wrappers every AWS call goes through: transparent when deciding whether a test made it
CALL_WRAPPERS = frozenset({"spotshift/aws/calls.py"})
LOCAL_STAND_INS = frozenset({"spotshift/aws/local_backend.py", "spotshift/aws/moto_env.py", "deployments/local_aws.py"})
# the parameters that name what a call touches (the resource ARNs and the conditional actions);
# nothing else is kept (bodies, policies, user-data, upload ids stay out of the log)
SCALARS = ("Bucket", "Key", "Prefix", "RoleName", "InstanceProfileName", "PolicyName", "SecretId", "Name",
           "GroupName", "GroupId", "VpcId", "ImageId", "SubnetId", "InstanceType", "AWSServiceName",
           "ServiceCode", "QuotaCode", "DryRun", "ServiceName", "SourceImageId")
LISTS = ("InstanceIds", "SecurityGroupIds", "ImageIds", "GroupIds", "Names", "SubnetIds", "Resources")

Frame = tuple[str, str, int]  # (path relative to the repository, function, line)


def _project_frames(frame: Any) -> list[Frame]:
    root = str(REPO) + os.sep
    out: list[Frame] = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(root):
            rel = path[len(root):]
            if rel.split(os.sep, 1)[0] in PROJECT_DIRS and not rel.startswith("tests/aws_call_"):
                out.append((rel, frame.f_code.co_name, frame.f_lineno))
        frame = frame.f_back
    return out


def principal_of(frames: list[Frame]) -> str | None:
    """'setup' | 'runtime' | 'trainer' for a call made under `frames` (innermost first), or None
    when the call is not the project's (see the module docstring)."""
    inner = next((rel for rel, _, _ in frames if rel not in CALL_WRAPPERS), "")
    if not inner or inner.startswith("tests/") or inner in LOCAL_STAND_INS:
        return None
    for rel, fn, _ in frames:
        if rel in SETUP_CODE:
            names = SETUP_CODE[rel]
            if (fn in names) if names is not None else (fn not in SETUP_FILE_RUNTIME_HELPERS):
                return "setup"
    outer = [rel for rel, _, _ in frames if not rel.startswith("tests/")][-1]
    return "trainer" if outer.startswith("training/") else "runtime"


def call_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a call that name what it touches (see SCALARS, LISTS), and a summary of
    the structured ones the check needs."""
    out: dict[str, Any] = {k: params[k] for k in SCALARS if isinstance(params.get(k), (str, int, bool))}
    out.update({k: sorted(map(str, params[k])) for k in LISTS if isinstance(params.get(k), list)})
    if params.get("Tags"):
        out["Tags"] = True
    if params.get("Tagging"):
        out["Tagging"] = True
    specs = params.get("TagSpecifications")
    if specs:
        out["TagSpecifications"] = sorted({s.get("ResourceType", "") for s in specs})
    profile = params.get("IamInstanceProfile")
    if isinstance(profile, dict):
        out["IamInstanceProfile"] = {k: v for k, v in profile.items() if k in ("Name", "Arn")}
    market = (params.get("InstanceMarketOptions") or {}).get("MarketType")
    if market:
        out["MarketType"] = market
    nics = params.get("NetworkInterfaces")
    if nics:
        out["NetworkInterfaces"] = [{"SubnetId": n.get("SubnetId"), "Groups": sorted(n.get("Groups") or [])}
                                    for n in nics]
    delete = params.get("Delete")
    if isinstance(delete, dict):
        out["DeleteKeys"] = sorted(o["Key"] for o in delete.get("Objects", []))
        if any(o.get("VersionId") for o in delete.get("Objects", [])):
            out["DeleteVersions"] = True
    source = params.get("CopySource")
    if source:
        out["CopySource"] = source if isinstance(source, str) else f"{source.get('Bucket')}/{source.get('Key')}"
    return out


def _is_settings(value: Any) -> bool:
    return type(value).__module__ == "spotshift.settings" and type(value).__name__ == "Settings"


def settings_data_prefixes(frame: Any) -> list[str]:
    """The data prefixes of the spotshift Settings nearest on the stack (a local, or the `settings`
    of a local whose class declares one, e.g. a flows Runtime), or []."""
    root = str(REPO) + os.sep
    while frame is not None:
        if frame.f_code.co_filename.startswith(root):
            for value in list(frame.f_locals.values()):
                if not _is_settings(value) and "settings" in getattr(type(value), "__annotations__", {}):
                    value = getattr(value, "settings", None)
                if _is_settings(value):
                    return [str(p) for p in getattr(value, "data_prefixes", [])]
        frame = frame.f_back
    return []


class Recorder:
    """Appends each distinct call once to <directory>/<pid>.jsonl (flushed per line, so a trainer
    killed at its grace still leaves what it did)."""

    def __init__(self, directory: str):
        self.directory = directory
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.file = None

    def on_call(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None = None, **_: Any) -> None:
        try:
            self._record(params, model, context)
        except Exception as exc:  # never break the call; the check fails on this record instead
            self._write({"principal": "recorder-error", "service": "-", "operation": type(exc).__name__,
                         "region": "", "params": {}, "test": os.environ.get("PYTEST_CURRENT_TEST", ""),
                         "where": [repr(exc)[:300]]})

    def _record(self, params: dict[str, Any], model: Any, context: dict[str, Any] | None) -> None:
        frames = _project_frames(sys._getframe(1))
        frames += getattr(threading.current_thread(), "_aws_call_origin", [])
        principal = principal_of(frames)
        if principal is None:
            return
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or f"pid {os.getpid()}: {sys.argv[:3]}"
        record = {"principal": principal, "service": model.service_model.service_name, "operation": model.name,
                  "region": (context or {}).get("client_region") or "", "params": call_params(params), "test": test}
        key = json.dumps(record, sort_keys=True)
        with self.lock:
            if key in self.seen:
                return
            self.seen.add(key)
            record["where"] = [f"{rel}:{line} {fn}" for rel, fn, line in frames[:4]]
            prefixes = settings_data_prefixes(sys._getframe(1))
            if prefixes:
                record["data_prefixes"] = prefixes
            self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            self.file = open(Path(self.directory) / f"{os.getpid()}.jsonl", "a", encoding="utf-8")
        self.file.write(json.dumps(record, sort_keys=True) + "\n")
        self.file.flush()


def _thread_start_recording_origin(start):
    def start_(self, *args, **kwargs):
        self._aws_call_origin = (_project_frames(sys._getframe(1))
                                 + getattr(threading.current_thread(), "_aws_call_origin", []))
        return start(self, *args, **kwargs)
    start_._aws_call_recorder = True
    return start_


def install(directory: str) -> None:
    """Record this process's calls (and those of the threads it starts) into `directory`."""
    import importlib

    # sys.modules: sitecustomize calls this while botocore.handlers is still being imported
    handlers = sys.modules.get("botocore.handlers") or importlib.import_module("botocore.handlers")
    if getattr(handlers, "_spotshift_aws_call_recorder", None) is not None:
        return  # installed already (by sitecustomize in an xdist worker, then again as the plugin)
    recorder = handlers._spotshift_aws_call_recorder = Recorder(directory)
    handlers.BUILTIN_HANDLERS.append(("before-parameter-build", recorder.on_call, handlers.REGISTER_LAST))
    if not getattr(threading.Thread.start, "_aws_call_recorder", False):
        threading.Thread.start = _thread_start_recording_origin(threading.Thread.start)


def load_records(directory: str | Path) -> list[dict[str, Any]]:
    """Every process's records, one per distinct call of a test."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                key = json.dumps({k: record.get(k) for k in ("principal", "service", "operation", "region", "params",
                                                             "test")}, sort_keys=True)
                out.setdefault(key, record)
    return list(out.values())


# ---- the pytest plugin (tests/conftest.py: pytest_plugins) ----

GRANT = "grant"  # a record that is not a call: the data prefixes a test's deployment grants

if "pytest" in sys.modules:  # the plugin (a subprocess's sitecustomize loads this module without pytest)
    import pytest

    @pytest.fixture
    def aws_data_grant(request):
        """aws_data_grant(*prefixes): the data prefixes this test's deployment grants (what
        `spotshift aws setup --data` would), for a test that drives project code without a spotshift
        Settings; the check prints the runtime and trainer policies of the test's calls with them."""
        def grant(*prefixes: str) -> None:
            recorder = sys.modules["botocore.handlers"]._spotshift_aws_call_recorder
            with recorder.lock:
                recorder._write({"principal": GRANT, "service": "-", "operation": "-", "region": "", "params": {},
                                 "test": request.node.nodeid, "data_prefixes": list(prefixes)})
        return grant


def pytest_configure(config) -> None:
    if not os.environ.get(ENV):  # the controller (or a run without xdist): one directory for every process
        os.environ[ENV] = tempfile.mkdtemp(prefix="spotshift-aws-calls-")
        config._aws_call_log_owner = True
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH")) if p)
    install(os.environ[ENV])


def pytest_sessionfinish(session, exitstatus) -> None:
    if not getattr(session.config, "_aws_call_log_owner", False) or hasattr(session.config, "workerinput"):
        return
    from tests.aws_call_check import check_records, dropping, render_report, unnoticed_removals

    directory = os.environ[ENV]
    records = load_records(directory)
    if not records:
        return
    drop = os.environ.get(DROP_ENV)  # e.g. setup:iam:TagRole: the check with that action removed
    failures = check_records(records, dropping(*drop.split(":", 1)) if drop else None)
    session.config._aws_call_report = render_report(records, failures,
                                                    None if failures else unnoticed_removals(records))
    if failures and session.exitstatus == 0:
        session.exitstatus = 1
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    report = getattr(config, "_aws_call_report", None)
    if report:
        terminalreporter.write_sep("=", "AWS calls checked against the printed IAM policies")
        terminalreporter.write_line(report)
