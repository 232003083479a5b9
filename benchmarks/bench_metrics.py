"""perturbx's metrics against Quantus 0.6 on the same metrics, model, images and maps, in one run.

Model: the small CNN of tests/quantus/nets.py (random init, seed 0) on one-channel 32 x 32
images (make_shapes, channels averaged: Quantus's ROAD runs on one-channel images only),
8 images, random maps (seed 0). Quantus runs in its venv (tests/quantus/setup_quantus.sh),
on the whole batch at once (its ``batch_size=64``); perturbx image by image, each
metric's queries batched through a ``Torch`` adapter of batch size 64. Both on this
machine's CPU with one torch thread. Wall-clock seconds of one run each.

Usage:  python benchmarks/bench_metrics.py [--out benchmarks/results/metrics.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "quantus"))
from nets import make_net, weights_of  # noqa: E402

from perturbx import metrics as M  # noqa: E402, N812
from perturbx.adapters import Torch  # noqa: E402
from perturbx.datasets import make_shapes  # noqa: E402

SIZE, N = 32, 8
QUANTUS = r'''
import json, sys, time, warnings
import numpy as np, quantus, torch
sys.path.insert(0, sys.argv[3])
from nets import make_net
warnings.filterwarnings("ignore"); torch.set_num_threads(1)
d = dict(np.load(sys.argv[1]))
net = make_net({k[2:]: v for k, v in d.items() if k.startswith("w:")}, size=int(d["size"]))
kw = dict(model=net, x_batch=d["x"], y_batch=d["y"], a_batch=d["a"][:, None], softmax=False)
c = dict(normalise=False, disable_warnings=True, display_progressbar=False)
metrics = {
    "deletion (pixel flipping)": quantus.PixelFlipping(**c, features_in_step=32, perturb_baseline=0.0),
    "faithfulness_correlation": quantus.FaithfulnessCorrelation(**c, nr_runs=100, subset_size=51,
                                                                perturb_baseline=0.0),
    "faithfulness_estimate": quantus.FaithfulnessEstimate(**c, features_in_step=32, perturb_baseline=0.0),
    "road": quantus.ROAD(**c, noise=0.01),
    "irof": quantus.IROF(**c, perturb_baseline=0.0),
}
out = {}
for name, metric in metrics.items():
    t = time.perf_counter()
    metric(**{**kw, "softmax": name == "irof"})
    out[name] = time.perf_counter() - t
json.dump(out, open(sys.argv[2], "w"))
'''


def perturbx_times(net, x, y, a) -> dict[str, float]:
    model, probs = Torch(net, batch_size=64), Torch(net, batch_size=64, output="probs")
    runs = {
        "deletion (pixel flipping)": lambda i: M.deletion(model, x[i], a[i], int(y[i]), step=32, progress=False),
        "faithfulness_correlation": lambda i: M.faithfulness_correlation(model, x[i], a[i], int(y[i]), n_subsets=100,
                                                                         subset_size=51, progress=False),
        "faithfulness_estimate": lambda i: M.faithfulness_estimate(model, x[i], a[i], int(y[i]), step=32,
                                                                   progress=False),
        "road": lambda i: M.road(model, x[i], a[i], int(y[i]), noise=0.01, progress=False),
        "irof": lambda i: M.irof(probs, x[i], a[i], int(y[i]), baseline=0.0, progress=False),
    }
    out = {}
    for name, run in runs.items():
        t = time.perf_counter()
        for i in range(len(x)):
            run(i)
        out[name] = time.perf_counter() - t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "metrics.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = make_shapes(N, size=SIZE, random_state=0)
    x = data.images.mean(axis=1, keepdims=True).astype(np.float32)
    net = make_net(seed=0, size=SIZE)
    with torch.no_grad():
        y = net(torch.as_tensor(x)).argmax(1).numpy()
    a = np.random.default_rng(0).normal(size=(N, SIZE, SIZE))
    python = subprocess.run(["bash", str(ROOT / "tests" / "quantus" / "setup_quantus.sh")], capture_output=True,
                            text=True, check=True).stdout.strip().splitlines()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", x=x, y=y, a=a, size=SIZE, **{f"w:{k}": v for k, v in weights_of(net).items()})
        subprocess.run([python, "-c", QUANTUS, str(Path(tmp) / "in.npz"), str(Path(tmp) / "q.json"),
                        str(ROOT / "tests" / "quantus")], check=True)
        q = json.loads((Path(tmp) / "q.json").read_text())
    p = perturbx_times(net, x, y, a)
    lines = [
        "# Metrics: perturbx against Quantus 0.6", "",
        f"Machine: {platform.processor() or platform.machine()}, {platform.system()}, CPU, torch threads 1 "
        f"(2 cores shared with other work). Command: `python benchmarks/bench_metrics.py`. One run.", "",
        f"{N} one-channel {SIZE}x{SIZE} images (make_shapes, seed 0, channels averaged), the CNN of "
        "tests/quantus/nets.py (seed 0), random maps (seed 0); same settings on both sides (deletion and estimate: "
        "32 pixels per step; correlation: 100 subsets of 51 pixels; ROAD: 50 percentages, noise 0.01; IROF: "
        "SLIC, baseline 0). Quantus gets the 8 images as one batch; perturbx runs image by image.", "",
        "| metric | perturbx (s) | Quantus (s) | Quantus / perturbx |", "|---|---:|---:|---:|"]
    for name in p:
        lines.append(f"| {name} | {p[name]:.3f} | {q[name]:.3f} | {q[name] / p[name]:.2f}x |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
