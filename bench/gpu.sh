#!/usr/bin/env bash
# The bench on the lent GPU machine: Python 3.12 and torch there, no fastai, no albumentations,
# no network. BENCHMARKS.md has the whole procedure; in short, on the development machine:
#
#   mkdir -p .carry && cp -r ../shared/device/wheels-py312 ../shared/device/wheels-py312-albumentations \
#       ../shared/device/wheels-peers ../shared/data/cifar10-jpeg.tgz .carry/
#
# then through the device tool, each with carry [".carry"] (each call is at most 10 minutes):
#
#   bash bench/gpu.sh check        every row for 1 epoch, 1 seed: installs, unpacks, decodes, proves each row
#   bash bench/gpu.sh [ARGS...]    the bench (ARGS go to bench/bench.py, e.g. --rows ours --profile)
#   bash bench/gpu.sh reference    one 24-epoch recipe run and the reference checkpoint from it
#
# Everything it writes is under $OUT: results/, check/, runs/, models/.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?run this through the device tool, which sets OUT}"

# The installed wheels and the decoded data go under the home folder, which the next call finds
# while the machine stays warm (.carry/ is replaced at every call); the data under data.py's
# default cache, ~/.cache/cifar10-fast.
SITE="$HOME/.cache/cifar10-fast-site-py312"
if [ ! -f "$SITE/.installed" ]; then
  python3 -m pip install -q --no-index --no-deps --target "$SITE" \
    .carry/wheels-py312/*.whl .carry/wheels-py312-albumentations/*.whl .carry/wheels-peers/*.whl
  touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export CIFAR10_DATA=.carry/cifar10-jpeg.tgz  # as given: the results record it
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

case "${1:-}" in
  check)
    # One epoch that fails at any host-GPU synchronisation inside its training batches.
    python3 train_fastai.py --epochs 1 --sync-debug --out "$OUT/check/runs"
    python3 bench/bench.py --epochs 1 --seeds 1 --baseline-seeds 1 --profile --out "$OUT/check" ;;
  reference)
    python3 train_fastai.py --epochs 24 --out "$OUT/runs" --name reference
    python3 bench/reference.py "$OUT"/runs/*-reference --models "$OUT/models" ;;
  *)
    python3 bench/bench.py --out "$OUT/results" "$@" ;;
esac
