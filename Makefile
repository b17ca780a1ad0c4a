# Interpretability Workbench. `make demo` and `make test` work on a fresh machine:
# each creates .venv when missing and installs the project into it.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
# The PyTorch build to install when the venv has none (override for another CUDA/CPU build).
TORCH   ?= torch==2.13.0
# EK-FAC influence (attribution): installed without its declared torchvision (see pyproject.toml)
KRONFLUENCE := kronfluence==1.0.1
RUNS    ?= runs
# pytest-xdist workers of `make test` (one thread each; a test file stays on one worker)
TEST_WORKERS ?= 2
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test test-slow demo train-default lint bench sweep clean docs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "$(KRONFLUENCE)"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile tests
	$(PY) -m pytest -q --doctest-modules workbench circuits probe beliefs icl sweep attribution features app/runs.py \
		app/compute.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

test-slow: install
	$(PY) -m pytest -q -m slow tests

# The documentation site (mkdocs.yml, docs/) into site/: open site/index.html, offline.
# Warnings are errors: a broken link or anchor, a page out of the nav, a module on no API page,
# a docstring griffe cannot read. (Not --quiet: it hides the warnings that --strict counts.)
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

lint: install
	$(VENV)/bin/ruff check workbench circuits probe beliefs icl sweep attribution features tests bench app
	$(VENV)/bin/lint-imports

# The demo uses the trained `default` model that ships in datasets/models/default (made by
# `make train-default`); it needs only the world corpus, which builds in seconds.
demo: install
	@test -f $(RUNS)/world/corpus.json || $(VENV)/bin/workbench world build --out $(RUNS)/world
	@test -d $(RUNS)/demo || $(PY) -m workbench.models.shipped install --run $(RUNS)/demo
	$(VENV)/bin/workbench eval --model $(RUNS)/demo
	$(VENV)/bin/workbench info --model $(RUNS)/demo
	@test -f $(RUNS)/demo/acts_val.h5 || $(VENV)/bin/workbench cache --model $(RUNS)/demo \
		--corpus $(RUNS)/world --split val --hooks 'blocks.*.hook_resid_post' --chunk \
		--out $(RUNS)/demo/acts_val.h5
	@echo
	@echo "corpus:      $(RUNS)/world   (corpus.json, tokenizer.json, eval/)"
	@echo "model:       $(RUNS)/demo    (checkpoints/, metrics.jsonl, training.fig.json)"
	@echo "evaluation:  $(RUNS)/demo/eval.json"
	@echo "activations: $(RUNS)/demo/acts_val.h5  (residual stream of the val split, all layers)"
	@echo
	$(VENV)/bin/workbench app --runs $(RUNS)

# Retrain the shipped `default` model from the seeded world (about 15 minutes on 2 CPU cores)
# and replace datasets/models/default with it.
train-default: install
	@test -f $(RUNS)/world/corpus.json || $(VENV)/bin/workbench world build --out $(RUNS)/world
	@resume=$$(test -d $(RUNS)/default && echo --resume); \
	$(VENV)/bin/workbench train --preset default --corpus $(RUNS)/world --run $(RUNS)/default \
		--seed 0 $$resume
	$(PY) -m workbench.models.shipped export --run $(RUNS)/default --overwrite

bench: install
	$(PY) bench/train_throughput.py
	$(PY) bench/cache_throughput.py
	$(PY) bench/head_scores.py
	$(PY) bench/probe_sweep.py
	$(PY) bench/app_latency.py --runs $(RUNS)
	$(PY) bench/causal_trace.py
	$(PY) bench/real_scale.py --models gpt2,pythia --threads 1
	$(PY) bench/sweep_throughput.py
	@test -f $(RUNS)/world/corpus.json || $(VENV)/bin/workbench world build --out $(RUNS)/world
	$(PY) bench/influence.py --corpus $(RUNS)/world

# The `cpu` scaling family (six sizes, 50k to 3.2M non-embedding parameters): plan, train
# (resumable) and analyze into $(RUNS)/cpu, two one-thread local jobs at once (submitit's
# local executor); 9 min on an idle 2-core machine (5 min training, 3.5 min battery; 23 min on
# a slower one; docs/results.md). Run again to continue.
sweep: install
	$(VENV)/bin/workbench sweep plan cpu --out $(RUNS)/cpu
	$(VENV)/bin/workbench sweep run $(RUNS)/cpu --jobs 2
	$(VENV)/bin/workbench sweep analyze $(RUNS)/cpu --jobs 2

clean:
	rm -rf $(RUNS)/demo $(RUNS)/world
