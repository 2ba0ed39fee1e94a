# Every target creates .venv and installs the project on first use, so a fresh clone needs only `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test run demo bench lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	@bash .ci/os-tools
	$(BIN)/python -m pytest

# This machine's real readings, one collect→publish cycle, printed instead of sent.
run: $(STAMP)
	$(BIN)/infrawatch-agent --once --dry-run --format table

# Rewrites the README's generated reference tables (config keys, metric catalogue, spec, alarms) from the code.
docs: $(STAMP)
	$(BIN)/python -m agent.docs
	$(BIN)/python -m provisioning.docs

# Every bench/ script; writes bench/RESULTS.md and the README's performance section.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# The agent and the provisioner end to end against a moto server on loopback: no AWS account needed.
demo: $(STAMP)
	$(BIN)/python -m demo.run

lint: $(STAMP)
	$(BIN)/ruff check agent provisioning report tests bench demo
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
