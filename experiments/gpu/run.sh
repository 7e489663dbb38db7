#!/usr/bin/env bash
# One command for a machine with one GPU and 16 cores (the device machine's H200):
#   bash experiments/gpu/run.sh OUT_DIR            # full plan, ~8 minutes: see experiments/gpu/README.md
#   bash experiments/gpu/run.sh OUT_DIR --smoke    # the same plan on tiny synthetic data on a CPU (tests)
#   bash experiments/gpu/run.sh OUT_DIR --dry-run  # print the commands only
# The logic is in plan.py (standard library only, so it runs before the carried wheels are installed). PYTHON picks
# the interpreter (default python3: on the GPU machine the one that holds PyTorch; here the active venv's).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
exec "${PYTHON:-python3}" experiments/gpu/plan.py "$@"
