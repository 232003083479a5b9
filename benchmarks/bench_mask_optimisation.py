"""Mask optimisation: autograd against zeroth-order, and perturbx against TorchRay, in one run.

On held-out images of the demo CNN (``make_shapes(n, random_state=DEMO_TEST_SEED)``, 64 x 64,
each image's true class as target), every runner explains the same images. Runners:

* ``extremal_autograd``: ``ExtremalPerturbation()`` (its defaults: 800 steps, SGD lr 0.01) on
  ``adapters.Torch(net)``;
* ``extremal_torchray_schedule``: the same with TorchRay's own area-weight schedule (300
  growing by 1.0035 a step) and zero-padded blurs, i.e. TorchRay's algorithm in perturbx;
* ``torchray``: TorchRay's ``extremal_perturbation`` itself (same areas and steps, lattice
  step and sigma scaled to 64 px as perturbx does; its blur stays 20 px, which its API does
  not expose), when ``torchray`` is importable (``--torchray PATH`` adds a source checkout);
* ``extremal_torchray_schedule_blur20``: the same with TorchRay's strongest blur of 20 px
  at 64 px (TorchRay does not scale it with the image);
* ``extremal_autograd_short``: the test suite's schedule (200 steps, learning rate 0.015);
* ``extremal_zeroth_order``: the same schedule with 4 antithetic pairs a step on a pure
  black box (``adapters.Callable`` over numpy batches, the same network behind it);
* ``meaningful_autograd`` / ``meaningful_zeroth_order``: ``MeaningfulPerturbation()``
  (500 steps, Adam lr 0.1) on probabilities, then the black-box settings.

Printed per runner (mean over the images): model queries, seconds, the step at which the
model term of the objective converged (its moving average stays within 5 % of its total
change from its final value) with the queries and seconds spent until then, the pointing
game (TorchRay's benchmark protocol: the saliency smoothed with a Gaussian of 0.09 of the
image side, its maximum within 15 px of the object at 224 px, i.e. 4.3 px at 64 px), the
IoU of the mask (> 0.5) with the object (extremal: the best of the three areas), and the
largest deviation of a mask's area from its target. Then the ratios that matter.

    python benchmarks/bench_mask_optimisation.py                   # 4 images
    python benchmarks/bench_mask_optimisation.py --images 10 --threads 2
    python benchmarks/bench_mask_optimisation.py --quick           # few steps, to check it runs
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

AREAS = (0.05, 0.1, 0.2)
SHORT = {"steps": 200, "learning_rate": 0.015}                  # the test suite's schedule
ZO_EXTREMAL = {"n_pairs": 4, **SHORT}                           # 2 * 4 * 3 areas * 200 = 4,800 queries an image
ZO_MEANINGFUL = {"steps": 300, "n_pairs": 4}                    # 2 * 4 * 300 = 2,400 queries an image


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """TorchRay's pointing-game protocol at the image's size (15 px at 224 px)."""
    side = saliency.shape[0]
    smooth = gaussian_filter(saliency.astype(np.float64), 0.09 * side)
    peak = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    return bool(distance_transform_edt(~mask)[peak] <= 15 * side / 224)


def iou(binary: np.ndarray, mask: np.ndarray) -> float:
    return float((binary & mask).sum() / max((binary | mask).sum(), 1))


def converged_step(curve: np.ndarray, tolerance: float = 0.05) -> int:
    """First step after which the smoothed curve stays within ``tolerance`` of its range from its end."""
    window = max(5, len(curve) // 20)
    smooth = np.convolve(curve, np.ones(window) / window, mode="valid")
    span = np.ptp(smooth)
    if span == 0:
        return 1
    outside = np.nonzero(np.abs(smooth - smooth[-1]) > tolerance * span)[0]
    return int(outside[-1] + 1 + window) if outside.size else window


def runners(args):
    """name -> function(net, image, label) -> dict of results."""
    import torch

    from perturbx.adapters import Callable, Torch
    from perturbx.explainers.extremal import ExtremalPerturbation
    from perturbx.explainers.meaningful import MeaningfulPerturbation

    scale = 0.05 if args.quick else 1.0
    steps = {k: max(4, int(v * scale)) for k, v in {"ep": 800, "mp": 500, "short": SHORT["steps"],
                                                     "mp_zo": ZO_MEANINGFUL["steps"]}.items()}

    def black_box(net, probs: bool):
        def predict(batch: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                out = net(torch.as_tensor(batch))
                return (torch.softmax(out, dim=1) if probs else out).numpy()
        return Callable(predict, batch_size=1024)

    def extremal(explainer, adapter_of):
        def run(net, x, label):
            e = explainer.explain(adapter_of(net), x, target=label)
            return {"saliency": e.attributions, "masks": e.masks, "mask_areas": e.mask_areas, "queries": e.n_queries,
                    "seconds": e.seconds, "curve": e.model_term.mean(axis=1), "steps": e.steps_done}
        return run

    def meaningful(explainer, adapter_of):
        def run(net, x, label):
            e = explainer.explain(adapter_of(net), x, target=label)
            return {"saliency": e.attributions, "masks": e.attributions[None], "queries": e.n_queries,
                    "seconds": e.seconds, "curve": e.model_term, "steps": e.steps_done}
        return run

    torchray_schedule = (300.0, 300.0 * 1.0035 ** (steps["ep"] - 1))
    short = {**SHORT, "steps": steps["short"]}
    out = {
        "extremal_autograd": extremal(ExtremalPerturbation(AREAS, steps=steps["ep"]), Torch),
        "extremal_autograd_short": extremal(ExtremalPerturbation(AREAS, **short), Torch),
        "extremal_torchray_schedule": extremal(
            ExtremalPerturbation(AREAS, steps=steps["ep"], area_weight=torchray_schedule, blur_padding="constant"),
            Torch),
        "extremal_torchray_schedule_blur20": extremal(
            ExtremalPerturbation(AREAS, steps=steps["ep"], area_weight=torchray_schedule, blur_padding="constant",
                                 max_blur=20 * 224 / 64), Torch),
        "extremal_zeroth_order": extremal(
            ExtremalPerturbation(AREAS, **{**ZO_EXTREMAL, **short}, random_state=0),
            lambda net: black_box(net, probs=False)),
        "meaningful_autograd": meaningful(MeaningfulPerturbation(steps=steps["mp"]),
                                          lambda net: Torch(net, output="probs")),
        "meaningful_zeroth_order": meaningful(
            MeaningfulPerturbation(steps=steps["mp_zo"], n_pairs=ZO_MEANINGFUL["n_pairs"], random_state=0),
            lambda net: black_box(net, probs=True)),
    }
    torchray = torchray_runner(steps["ep"])
    if torchray is not None:
        out["torchray"] = torchray
    return out


def torchray_runner(steps: int):
    try:
        import torch
        from torchray.attribution.extremal_perturbation import extremal_perturbation
    except ImportError:
        print("torchray not importable: its runner is skipped (pip install torchray, or --torchray PATH)")
        return None

    def run(net, x, label):
        start = time.perf_counter()
        masks, hist = extremal_perturbation(net, torch.as_tensor(x)[None], label, areas=list(AREAS),
                                            max_iter=steps, step=2, sigma=21 * 64 / 224)
        seconds = time.perf_counter() - start
        for p in net.parameters():          # TorchRay leaves the weights frozen
            p.requires_grad_(True)
        m = masks[:, 0].numpy()
        return {"saliency": m.sum(axis=0), "masks": m, "mask_areas": m.mean(axis=(1, 2)), "queries": len(AREAS) * steps,
                "seconds": seconds, "curve": -hist[:, 0].numpy().mean(axis=0), "steps": steps}
    return run


def summarise(name: str, results: list[dict], gt: np.ndarray) -> dict:
    conv = [converged_step(r["curve"]) for r in results]
    per_step_q = [(r["queries"] - 1) / max(r["steps"], 1) for r in results]
    row = {
        "runner": name,
        "queries": np.mean([r["queries"] for r in results]),
        "seconds": np.mean([r["seconds"] for r in results]),
        "conv_step": np.mean(conv),
        "conv_queries": np.mean([c * q for c, q in zip(conv, per_step_q, strict=True)]),
        "conv_seconds": np.mean([r["seconds"] * c / max(r["steps"], 1) for r, c in zip(results, conv, strict=True)]),
        "pointing": np.mean([pointing_hit(r["saliency"], m) for r, m in zip(results, gt, strict=True)]),
        "iou": np.mean([max(iou(k > 0.5, m) for k in r["masks"]) for r, m in zip(results, gt, strict=True)]),
    }
    if "mask_areas" in results[0]:
        row["area_dev_pp"] = 100 * max(np.abs(np.asarray(r["mask_areas"]) - AREAS).max() for r in results)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="5 %% of the steps, to check that it runs")
    parser.add_argument("--torchray", default=None, help="path of a TorchRay source checkout to import")
    parser.add_argument("--only", default=None, help="comma-separated runner names")
    args = parser.parse_args()
    if args.torchray:
        sys.path.insert(0, args.torchray)
    import torch

    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model

    torch.set_num_threads(args.threads)
    net = load_demo_model().eval()
    data = make_shapes(args.images, random_state=DEMO_TEST_SEED)
    table = []
    for name, run in runners(args).items():
        if args.only and name not in args.only.split(","):
            continue
        run(net, data.images[0], int(data.labels[0]))                     # warm-up
        results = [run(net, x, int(y)) for x, y in zip(data.images, data.labels, strict=True)]
        table.append(summarise(name, results, data.masks))
        print_row(table[-1], flush=True)
    print_ratios({r["runner"]: r for r in table})


def print_row(row: dict, flush: bool = False) -> None:
    area = f"{row['area_dev_pp']:5.2f}" if "area_dev_pp" in row else "    -"
    print(f"{row['runner']:<28} queries {row['queries']:8.0f}  seconds {row['seconds']:7.2f}  converged at step "
          f"{row['conv_step']:5.0f} ({row['conv_queries']:7.0f} queries, {row['conv_seconds']:6.2f} s)  pointing "
          f"{row['pointing']:.2f}  IoU {row['iou']:.3f}  max area dev {area} pp", flush=flush)


def print_ratios(rows: dict) -> None:
    def ratio(a: str, b: str, key: str) -> None:
        if a in rows and b in rows and rows[b][key]:
            print(f"{key:>12}: {a} / {b} = {rows[a][key] / rows[b][key]:.2f}")
    print("ratios")
    for a, b in (("extremal_zeroth_order", "extremal_autograd_short"), ("extremal_zeroth_order", "extremal_autograd"),
                 ("meaningful_zeroth_order", "meaningful_autograd"), ("extremal_autograd_short", "extremal_autograd")):
        for key in ("iou", "pointing", "queries", "seconds", "conv_queries", "conv_seconds"):
            ratio(a, b, key)
    for key in ("seconds", "iou", "pointing"):
        ratio("extremal_torchray_schedule", "torchray", key)
        ratio("extremal_autograd", "torchray", key)
        ratio("extremal_autograd", "extremal_torchray_schedule", key)
        ratio("extremal_torchray_schedule_blur20", "torchray", key)


if __name__ == "__main__":
    main()
