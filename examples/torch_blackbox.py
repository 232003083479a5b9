"""Explain a PyTorch classifier with every black-box method of perturbx.

The model is the built-in demo CNN (trained once on synthetic shapes, then cached); the
image is a held-out synthetic shape whose object mask is known, so each map can be checked
against it. Each method is configured in ``__init__`` and run with ``explain(model, x)``;
the maps go into one figure.

Run: ``python examples/torch_blackbox.py [OUT_DIR]`` (the first run also trains the demo CNN,
about 30 s on a 2-core CPU).
"""
# requires: torch, matplotlib

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

import perturbx
from perturbx.adapters import Torch
from perturbx.datasets import make_shapes
from perturbx.metrics import pointing_game
from perturbx.models import load_demo_model


def explainers() -> dict[str, perturbx.Explainer]:
    """Every black-box method, at settings for a 64 x 64 image (2,000 model queries or fewer each).

    LIME, KernelSHAP and Shapley sampling hide superpixels with black (``baseline=0.0``), as
    occlusion and RISE hide pixels: the default ``"mean"`` fills a superpixel with its own mean
    colour, which leaves these flat-coloured objects in place (see ``perturbx demo``'s report).
    The mask-optimisation methods (``ExtremalPerturbation``, ``MeaningfulPerturbation``) also
    work on any model but need hundreds of steps: see README.md.
    """
    return {
        "Occlusion": perturbx.Occlusion(window=(12, 12), stride=(4, 4)),
        "CoarseToFineOcclusion": perturbx.CoarseToFineOcclusion(window=(12, 12), stride=(4, 4)),
        "RISE": perturbx.RISE(n_masks=2000, grid_size=7, random_state=0),
        "LIME": perturbx.LIME(n_samples=1000, baseline=0.0, random_state=0),
        "KernelSHAP": perturbx.KernelSHAP(n_samples=1000, baseline=0.0, random_state=0),
        "ShapleySampling": perturbx.ShapleySampling(n_samples=1000, baseline=0.0, random_state=0),
    }


def main(out: Path) -> None:
    torch.set_num_threads(perturbx.dataset_runs.default_threads())  # $PERTURBX_THREADS, else half the cores
    net = load_demo_model()                      # cached in ~/.cache/perturbx (see README, "Quick start")
    data = make_shapes(1, random_state=2024)     # held-out: not the training seed
    x, label, mask = data.images[0], int(data.labels[0]), data.masks[0]
    model = Torch(net, batch_size=128, output="probs")
    print(f"image {x.shape}, class {data.class_names[label]!r}; the model gives it "
          f"{model.predict(x[None])[0, label]:.3f}")

    results = {}
    for name, explainer in explainers().items():
        start = time.perf_counter()
        e = explainer.explain(model, x, target=label)
        hit = pointing_game(e.attributions, mask, tolerance=0)   # 1.0 when the map's peak lies on the object
        print(f"{name:<21} {time.perf_counter() - start:5.1f} s  peak on object: {hit:.2f}  {e!r}")
        results[name] = e

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), layout="constrained")
    for ax, (name, e) in zip(axes.ravel(), results.items(), strict=True):
        e.plot(ax, title=name)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "torch_blackbox.png", dpi=80)
    print(f"figure: {out / 'torch_blackbox.png'}")
    hits = [pointing_game(e.attributions, mask, tolerance=0) for e in results.values()]
    assert np.mean(hits) >= 0.5, f"most maps should peak on the object; pointing game {hits}"


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
