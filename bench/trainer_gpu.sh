#!/usr/bin/env bash
# Trainer throughput on a CUDA machine: our loop against a bare PyTorch loop.
#
# Needs only this repository, python3 (3.11+) and an NVIDIA driver: it makes a
# virtualenv, installs torch (PyPI's Linux wheel is a CUDA build) and the few
# libraries the trainer core imports, then runs bench/trainer/run.py on cuda.
# A python3 that already has a CUDA torch is reused instead of downloading one.
#
#   bash bench/trainer_gpu.sh                 # 1M rows, 3 epochs x 3 rounds
#   bash bench/trainer_gpu.sh --batch-size 8192 --epochs 5
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${STREAMML_BENCH_VENV:-$ROOT/.cache/bench-gpu-venv}"
TORCH_VERSION="2.13.0"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 --version

if python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    python3 -m venv --system-site-packages "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check numpy pyarrow "pydantic>=2.6,<3" pyyaml
else
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "torch==$TORCH_VERSION" numpy pyarrow "pydantic>=2.6,<3" pyyaml
fi
"$VENV/bin/python" -c "import torch; assert torch.cuda.is_available(), 'torch ' + torch.__version__ + ' sees no GPU'; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

cd "$ROOT"
# One bare-loop epoch of 1M rows takes a few seconds on a GPU; 3 rounds of 3 epochs each for
# both loops, plus data generation, stay well under a minute once torch is installed.
exec timeout 540 "$VENV/bin/python" bench/trainer/run.py --device cuda --threads 8 "$@"
