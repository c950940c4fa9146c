"""docker/prefect-ecs.yaml: the deployments of prefect.yaml on an ECS work pool. `prefect deploy`
registers them on the local Prefect server against a pool with prefect-aws's ECS base job template
(no AWS is called); docker/Dockerfile installs the lock, hash-checked, on the lock's Python."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import typing
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ECS_FILE = REPO / "docker" / "prefect-ecs.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
POOL = "spotshift-ecs"
IMAGE_DIR = "/opt/spotshift"

# what a user exports before `prefect deploy` (docs/aws.md, "Scaling out"): an ECR image, roles, settings
EXPORTS = {
    "SPOTSHIFT_ECS_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/spotshift:0a1b2c3",
    "SPOTSHIFT_ECS_CLUSTER": "spotshift",
    "SPOTSHIFT_ECS_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/spotshift-ecs-execution",
    "SPOTSHIFT_ECS_TASK_ROLE_ARN": "arn:aws:iam::123456789012:role/spotshift-ecs-task",
    "SPOTSHIFT_AWS_REGION": "us-east-1",
    "SPOTSHIFT_REGIONS": '["us-east-1","us-west-2"]',
    "SPOTSHIFT_BUCKET": "spotshift-123456789012-us-east-1",
    "SPOTSHIFT_SUPABASE_URL": "https://abcdefgh.supabase.co",
}
# the database credentials as container secrets, added to the pool's base job template as the docs say
SECRETS = [
    {"name": "SPOTSHIFT_MONGODB_URL",
     "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:spotshift/mongodb-url"},
    {"name": "SPOTSHIFT_SUPABASE_KEY",
     "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:spotshift/supabase-key"},
]


def deployments_of(path: Path) -> dict[str, dict]:
    return {d["name"]: d for d in yaml.safe_load(path.read_text())["deployments"]}


def ecs_base_job_template() -> dict:
    from prefect_aws.workers.ecs_worker import ECSWorker

    return ECSWorker.get_default_base_job_template()


def secret_settings() -> set[str]:
    """The environment names of spotshift's settings that hold a secret (SecretStr fields)."""
    from pydantic import SecretStr

    from spotshift.settings import Settings

    return {f"SPOTSHIFT_{name.upper()}" for name, field in Settings.model_fields.items()
            if SecretStr in (field.annotation, *typing.get_args(field.annotation))}


# --- the file: the same deployments, on the ECS pool, without secrets ---------------------------


def test_the_ecs_file_declares_every_deployment_of_prefect_yaml_with_the_same_schedule_and_limits():
    process, ecs = deployments_of(REPO / "prefect.yaml"), deployments_of(ECS_FILE)
    missing, extra = sorted(set(process) - set(ecs)), sorted(set(ecs) - set(process))
    assert not missing and not extra, (
        f"docker/prefect-ecs.yaml must declare the deployments of prefect.yaml (missing: {missing}, extra: {extra})")
    for name, d in process.items():
        same = {k: v for k, v in d.items() if k != "work_pool"}
        assert {k: v for k, v in ecs[name].items() if k != "work_pool"} == same, (
            f"{name}: docker/prefect-ecs.yaml differs from prefect.yaml outside work_pool")
        assert d["work_pool"]["name"] == "spotshift"  # the process pool stays the default
        assert ecs[name]["work_pool"]["name"] == POOL


def test_the_ecs_job_variables_are_the_ecs_templates_and_carry_settings_but_no_secret():
    from spotshift.settings import Settings

    variables = set(ecs_base_job_template()["variables"]["properties"])
    settings = {f"SPOTSHIFT_{name.upper()}" for name in Settings.model_fields}
    for name, d in deployments_of(ECS_FILE).items():
        job_variables = d["work_pool"]["job_variables"]
        assert set(job_variables) <= variables, f"{name}: not ECS variables: {set(job_variables) - variables}"
        assert {"image", "cluster", "cpu", "memory", "execution_role_arn", "task_role_arn"} <= set(job_variables)
        env = job_variables["env"]
        assert set(env) <= settings, f"{name}: not spotshift settings (ignored, extra='ignore'): {set(env) - settings}"
        assert not set(env) & secret_settings(), f"{name}: a secret in job variables (stored in plain text)"
        assert not any(k.startswith("AWS_") or k == "PREFECT_API_KEY" for k in env)
        assert env["SPOTSHIFT_COMPUTE_BACKEND"] == "ec2"
    assert secret_settings() == {s["name"] for s in SECRETS}  # the docs' container secrets cover every secret


