#!/usr/bin/env bash
# The prepared GPU benchmark: one run (under 8 minutes) writes benchmarks/results/gpu-<device>.json and .md.
#   bash benchmarks/gpu.sh                 # CUDA device 0
#   bash benchmarks/gpu.sh --quick         # tiny sizes (checks the script)
# PYTHON=... picks the interpreter (default: .venv/bin/python when present, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
"$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')"
exec "$py" benchmarks/gpu.py --device "${DEVICE:-cuda}" "$@"
