#!/usr/bin/env bash
# The whole train-step benchmark on one GPU, in a few minutes. Run from the repository
# root in an environment with a CUDA build of jax (pip install -e '.[train]' 'jax[cuda12]'):
#
#   bash benchmarks/gpu.sh [OUT_DIR]
#
# Writes OUT_DIR/bench_gpu.json, bench_gpu.png and bench_gpu.txt (the stdout table).
set -euo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
python -c 'import jax; d = jax.devices()[0]; print("device:", d.platform, d.device_kind); assert d.platform == "gpu", "no GPU visible to jax"'
python -m crl_jax.bench --config=configs/xdomain.py --steps=30 --warmup=5 \
    --sweep_batch=32,64,128,256,512,1024 --sweep_kappa=1,25,75,125,175 \
    --sweep_attributes=9,40,1000 --sweep_classes=2,10,55,200 \
    --json="$out/bench_gpu.json" --plot="$out/bench_gpu.png" | tee "$out/bench_gpu.txt"
