# Two commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
OUT    ?= out/demo
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: demo test lint typecheck bench compile clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hmlops demo --out $(OUT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint components/Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

compile: $(STAMP)
	$(BIN)/hmlops pipeline compile --out pipelines/compiled/data_pipeline.yaml

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py

clean:
	rm -rf out .pytest_cache .mypy_cache
