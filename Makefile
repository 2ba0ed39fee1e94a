# Every target creates .venv and installs the project on first use, so a fresh clone needs only `make test`.
# Each step prints one line; pip's own output goes to a log that is shown only when an install fails.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# A second venv with every runtime dependency at the minimum pyproject.toml declares.
VENV_MIN := .venv-min
MIN_STAMP := $(VENV_MIN)/.installed
MIN_TESTS := tests/test_publisher.py tests/test_request_bound.py tests/test_gpu.py tests/test_prometheus.py tests/test_prometheus_cache.py \
	$(sort $(wildcard tests/test_statsd_*.py))

.PHONY: test test-min run demo bench lint docs clean dist dist-check mutation

# $(call pip,VENV,ARGS): pip install quietly into VENV; on failure show everything pip said, then fail.
define pip
	@$(1)/bin/python -m pip install --disable-pip-version-check $(2) > $(1)/pip.log 2>&1 \
		|| { cat $(1)/pip.log; echo "make: pip install failed in $(1) (its output is above)"; exit 1; }
endef

$(STAMP): pyproject.toml
	@echo "make: creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)
	@echo "make: installing infrawatch and its dev tools into $(VENV) (about a minute the first time)"
	$(call pip,$(VENV),--upgrade pip)
	$(call pip,$(VENV),-e '.[dev]')
	@touch $(STAMP)

$(MIN_STAMP): pyproject.toml .ci/min_constraints.py | $(STAMP)
	@echo "make: creating $(VENV_MIN) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV_MIN)
	@$(BIN)/python .ci/min_constraints.py > $(VENV_MIN)/constraints.txt
	@echo "make: installing infrawatch into $(VENV_MIN) at its declared minimums: $$(paste -sd' ' $(VENV_MIN)/constraints.txt)"
	$(call pip,$(VENV_MIN),--upgrade pip)
	$(call pip,$(VENV_MIN),--constraint $(VENV_MIN)/constraints.txt -e '.[dev]')
	@touch $(MIN_STAMP)

# Two workers (pytest-xdist), each taking whole files, so a module's shared fixtures are set up once: about
# half the suite's time is spent waiting on subprocesses, servers and sockets, which the other worker fills.
test: $(STAMP)
	@bash .ci/os-tools
	@echo "make: running the test suite"
	@$(BIN)/python -m pytest -n 2 --dist loadfile

# The publisher, GPU and StatsD tests against the oldest versions pyproject.toml admits.
test-min: $(MIN_STAMP)
	@echo "make: running the publisher, GPU, Prometheus and StatsD tests at the minimum versions"
	@$(VENV_MIN)/bin/python -m pytest $(MIN_TESTS)

# This machine's real readings, one collect→publish cycle, printed instead of sent.
run: $(STAMP)
	@echo "make: running infrawatch-agent --once --dry-run --format table"
	@$(BIN)/infrawatch-agent --once --dry-run --format table

# Rewrites the README's generated reference tables (config keys, metric catalogue, spec, alarms) from the code.
docs: $(STAMP)
	@echo "make: regenerating the reference tables"
	@$(BIN)/python -m agent.docs
	@$(BIN)/python -m provisioning.docs

# Every bench/ script; writes bench/RESULTS.md and the README's performance section.
bench: $(STAMP)
	@echo "make: running every benchmark"
	@$(BIN)/python bench/run_all.py

# The agent and the provisioner end to end against a moto server on loopback: no AWS account needed.
demo: $(STAMP)
	@echo "make: running the demo"
	@$(BIN)/python -m demo.run

# mutmut on the modules that hold data, each against its own tests (about 15 min on 2 cores); writes
# docs/quality.md. Not part of `make test`. One module: `$(BIN)/python .ci/mutation.py --only agent/spool.py`.
mutation: $(STAMP)
	@echo "make: mutation testing, written to docs/quality.md"
	@$(BIN)/python .ci/mutation.py --jobs 2

lint: $(STAMP)
	@echo "make: ruff and mypy"
	@$(BIN)/ruff check agent provisioning report tests bench demo .ci
	@$(BIN)/mypy

# The release artifact: wheel and sdist in dist/, version from pyproject.toml (the one place it is written).
dist: $(STAMP)
	@echo "make: building the wheel and sdist into dist/"
	@rm -rf dist
	@$(BIN)/python -m build --outdir dist . > build.log 2>&1 || { cat build.log; exit 1; }
	@rm -f build.log
	@ls dist

# The wheel installed into a fresh venv, as a host installs it: both commands must start from there.
dist-check: dist
	@echo "make: installing dist/*.whl into a fresh venv (build/dist-check)"
	@rm -rf build/dist-check
	@$(PYTHON) -m venv build/dist-check
	$(call pip,build/dist-check,dist/*.whl)
	@build/dist-check/bin/infrawatch-agent --version
	@build/dist-check/bin/provision-alarms --help >/dev/null
	@build/dist-check/bin/infrawatch-report print-iam-policy >/dev/null
	@test -f build/dist-check/share/infrawatch/install.sh && echo "make: dist-check passed: the wheel installs and both commands run"

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache build dist *.egg-info
