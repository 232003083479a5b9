"""Explain a model you only have as an ONNX file.

The demo CNN is exported to ``demo_cnn.onnx`` here to have a file (any ``.onnx`` classifier
works: perturbx reads its input name, sample shape and dtype from the file). ONNX Runtime
then runs it; torch is not involved in explaining. The RISE map through ONNX Runtime equals
the one through the torch module, up to float32 rounding.

Needs ``pip install 'perturbx[onnx]' onnxscript`` (onnxscript only for the export). Run:
``python examples/onnx_file.py [OUT_DIR]`` (about 20 s on a 2-core CPU).
"""
# requires: torch, onnxruntime, onnxscript

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch

import perturbx
from perturbx.adapters import ONNX, Torch
from perturbx.datasets import make_shapes
from perturbx.models import load_demo_model


def export(net: torch.nn.Module, sample_shape: tuple[int, ...], path: Path) -> Path:
    """``net`` as an ONNX file with a dynamic batch axis (batches of up to ``batch_size`` rows per run)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter's notes on torchvision operators
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (torch.rand(2, *sample_shape),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                      verbose=False)
    return path


def main(out: Path) -> None:
    torch.set_num_threads(perturbx.dataset_runs.default_threads())
    out.mkdir(parents=True, exist_ok=True)
    net = load_demo_model()
    x = make_shapes(1, random_state=7).images[0]
    path = export(net, x.shape, out / "demo_cnn.onnx")

    model = ONNX(path, batch_size=64)                       # CUDA/ROCm providers first when installed
    print(f"{model!r}: sample shape {model.sample_shape}, providers {model.session.get_providers()}")
    rise = perturbx.RISE(n_masks=1000, grid_size=7, random_state=0)
    e = rise.explain(model, x)                              # the top class, from the ONNX model's logits
    print(e)
    reference = rise.explain(Torch(net, batch_size=64), x)  # the same masks through the torch module
    gap = np.abs(e.attributions - reference.attributions).max()
    print(f"max |ONNX map - torch map| = {gap:.2e} (scale of the map: {np.abs(reference.attributions).max():.2f})")
    assert e.targets.tolist() == reference.targets.tolist() and gap < 1e-4

    occlusion = perturbx.Occlusion(window=(12, 12), stride=(4, 4)).explain(model, x, target=[0, 1, 2, 3])
    print(occlusion)                                        # every class at once: (4, 64, 64)

    import matplotlib

    matplotlib.use("Agg")
    axes = occlusion.plot()                                 # one panel per class, each with its colour bar
    axes[0].figure.savefig(out / "onnx_occlusion.png", dpi=80)
    print(f"figure: {out / 'onnx_occlusion.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