# --- registered on a local Prefect server against an ECS pool ------------------------------------


@pytest.fixture
def ecs_pool(prefect_api):
    """The pool `prefect work-pool create spotshift-ecs --type ecs` makes, with the container
    secrets the docs add to its base job template; removed with its deployments afterwards."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    template = ecs_base_job_template()
    template["job_configuration"]["task_definition"]["containerDefinitions"][0]["secrets"] = SECRETS
    with get_client(sync_client=True) as client:
        pool = client.create_work_pool(WorkPoolCreate(name=POOL, type="ecs", base_job_template=template))
        yield pool
        for d in client.read_deployments(work_pool_filter=in_pool()):
            client.delete_deployment(d.id)
        client.delete_work_pool(POOL)


def in_pool():
    from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName

    return WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL]))


def rendered(job_variables: dict, pool):
    """What the ECS worker would send to ECS for these variables (prefect-aws's own templating)."""
    from prefect_aws.workers.ecs_worker import ECSJobConfiguration

    return asyncio.run(ECSJobConfiguration.from_template_and_values(pool.base_job_template, job_variables))


def schedule_of(deployment) -> list[dict]:
    out = []
    for s in deployment.schedules:
        out.append({"interval": int(s.schedule.interval.total_seconds())} if hasattr(s.schedule, "interval")
                   else {"cron": s.schedule.cron})
    return out


@pytest.mark.xdist_group("prefect")
def test_prefect_deploy_registers_every_deployment_on_an_ecs_pool(ecs_pool, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.testing.cli import CycloptsCliRunner

    from spotshift.settings import Settings

    declared = deployments_of(ECS_FILE)
    for spec in declared.values():  # imported before the exports: what reads settings at import reads the suite's
        importlib.import_module(spec["entrypoint"].split(":")[0].removesuffix(".py").replace("/", "."))
    monkeypatch.chdir(REPO)  # entrypoints are relative to the checkout, as for `prefect deploy` there
    for k, v in EXPORTS.items():
        monkeypatch.setenv(k, v)
    result = CycloptsCliRunner().invoke(["--no-prompt", "deploy", "--all", "--prefect-file", str(ECS_FILE)])
    assert result.exit_code == 0, result.output

    with get_client(sync_client=True) as client:
        registered = {d.name: d for d in client.read_deployments(work_pool_filter=in_pool())}
    assert set(registered) == set(declared)
    for name, spec in declared.items():
        d = registered[name]
        assert (d.entrypoint, d.work_pool_name) == (spec["entrypoint"], POOL)
        assert schedule_of(d) == spec.get("schedules", [])
        limit = d.global_concurrency_limit.limit if d.global_concurrency_limit else None
        assert limit == spec.get("concurrency_limit"), name
        assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": IMAGE_DIR}}]
        jv = d.job_variables
        assert (jv["image"], jv["cluster"], jv["execution_role_arn"], jv["task_role_arn"]) == (
            EXPORTS["SPOTSHIFT_ECS_IMAGE"], EXPORTS["SPOTSHIFT_ECS_CLUSTER"],
            EXPORTS["SPOTSHIFT_ECS_EXECUTION_ROLE_ARN"], EXPORTS["SPOTSHIFT_ECS_TASK_ROLE_ARN"])
        assert (jv["cpu"], jv["memory"], jv["launch_type"]) == (1024, 2048, "FARGATE")
        assert "{{" not in json.dumps(jv), f"{name}: a placeholder left unrendered"
        assert jv["env"] == {"SPOTSHIFT_COMPUTE_BACKEND": "ec2",
                             **{k: v for k, v in EXPORTS.items() if not k.startswith("SPOTSHIFT_ECS_")}}

    # the container's environment is the settings the flows read
    train_job = registered["train-job"]
    for k in list(os.environ):
        if k.startswith("SPOTSHIFT_"):
            monkeypatch.delenv(k)
    for k, v in train_job.job_variables["env"].items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    assert (settings.compute_backend, settings.regions, settings.bucket) == (
        "ec2", ["us-east-1", "us-west-2"], EXPORTS["SPOTSHIFT_BUCKET"])

    # what the ECS worker would register and run for train-job: the image, the roles, the secrets
    config = rendered(train_job.job_variables, ecs_pool)
    container = config.task_definition["containerDefinitions"][0]
    assert container["image"] == EXPORTS["SPOTSHIFT_ECS_IMAGE"] and container["secrets"] == SECRETS
    assert config.task_definition["executionRoleArn"] == EXPORTS["SPOTSHIFT_ECS_EXECUTION_ROLE_ARN"]
    assert config.task_run_request["overrides"]["taskRoleArn"] == EXPORTS["SPOTSHIFT_ECS_TASK_ROLE_ARN"]
    assert (config.task_run_request["cluster"], config.task_run_request["launchType"]) == ("spotshift", "FARGATE")
    assert config.env["SPOTSHIFT_BUCKET"] == EXPORTS["SPOTSHIFT_BUCKET"]

    # an export left unset is deployed as an empty string, not refused (docs/aws.md says to export every one)
    monkeypatch.delenv("SPOTSHIFT_ECS_IMAGE", raising=False)
    for k, v in EXPORTS.items():
        if k != "SPOTSHIFT_ECS_IMAGE":
            monkeypatch.setenv(k, v)
    result = CycloptsCliRunner().invoke(["--no-prompt", "deploy", "-n", "job-action", "--prefect-file", str(ECS_FILE)])
    assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        assert client.read_deployment(registered["job-action"].id).job_variables["image"] == ""


@pytest.mark.xdist_group("prefect")
def test_the_ecs_pool_refuses_a_job_variable_of_the_wrong_type_and_ignores_an_unknown_one(ecs_pool):
    """Prefect validates deployment job variables against the pool's variables schema: a wrong
    type or value is refused (422, naming the field and the allowed values); the ECS schema allows
    additional properties, so an unknown variable is stored, and the worker's template never uses it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train-job")
        for refused, named in (({"launch_type": "SPOT"}, r"launch_type.*'FARGATE', 'EC2', 'EXTERNAL', 'FARGATE_SPOT'"),
                               ({"cpu": "one vcpu"}, r"field 'cpu'")):
            with pytest.raises(PrefectHTTPStatusError) as info:
                client.create_deployment(flow_id=flow_id, name="refused", work_pool_name=POOL, job_variables=refused,
                                         entrypoint="flows/train_job.py:train_job")
            assert info.value.response.status_code == 422
            assert re.search(named, info.value.response.json()["detail"]), info.value.response.text

        unknown = {"image": EXPORTS["SPOTSHIFT_ECS_IMAGE"], "gpu_count": "sentinel-7f3a"}
        deployment_id = client.create_deployment(flow_id=flow_id, name="unknown-variable", work_pool_name=POOL,
                                                 job_variables=unknown, entrypoint="flows/train_job.py:train_job")
        assert client.read_deployment(deployment_id).job_variables == unknown
    config = rendered(unknown, ecs_pool)
    assert config.task_definition["containerDefinitions"][0]["image"] == unknown["image"]
    assert "sentinel-7f3a" not in json.dumps(config.model_dump(mode="json"))


# --- the image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in text.splitlines() if line.strip()]


def test_the_image_installs_the_lock_hash_checked_on_the_locks_python_and_the_project_without_dependencies():
    import tomllib

    steps = dockerfile_instructions()
    lock_python = re.search(r"--python-version (\d+\.\d+)", (REPO / "Makefile").read_text()).group(1)
    base = [args for op, args in steps if op == "FROM"]
    assert len(base) == 1 and re.fullmatch(rf"python:{re.escape(lock_python)}-[\w.-]+", base[0]), base

    runs = " && ".join(args for op, args in steps if op == "RUN")
    assert "pip install --no-cache-dir --no-deps --require-hashes -r requirements/lock.txt" in runs
    # torch: the CPU build of the lock's own version, read from the lock (never a second pin)
    assert "sed -n 's/^torch==" in runs and not re.search(r"torch==\d", runs)
    assert re.search(r"pip install [^&]*--no-deps [^&]*-e \.", runs) and "pip check" in runs
    # every package pyproject.toml installs is copied, and the working directory is the pull step's
    copied = {args.split()[0].rstrip("/") for op, args in steps if op == "COPY"}
    packages = {p.rstrip("*") for p in tomllib.loads((REPO / "pyproject.toml").read_text())
                ["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied and "requirements" in copied
    assert ("WORKDIR", IMAGE_DIR) in steps
    assert not any(op == "ENV" and re.search(r"(KEY|SECRET|TOKEN|PASSWORD|MONGODB_URL)=", args) for op, args in steps)
