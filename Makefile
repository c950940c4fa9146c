# spotshift: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create and use .venv by themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU torch first (a local wheel where one lies on disk), so that pip never pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test demo bench blocks clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" || $(PY) -m pip install -q "$(TORCH_SPEC)" --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e ".[train,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m deployments.cli demo

blocks: $(STAMP)
	$(PY) -m deployments.cli blocks register

clean:
	rm -rf $(VENV) .prefect .spotshift
