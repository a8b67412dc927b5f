#!/usr/bin/env bash
# Installs molgen and everything it needs into the current Python (3.11 + pip is all it assumes).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install "torch==2.13.0"            # the CPU build; an unpinned torch pulls GBs of CUDA wheels
python -m pip install -e ".[dev]"
python -m pip install --no-deps "guacamol==0.5.5" # its metadata wants rdkit-pypi, which breaks modern rdkit
