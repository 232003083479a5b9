"""Black-box against white-box explanations of one model, scored and written to an HTML report.

The demo CNN is explained on held-out synthetic images (object masks known) by black-box
methods, which only query the model (occlusion, RISE, LIME, KernelSHAP), and by white-box
methods, which back-propagate through it (saliency, integrated gradients, Grad-CAM).
``perturbx.compare`` scores every map the same way (deletion and insertion AUC, pointing game,
energy pointing, cost) and ``perturbx.report.write_outputs`` writes the files of
``perturbx compare``: ``report.html`` (one self-contained page), ``report.md``, CSV tables and
figures.

Run: ``python examples/blackbox_vs_whitebox.py [OUT_DIR]`` (about 30 s on a 2-core CPU), then
open ``OUT_DIR/blackbox_vs_whitebox/report.html`` in a browser.
"""
# requires: torch, matplotlib, jinja2

from __future__ import annotations

import sys
from pathlib import Path

import torch

import perturbx
from perturbx import gradients
from perturbx.adapters import Torch
from perturbx.datasets import make_shapes
from perturbx.models import load_demo_model
from perturbx.report import write_outputs


def main(out: Path) -> None:
    torch.set_num_threads(perturbx.dataset_runs.default_threads())
    data = make_shapes(4, random_state=99)                   # held-out images, labels and object masks
    model = Torch(load_demo_model(), batch_size=128, output="probs")
    methods = {
        # black-box: only the model's answers to perturbed images
        "Occlusion": perturbx.Occlusion(window=(12, 12), stride=(4, 4)),
        "RISE": perturbx.RISE(n_masks=1000, grid_size=7, random_state=0),
        "LIME": perturbx.LIME(n_samples=500, baseline=0.0, random_state=0),
        "KernelSHAP": perturbx.KernelSHAP(n_samples=500, baseline=0.0, random_state=0),
        # white-box: gradients through the torch module
        "Saliency": gradients.Saliency(),
        "IntegratedGradients": gradients.IntegratedGradients(n_steps=32),
        "GradCAM": gradients.GradCAM(upsample="bilinear"),
    }
    comp = perturbx.compare(model, data.images, methods, metrics=["deletion", "insertion", "pointing_game",
                                                                   "energy_pointing"],
                            ground_truth=data.masks, targets=data.labels, class_names=data.class_names)
    print(comp.to_markdown())
    folder = out / "blackbox_vs_whitebox"
    files = write_outputs(comp, folder, title="Black-box vs white-box on the demo CNN")
    print("written:", ", ".join(p.name for p in files))
    print(f"open {folder / 'report.html'}")
    assert (folder / "report.html").stat().st_size > 10_000


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
