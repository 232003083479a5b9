"""The Torch adapter's deployment options on a GPU: the same map, and what each does to the wall time.

The ResNet-50-shaped CNN (random weights, seeded) on the first 224x224 image of the built-in shapes,
RISE with --n-masks masks (seed 0, batch --batch), the logit of the class the plain model gives it. For
each option (``plain``, ``channels_last``, ``autocast=bfloat16``, ``autocast=float16``, ``compile``) on
--device, after one warm-up explanation (which also compiles): wall s of one explanation (median of
--repeats), the model-only floor (the same adapter on the same number of rows in batches of --batch), and
agreement with the plain fp32 map (Pearson, and max |difference| / max |plain map|). A last row explains the
same image on the CPU with the same seed (``--cpu-masks`` masks against as many on the device), to show
that the device changes nothing but rounding.

    python benchmarks/gpu_options.py --device cuda
    python benchmarks/gpu_options.py --device cpu --n-masks 64 --cpu-masks 0 --options plain,channels_last
"""

from __future__ import annotations

import argparse
import time

import numpy as np

OPTIONS = {
    "plain": {},
    "channels_last": {"channels_last": True},
    "autocast=bfloat16": {"autocast": "bfloat16"},
    "autocast=float16": {"autocast": "float16"},
    "compile": {"compile": True},
}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _floor(adapter, x: np.ndarray, rows: int, batch: int, device: str) -> float:
    """Median of 3: the adapter alone on ``rows`` copies of x, in batches of ``batch``."""
    xs = np.repeat(x[None], batch, axis=0)
    walls = []
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        for lo in range(0, rows, batch):
            adapter.predict(xs[: min(batch, rows - lo)])
        _sync(device)
        walls.append(time.perf_counter() - start)
    return float(np.median(walls))


def _timed(explainer, adapter, x: np.ndarray, target: int, repeats: int, device: str):
    explanation = explainer.explain(adapter, x, target=target)        # warm-up (and compilation)
    walls = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        explanation = explainer.explain(adapter, x, target=target)
        _sync(device)
        walls.append(time.perf_counter() - start)
    return explanation, float(np.median(walls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n-masks", type=int, default=4000)
    ap.add_argument("--cpu-masks", type=int, default=500, help="0 skips the CPU row")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--options", default=",".join(OPTIONS))
    ns = ap.parse_args()

    import torch

    import perturbx
    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes
    from perturbx.models.resnet50 import resnet50_shaped

    torch.set_num_threads(ns.threads)
    net = resnet50_shaped(1000, random_state=0)
    x = make_shapes(1, size=224, random_state=0).images[0]
    plain = Torch(net, device=ns.device, batch_size=ns.batch)
    target = int(np.argmax(plain.predict(x[None])[0]))
    rise = perturbx.RISE(n_masks=ns.n_masks, random_state=0)
    print(f"ResNet-50-shaped CNN, 224x224, RISE {ns.n_masks} masks, batch {ns.batch}, device {ns.device}, "
          f"torch {torch.__version__}, target {target}\n")
    print("| option | wall s | model-only floor s | wall / floor | Pearson with plain | max abs diff / max abs plain |")
    print("|---|---|---|---|---|---|")
    reference = None
    for name in ns.options.split(","):
        adapter = Torch(net, device=ns.device, batch_size=ns.batch, **OPTIONS[name])
        explanation, wall = _timed(rise, adapter, x, target, ns.repeats, ns.device)
        floor = _floor(adapter, x, explanation.n_queries, ns.batch, ns.device)
        a = explanation.attributions
        reference = a if reference is None else reference
        pearson = float(np.corrcoef(a.ravel(), reference.ravel())[0, 1])
        rel = float(np.abs(a - reference).max() / np.abs(reference).max())
        print(f"| {name} | {wall:.3f} | {floor:.3f} | {wall / floor:.3f} | {pearson:.5f} | {rel:.2e} |", flush=True)
    if ns.cpu_masks and ns.device != "cpu":
        small = perturbx.RISE(n_masks=ns.cpu_masks, random_state=0)
        on_device = small.explain(plain, x, target=target).attributions
        on_cpu = small.explain(Torch(net, device="cpu", batch_size=ns.batch), x, target=target).attributions
        rel = float(np.abs(on_device - on_cpu).max() / np.abs(on_cpu).max())
        print(f"\nRISE {ns.cpu_masks} masks, same seed, {ns.device} against cpu: Pearson "
              f"{np.corrcoef(on_device.ravel(), on_cpu.ravel())[0, 1]:.6f}, max abs diff / max abs {rel:.2e}")


if __name__ == "__main__":
    main()
