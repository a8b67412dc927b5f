#!/usr/bin/env bash
# Quickstart command 1: install molgen, then run the main job on the bundled default: sample 100
# molecules from the bundled pretrained model (data/pretrained/moses-spcauchy-small.pt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
molgen sample -n 100
