"""Many images: images per second of ``explain_many`` and ``explain_dataset`` against one image at a time.

The demo CNN on the first --n-images held-out 64x64 images (``make_shapes(n, random_state=DEMO_TEST_SEED)``),
RISE with --n-masks masks (seed 0), each image's top class. Modes, each in its own process after a
warm-up on 4 images, timed once over all images:

* ``one``: ``RISE.explain`` image after image;
* ``many``: one ``RISE.explain_many`` over all images (their masks share model batches);
* ``dataset``: ``explain_dataset(..., images_per_task=--images-per-task)`` into a fresh folder, in
  this process (``n_jobs=1``), results written as they finish.

Printed: images/s, speed-up over ``one``, the model-only ceiling (the model alone on the same number
of rows in batches of --batch, images/s), peak RSS, and whether every map equals ``one``'s.

    python benchmarks/bench_many.py                      # 256 images, RISE 1,000 masks, CPU, 2 threads
    python benchmarks/bench_many.py --device cuda        # on a GPU
    python benchmarks/bench_many.py --n-masks 100 --batch 512
    python benchmarks/bench_many.py --n-images 16 --n-masks 64   # quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _memory import peak_rss_mb

MODES = ("one", "many", "dataset")


def setup(ns):
    import torch

    import perturbx
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model

    torch.set_num_threads(ns.threads)
    net = load_demo_model().to(ns.device).eval()
    images = make_shapes(ns.n_images, random_state=DEMO_TEST_SEED).images
    adapter = perturbx.adapters.Torch(net, device=ns.device, batch_size=ns.batch)
    return torch, net, images, adapter, perturbx.RISE(n_masks=ns.n_masks, random_state=0,
                                                             control_variate=ns.control_variate)


def sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def explain(mode: str, rise, adapter, images: np.ndarray, per_task: int) -> np.ndarray:
    """Maps ``(N, H, W)`` of every image by ``mode``."""
    if mode == "one":
        return np.stack([rise.explain(adapter, x).attributions for x in images])
    if mode == "many":
        return np.stack([e.attributions for e in rise.explain_many(adapter, images)])
    from perturbx.dataset_runs import explain_dataset

    with tempfile.TemporaryDirectory() as out:
        results = explain_dataset(rise, adapter, images, out, images_per_task=per_task, progress=False)
        return np.stack([e.attributions for e in results])


def ceiling(torch, net, images: np.ndarray, n_rows: int, batch: int, device: str) -> float:
    """Seconds the model alone takes for ``n_rows`` rows in batches of ``batch``."""
    full = torch.as_tensor(np.resize(images, (batch, *images.shape[1:])), device=device)
    with torch.inference_mode():
        net(full)
        sync(torch, device)
        t0 = time.perf_counter()
        for _ in range(n_rows // batch):
            net(full)
        if n_rows % batch:
            net(full[:n_rows % batch])
        sync(torch, device)
    return time.perf_counter() - t0


def child(ns) -> None:
    torch, net, images, adapter, rise = setup(ns)
    explain(ns.child, rise, adapter, images[:4], ns.images_per_task)  # warm-up
    before = adapter.n_queries
    t0 = time.perf_counter()
    maps = explain(ns.child, rise, adapter, images, ns.images_per_task)
    sync(torch, ns.device)
    wall = time.perf_counter() - t0
    rows = adapter.n_queries - before
    peak = peak_rss_mb()
    np.save(ns.out, maps)
    print(json.dumps({"mode": ns.child, "wall": wall, "rows": rows, "peak_rss": peak,
                      "floor": ceiling(torch, net, images, rows, ns.batch, ns.device)}))


def spawn(mode: str, ns) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--n-images", str(ns.n_images), "--n-masks", str(ns.n_masks),
           "--batch", str(ns.batch), "--threads", str(ns.threads), "--device", ns.device,
           "--images-per-task", str(ns.images_per_task), "--control-variate", ns.control_variate,
           "--out", os.path.join(ns.tmp, f"bench_many_{mode}.npy")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"mode {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--n-masks", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images-per-task", type=int, default=8)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--control-variate", default="regression", help="RISE's estimator (its default: regression)")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--child", choices=MODES)
    ap.add_argument("--out", default="/tmp/bench_many.npy")
    ns = ap.parse_args()
    if ns.child:
        child(ns)
        return
    print(f"demo CNN, {ns.n_images} held-out 64x64 images, RISE {ns.n_masks} masks ({ns.control_variate}), "
          f"batch {ns.batch}, {ns.threads} threads, device {ns.device}; "
          f"load average before {os.getloadavg()[0]:.2f}\n", flush=True)
    rows = {m: spawn(m, ns) for m in ns.modes.split(",")}
    print(f"load average after {os.getloadavg()[0]:.2f}\n")
    print("| mode | images/s | speed-up over one | model-only ceiling images/s | wall / model-only "
          "| peak RSS MB | maps equal one's |")
    print("|---|---|---|---|---|---|---|")
    ref = np.load(os.path.join(ns.tmp, "bench_many_one.npy")) if "one" in rows else None
    for m, r in rows.items():
        rate = ns.n_images / r["wall"]
        up = "" if "one" not in rows else f"{rate / (ns.n_images / rows['one']['wall']):.2f}x"
        same = "" if ref is None else str(bool(np.array_equal(np.load(os.path.join(ns.tmp, f"bench_many_{m}.npy")),
                                                               ref)))
        print(f"| {m}{' (' + str(ns.images_per_task) + ' per task)' if m == 'dataset' else ''} | {rate:.2f} | {up} | "
              f"{ns.n_images / r['floor']:.2f} | {r['wall'] / r['floor']:.3f} | {r['peak_rss']:.0f} | {same} |")


if __name__ == "__main__":
    main()
