# Two commands: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# checkov (manifest security scan) needs tabulate<0.10 while requirements.lock pins 0.10: its own venv
TOOLS       := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
OUT    ?= out/demo
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
# The compiled TreeSHAP pass, compiled once on this machine (tests, demo), not by every server
# started; a served image compiles at load and keeps no machine code on disk (docs/serving.md).
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba-cache

.PHONY: demo test test-postgres test-cluster test-containers test-validators test-demo e2e images lint typecheck bench bench-containers compile clean audit

# uv installs the exact pins of the lock files (the same wheels pip would pick) in about a
# quarter of pip's time; it lives in its own venv so that neither environment it builds, nor
# their SBOM and licence inventory, carries it.
UV_VENV  := .venv-uv
UV       := $(UV_VENV)/bin/uv
UV_STAMP := $(UV_VENV)/.installed

$(UV_STAMP):
	$(PYTHON) -m venv $(UV_VENV)
	$(UV_VENV)/bin/pip install --quiet "uv==0.13.9"
	touch $(UV_STAMP)

# --compile-bytecode: PYTHONDONTWRITEBYTECODE is set on the CI machines, so modules left
# uncompiled at install are compiled again by every process that imports them (the suite took
# 1,015 s instead of 620 and the story's latency gate failed under that load).
$(STAMP): pyproject.toml requirements.lock $(UV_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(UV) pip install --quiet --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

$(TOOLS_STAMP): requirements-tools.lock $(UV_STAMP)
	$(PYTHON) -m venv $(TOOLS)
	$(UV) pip install --quiet --python $(TOOLS)/bin/python --compile-bytecode -r requirements-tools.lock
	touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/hmlops demo --out $(OUT)

test:
	$(MAKE) -j2 $(STAMP) $(TOOLS_STAMP)   # the two venvs install side by side
	$(BIN)/ruff check .
	$(BIN)/mypy
	# the results feed the governance packet's privacy and security review
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not postgres" --junitxml=out/test-results.xml

# The pipeline and serving images, built with podman into its local store (containers/build-images.sh
# says how; out/images.json records what was built). podman's settings for these machines live in
# containers/containers.conf, never in the host's configuration.
export CONTAINERS_CONF ?= $(CURDIR)/containers/containers.conf
images: $(STAMP)
	containers/build-images.sh

# The container suite: the pipeline in the pipeline image (kfp.local's DockerRunner), the serving
# image's servers run as the manifests declare. Too slow for `make test`'s budget; CI runs both.
test-containers: images
	$(BIN)/pytest -q tests/containers --junitxml=out/test-results-containers.xml

# The images' build times and sizes, the pipeline in containers against the subprocess runner,
# and the predictor in its container against the host process (needs root and podman).
bench-containers: images
	$(BIN)/python benchmarks/bench_images.py
	$(BIN)/python benchmarks/bench_serving_container.py
	# the docs' tables of figures, regenerated from the results files just written
	$(BIN)/python benchmarks/doc_tables.py

# The store tests again on PostgreSQL: every test that touches the prediction log, drift results,
# feedback, outcomes, rollout observation or monitoring (marked `postgres`: tests/stores.py), each
# xdist worker with a throw-away server of its own (e2e/local_postgres.py).
test-postgres: $(STAMP)
	e2e/install-postgres.sh
	$(BIN)/pytest -q -n 2 --dist loadgroup -m postgres --junitxml=out/test-results-postgres.xml

# The rendered production and canary overlays' workloads run in podman as declared (Deployments
# through `podman kube play`, InferenceService components as KServe's pods), end to end against
# PostgreSQL and an `mlflow server` (e2e/run.py; docs/deployment.md). Exits 0 only when all of it
# worked; the last line is a JSON summary.
e2e: images
	e2e/install-postgres.sh
	$(BIN)/python -m e2e.run

# Checks by the standards' owners' own tools, installed from Debian's packages
# (e2e/install-validators.sh): promtool's unit tests of the PrometheusRule alerts.
test-validators: $(STAMP)
	e2e/install-validators.sh
	$(BIN)/pytest -q tests/validators --junitxml=out/test-results-validators.xml

# `make demo` once on a fresh state under the egress guard (tests/demo/): what it shows, that
# nothing leaves the machine and no raw identifier is left, and every page it wrote opened in
# headless Chromium (Debian's, installed by e2e/install-validators.sh; selenium in .venv-tools).
test-demo: $(STAMP) $(TOOLS_STAMP)
	e2e/install-validators.sh
	$(BIN)/pytest -q tests/demo --junitxml=out/test-results-demo.xml

# The second CI target: what runs the cluster's parts for real, too slow for `make test`.
test-cluster: test-postgres test-containers e2e test-validators test-demo

# Known vulnerabilities in the locked dependencies (pip-audit asks PyPI's advisory data; where it
# cannot be reached every dependency is reported as skipped, never as clean: docs/security.md).
audit: $(STAMP) $(TOOLS_STAMP)
	mkdir -p out
	$(TOOLS)/bin/pip-audit -r requirements.lock --no-deps --disable-pip --format json \
		--output out/pip-audit.json
	$(BIN)/python -c "from pathlib import Path; from hospital_mlops.governance.review import \
		pip_audit_check; c = pip_audit_check(Path('out/pip-audit.json')); print(f'pip-audit: {c.status}: {c.detail}')"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint components/Dockerfile
	$(BIN)/hadolint serving/Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy

compile: $(STAMP)
	$(BIN)/hmlops pipeline compile --out pipelines/compiled/data_pipeline.yaml
	$(BIN)/hmlops monitor pipeline compile --out pipelines/compiled/monitoring_pipeline.yaml
	$(BIN)/hmlops batch pipeline compile --out pipelines/compiled/batch_pipeline.yaml

# --append: the runs of these three are kept in their results files (a range or an "N of N
# runs" in the docs needs every run saved); the others keep their latest run.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pipeline.py --append
	$(BIN)/python benchmarks/bench_serving.py --append
	$(BIN)/python benchmarks/bench_explainer.py
	$(BIN)/python benchmarks/bench_drift.py
	$(BIN)/python benchmarks/bench_monitoring.py
	# the registry bench_serving built (its default --state)
	$(BIN)/python benchmarks/bench_cds.py --state $${TMPDIR:-/tmp}/hmlops-bench-serving
	$(BIN)/python benchmarks/bench_predictor_stages.py --append --state $${TMPDIR:-/tmp}/hmlops-bench-serving
	$(BIN)/python benchmarks/bench_load.py --state $${TMPDIR:-/tmp}/hmlops-bench-serving
	$(BIN)/python benchmarks/evaluate_use_case.py --use-case post_acute_at_admission --append
	# the docs' tables of figures, regenerated from the results files just written
	$(BIN)/python benchmarks/doc_tables.py

clean:
	rm -rf out .pytest_cache .mypy_cache
