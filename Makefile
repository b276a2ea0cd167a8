# The two commands of the README. Both create .venv when it is missing and install the package
# into it; the install step is skipped (seconds) when pyproject.toml has not changed since.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-results

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: pip takes these two from this machine's disk (see README).
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m maskfield.demo

# Two pytest workers, one test file each at a time (a file's module fixtures, such as the tiny
# workflow run, are made once): the Slurm and workflow tests spend much of their time waiting on
# subprocesses, which the other worker fills. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) --durations=15 tests

clean-results:
	rm -rf results/cache results/fields results/renders results/metrics results/tables results/figures results/queries results/report.html logs benchmarks
