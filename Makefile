# Two entry points, both safe on a fresh machine:
#   make run   – create .venv, install everything, run the daemon on config.toml
#                (indexes docs/ into the embedded Postgres and keeps it live)
#   make test  – the same install, then ruff, mypy and the test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install bytecode run test lint bench bench-quick bench-cocoindex
install: $(VENV)/.installed

# torch is installed first, pinned to the CPU build that is on this machine's disk: the
# package itself only asks for torch>=2.2, which with no torch present would pull a
# multi-GB CUDA build. The editable install is a plain path entry (compat mode): setuptools'
# default import-hook finder costs every process, each `cocod status` included, ~14 ms.
$(VENV)/.installed: pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	touch $@

# The compiled helper (cocod/_native.c, see cocod/native.py): pip builds it with the
# install; this rebuilds it in place when its source changes after that.
$(VENV)/.native: $(VENV)/.installed cocod/_native.c setup.py
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

# pip compiles what it installs, but not an editable tree, and where PYTHONDONTWRITEBYTECODE
# is set (containers, CI) no import ever writes a .pyc: every `cocod` process recompiled
# each module it imports (measured: 0.3 s of each fresh update process of
# bench/scale_probe.py). Run on each use, as the tree changes; up to date, it costs a
# tenth of a second.
bytecode: install $(VENV)/.native
	$(BIN)/python -m compileall -q cocod

run: bytecode
	$(BIN)/cocod serve --config config.toml

lint: bytecode
	$(BIN)/ruff check cocod tests bench examples
	$(BIN)/ruff format --check cocod tests bench examples
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

bench: bytecode
	$(BIN)/python bench/run.py

bench-quick: bytecode
	$(BIN)/python bench/run.py --quick

bench-cocoindex:
	bash bench/setup_cocoindex_venv.sh
