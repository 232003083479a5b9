#!/usr/bin/env bash
# Issue 16 on a GPU machine, in one run of about 5 minutes (8 at most: every step has a timeout).
#
#   bash benchmarks/gpu.sh [OUTDIR]            # default OUTDIR: benchmarks/results/gpu-<date>
#
# 1. bench_overhead.py with the ResNet-50-shaped CNN (random weights, 3x224x224, batch 64) on cuda:
#    perturbx Occlusion 16/8, RISE 4,000 masks, LIME and KernelSHAP 1,000 samples (50 SLIC
#    superpixels) against Captum Occlusion, Lime and KernelShap and the RISE authors' recipe, each
#    runner in its own process after a warm-up, median of 3 (Captum Lime: one run); the figure is
#    "wall / floor": wall time over the model alone on the same rows in batches of 64.
# 2. bench_many.py with the demo CNN on 256 held-out 64x64 images, RISE 1,000 masks, batch 1024:
#    images/s of explain_many and explain_dataset against one image at a time; then 100 masks each (the
#    mean-score estimator), where one image alone cannot fill a batch.
# 3. gpu_options.py: the Torch adapter's channels_last, autocast and compile on the ResNet-50-shaped CNN,
#    RISE 2,000 masks: wall over the floor and agreement with the plain map; the same seed on the CPU.
#
# Needs a CUDA build of torch, captum, scikit-image and perturbx importable (pip install -e '.[dev]').
# THREADS (default 4) sets torch's CPU threads. Nothing here is a pass/fail check: read the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}
threads=${THREADS:-4}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
"$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this script is for a GPU machine'"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$py" -c "import torch, captum, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'captum', captum.__version__, 'numpy', numpy.__version__, 'cpus', __import__('os').cpu_count())"
} | tee "$out/env.txt"

timeout 300 "$py" benchmarks/bench_overhead.py --model resnet50 --device cuda --threads "$threads" --batch 64 \
    --rise-masks 4000 --repeats 3 --tmp "$out" \
    --runners perturbx_occlusion,captum_occlusion,perturbx_rise,rise_recipe,perturbx_lime,captum_lime,perturbx_kernelshap,captum_kernelshap \
    2>"$out/overhead.log" | tee "$out/overhead.md" || echo "bench_overhead failed or timed out: see $out/overhead.log"

timeout 100 "$py" benchmarks/bench_many.py --device cuda --threads "$threads" --batch 1024 --tmp "$out" \
    2>"$out/many.log" | tee "$out/many.md" || echo "bench_many failed or timed out: see $out/many.log"
timeout 60 "$py" benchmarks/bench_many.py --device cuda --threads "$threads" --batch 1024 --tmp "$out" \
    --n-masks 100 --control-variate mean --modes one,many 2>"$out/many100.log" | tee "$out/many100.md" \
    || echo "bench_many (100 masks) failed or timed out: see $out/many100.log"
timeout 120 "$py" benchmarks/gpu_options.py --device cuda --threads "$threads" --n-masks 2000 --repeats 2 \
    2>"$out/options.log" | tee "$out/options.md" || echo "gpu_options failed or timed out: see $out/options.log"
rm -f "$out"/*.npy
echo "results in $out"
