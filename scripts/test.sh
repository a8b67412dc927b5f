#!/usr/bin/env bash
# Quickstart command 2: install, lint, and run the test suite (CPU, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m ruff check molgen cli.py tests benchmarks scripts
python -m pytest -n 2 "$@"   # exit 5 (no tests collected) fails this script like any other error
