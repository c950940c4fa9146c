# spotshift: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create and use .venv by themselves, installing exactly requirements/lock.txt.
# `make lock` refreshes the lock from pyproject.toml (no diff when nothing changed);
# `make upgrade` moves every lock entry to its newest release, reinstalls and runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
TRAINER_LOCK := requirements/trainer.txt
# every file's hash of each pinned release; the environment is resolved for the machines that build it
# (CPython 3.11, Linux x86-64), the trainer's share for any Python >= 3.11 and platform (the image's)
HASHED := --generate-hashes --quiet --custom-compile-command "make lock"
LOCK_FLAGS := --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(HASHED)
TRAINER_LOCK_FLAGS := --universal --python-version 3.11 $(HASHED)
# torch is the CPU build of the lock's version (a local wheel where one lies on disk), installed first
# so that pip never pulls a CUDA build; its hash is not PyPI's, so it is the one package not hash-checked
TORCH_VERSION := $(shell sed -n 's/^torch==\([^ ;]*\).*/\1/p' $(LOCK))
TORCH_SPEC ?= torch==$(TORCH_VERSION)+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo bench blocks clean lock upgrade

venv: $(STAMP)

$(STAMP): $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps "$(TORCH_SPEC)" || $(PY) -m pip install -q --no-deps "$(TORCH_SPEC)" --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=30 $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m deployments.cli demo

blocks: $(STAMP)
	$(PY) -m deployments.cli blocks register

# the whole environment, then the trainer's share of it (what the instance installs: the same pins,
# without torch and what only torch needs)
lock: $(STAMP)
	$(UV) pip compile pyproject.toml requirements/pins.in --all-extras $(LOCK_FLAGS) $(UV_UPGRADE) -o $(LOCK)
	$(PY) -m spotshift.aws.trainer_artifact requirements | $(UV) pip compile - -c $(LOCK) \
	  --excludes requirements/trainer-excludes.in $(TRAINER_LOCK_FLAGS) -o $(TRAINER_LOCK)

upgrade:
	$(MAKE) lock UV_UPGRADE=--upgrade
	$(MAKE) test

clean:
	rm -rf $(VENV) .prefect .spotshift
