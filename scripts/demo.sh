#!/usr/bin/env bash
# Quickstart command 1: install molgen, then run the main job on the bundled default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
molgen --help
molgen latent-demo --dim 64
