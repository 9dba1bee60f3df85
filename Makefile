# Every target works on a fresh clone: `make install` is idempotent and re-runs only
# when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov pins packaging<24 while pytest 9 needs >=24: it lives in a venv of its own.
CHECKOV_VENV := .tools/checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: install tools test lint format bench demo reliability clean image image-gpu image-test

install: $(STAMP)

$(STAMP): pyproject.toml scripts/launcher/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[cpu,dev]' -e ./scripts/launcher
	touch $@

# checkov in a venv of its own; a real Prometheus server (Debian's package) for tests/test_telemetry.py.
tools: $(CHECKOV_STAMP)
	command -v prometheus >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

$(CHECKOV_STAMP):
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov>=3.2,<4'
	touch $@

test: install tools lint image
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(BIN)/pytest -q -m "not full" --durations=15

# The trainer image with buildah (scripts/image/build.sh): installs buildah, podman, runc and
# mmdebstrap when missing, builds a stand-in for the base image where no registry is reachable,
# and does nothing when the tree the image was built from has not changed.
image:
	scripts/image/build.sh cpu

image-gpu:
	scripts/image/build.sh gpu

# The CPU image run with podman as the Job runs it (tests/test_image.py, also part of `make test`).
image-test: install image
	$(BIN)/pytest -q -s tests/test_image.py

# The whole reliability suite, fast and full parts; rewrites docs/reliability.md from its rows.
# Then the other `full` tests: slow repeats of what `make test` covers once.
reliability: install tools
	CHECKOV=$(CURDIR)/$(CHECKOV_VENV)/bin/checkov RELIABILITY_REPORT=$(CURDIR)/docs/reliability.md \
		$(BIN)/pytest -q tests/reliability
	$(BIN)/pytest -q -m full --ignore=tests/reliability tests

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	PYTHONPATH=tests $(BIN)/python -m support.bench input

demo: install
	$(BIN)/python -m trainer.dev.demo

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache *.egg-info
