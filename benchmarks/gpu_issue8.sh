#!/usr/bin/env bash
# Issue 8's ResNet-18-shaped runs on a GPU machine (the device tool), every runner's forward on cuda.
# Usage: bash benchmarks/gpu_issue8.sh OUTDIR [IMAGES] [SEEDS] [RISE_IMAGES]
# Needs shap and lime importable and perturbx importable as a package (pip install -e ., or
# ln -s ../adapters perturbx/adapters with the repo root on PYTHONPATH).
set -u
out=${1:?output folder}; n=${2:-3}; seeds=${3:-1}; n_rise=${4:-2}
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/env.txt"
python3 -c "import torch, numpy, shap, lime, perturbx; print('torch', torch.__version__, 'numpy', numpy.__version__, 'shap', shap.__version__)" | tee -a "$out/env.txt"
q="python3 benchmarks/bench_queries.py --model resnet --device cuda --batch 256 --threads 8 --images $n --seeds $seeds"
timeout 40 python3 benchmarks/bench_coarse_to_fine.py --device cuda --batch 256 --threads 8 --images 0 \
    --resnet-images "$n" 2>&1 | tee "$out/coarse_to_fine.md"
timeout 30 $q --methods occlusion 2>&1 | tee "$out/queries_occlusion.md"
timeout 210 $q --methods kernelshap 2>&1 | tee "$out/queries_kernelshap.md"
timeout 100 $q --methods lime 2>&1 | tee "$out/queries_lime.md"
timeout 110 $q --methods rise --images "$n_rise" --seeds 1 2>&1 | tee "$out/queries_rise.md"
