"""The pure core (pyproject.toml's `pure-core-*` import-linter contracts): importing it loads no AWS,
numeric or ML library, and the contracts fail on the import that broke them before #21
(spotshift.policy.policies -> spotshift.market.traces, which loads numpy)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from spotshift.catalog import region_of
from spotshift.instances import GONE_STATES, NOT_GONE_STATES, RUNNING_STATES

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CORE_CONTRACTS = ("pure-core-libraries", "pure-core-adapters")


def importlinter_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]


def core_contract(contract_id: str) -> dict:
    return next(c for c in importlinter_config()["contracts"] if c.get("id") == contract_id)


def test_importing_the_core_loads_no_library_its_contract_forbids():
    """Every module of the core (the contract's source modules and their submodules) is imported in a
    fresh interpreter; none of the forbidden libraries is in sys.modules afterwards. Importing the
    trace reader in the same interpreter then loads numpy: the probe sees what it looks for."""
    contract = core_contract("pure-core-libraries")
    probe = """
import importlib, json, pkgutil, sys
sources, forbidden = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
def loaded():
    return sorted({m.split(".")[0] for m in sys.modules} & forbidden)
imported = []
for name in sources:
    module = importlib.import_module(name)
    imported.append(name)
    for sub in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
        importlib.import_module(sub.name)
        imported.append(sub.name)
core = loaded()
import spotshift.market.traces
print(json.dumps({"imported": imported, "core": core, "with_traces": loaded()}))
"""
    run = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(contract["source_modules"]), json.dumps(contract["forbidden_modules"])],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    seen = json.loads(run.stdout)
    assert {"spotshift.policy.policies", "spotshift.policy.outlook", "spotshift.lifecycle.adoption",
            "spotshift.lifecycle.plans", "spotshift.monitoring", "spotshift.cost_model"} <= set(seen["imported"])
    assert seen["core"] == []
    assert "numpy" in seen["with_traces"]


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a TOML basic string for these plain names


def _lint_copy(tree: Path) -> subprocess.CompletedProcess:
    """lint-imports with the repository's pure-core contracts, as written in pyproject.toml, over `tree`."""
    config = importlinter_config()
    lines = ["[tool.importlinter]", 'root_packages = ["spotshift", "training"]',
             f"include_external_packages = {_toml_value(config['include_external_packages'])}"]
    for contract in config["contracts"]:
        if contract.get("id") in CORE_CONTRACTS:
            lines += ["", "[[tool.importlinter.contracts]]"] + [f"{k} = {_toml_value(v)}" for k, v in contract.items()]
    (tree / "pyproject.toml").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="lint-imports is not installed beside this interpreter")
def test_the_core_contracts_fail_on_the_policy_importing_the_trace_reader(tmp_path):
    """A copy of spotshift/ and training/ passes the contracts; with the import the policy had before
    #21 put back (spotshift.policy.policies -> spotshift.market.traces) both contracts break, naming
    that import and the numpy it drags in."""
    for package in ("spotshift", "training"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    clean = _lint_copy(tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count(" KEPT") == len(CORE_CONTRACTS)

    policies = tmp_path / "spotshift" / "policy" / "policies.py"
    policies.write_text(policies.read_text() + "\nfrom spotshift.market.traces import region_of as _region_of  # noqa\n")
    broken = _lint_copy(tmp_path)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "Contracts: 0 kept, 2 broken." in broken.stdout
    assert "spotshift.policy is not allowed to import numpy" in broken.stdout
    assert "spotshift.policy is not allowed to import spotshift.market" in broken.stdout
    assert "spotshift.policy.policies -> spotshift.market.traces" in broken.stdout
    assert "spotshift.market.traces -> numpy" in broken.stdout


def test_region_of_an_availability_zone_and_a_bad_zone_named():
    assert region_of("us-east-1a") == "us-east-1"
    assert region_of("ap-southeast-4b") == "ap-southeast-4"
    with pytest.raises(ValueError, match="zone 'us-east-1'"):
        region_of("us-east-1")


def test_instance_states_partition_ec2s_states():
    """Running states are not gone; every EC2 state is either gone or may come back, never both."""
    assert RUNNING_STATES <= set(NOT_GONE_STATES)
    assert not GONE_STATES & set(NOT_GONE_STATES)
    assert GONE_STATES | set(NOT_GONE_STATES) == {"pending", "running", "stopping", "stopped", "shutting-down",
                                                  "terminated"}
