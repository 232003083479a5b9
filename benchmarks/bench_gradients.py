"""Gradient methods: perturbx.gradients against Captum, in one run, on the same model, input and target.

The model is the ResNet-18-shaped CNN (random init, eval mode) on one 224x224 image,
class 0. Each method runs with the same settings in both libraries (IG: 50 steps,
Gauss-Legendre, baseline 0; SmoothGrad: 50 noisy copies of Saliency at noise level 0.15;
Grad-CAM and guided Grad-CAM on ``layer4``, nearest upsampling). After one warm-up call of
every runner, the runners alternate ``--repeats`` times; printed per method: the median
seconds per explanation of each, their ratio (perturbx / Captum; < 1 means perturbx is
faster), the rows the model evaluated (perturbx counts them; Captum's own count in
brackets where it differs), and the largest difference between the two results (noise
differs between the libraries for SmoothGrad, so that one is a size comparison only).

    python benchmarks/bench_gradients.py                 # CPU, 2 threads
    python benchmarks/bench_gradients.py --device cuda
    python benchmarks/bench_gradients.py --quick         # 64x64, few steps: checks that it runs
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np


def build(size: int, device: str):
    import torch

    from perturbx.models import resnet18_shaped

    net = resnet18_shaped(1000, random_state=0).to(device).eval()
    x = np.random.default_rng(0).random((3, size, size), dtype=np.float32)
    return torch, net, x


def cases(n_steps: int, n_samples: int):
    """(name, perturbx explainer factory, Captum runner(net, xt, target) -> attributions, Captum rows)."""
    from captum import attr as ca

    from perturbx import gradients as gx

    def layer4(net):
        return net.layer4

    def cam(net, xt, t):
        lgc = ca.LayerGradCam(net, layer4(net)).attribute(xt, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(lgc, tuple(xt.shape[2:]), "nearest")[0, 0]

    return [
        ("Saliency", lambda: gx.Saliency(), lambda net, xt, t: ca.Saliency(net).attribute(xt, target=t)[0], 1),
        ("InputXGradient", lambda: gx.InputXGradient(),
         lambda net, xt, t: ca.InputXGradient(net).attribute(xt, target=t)[0], 1),
        ("IntegratedGradients", lambda: gx.IntegratedGradients(n_steps=n_steps),
         lambda net, xt, t: ca.IntegratedGradients(net).attribute(
             xt, baselines=0.0, target=t, n_steps=n_steps, method="gausslegendre",
             return_convergence_delta=True)[0][0], n_steps + 2),
        ("SmoothGrad", lambda: gx.SmoothGrad(gx.Saliency(), n_samples=n_samples, noise=0.15, random_state=0),
         lambda net, xt, t: ca.NoiseTunnel(ca.Saliency(net)).attribute(
             xt, nt_type="smoothgrad", nt_samples=n_samples, stdevs=0.15 * float(xt.max() - xt.min()),
             target=t)[0], n_samples),
        ("GradCAM", lambda: gx.GradCAM("layer4"), cam, 1),
        ("GuidedBackprop", lambda: gx.GuidedBackprop(),
         lambda net, xt, t: ca.GuidedBackprop(net).attribute(xt, target=t)[0], 1),
        ("Deconvnet", lambda: gx.Deconvnet(),
         lambda net, xt, t: ca.Deconvolution(net).attribute(xt, target=t)[0], 1),
        ("GuidedGradCAM", lambda: gx.GuidedGradCAM("layer4"),
         lambda net, xt, t: ca.GuidedGradCam(net, layer4(net)).attribute(xt, target=t)[0], 2),
    ]


def timed(fn, torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")                      # Captum warns on every ReLU hook

    size, n_steps, n_samples = (64, 8, 8) if args.quick else (224, 50, 50)
    torch, net, x = build(size, args.device)
    torch.set_num_threads(args.threads)
    from perturbx.adapters import Torch

    adapter = Torch(net, device=args.device, batch_size=64)
    xt = torch.as_tensor(x, device=args.device)[None]
    target = 0
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, input 3x{size}x{size}, "
          f"IG {n_steps} steps, SmoothGrad {n_samples} samples, median of {args.repeats}")
    print(f"{'method':<20} {'perturbx s':>10} {'captum s':>9} {'ratio':>6} {'rows':>9} {'max |diff|':>11} "
          f"{'max |attr|':>11}")
    for name, ours_factory, captum_fn, captum_rows in cases(n_steps, n_samples):
        explainer = ours_factory()
        run_ours = lambda e=explainer: e.explain(adapter, x, target=target)          # noqa: E731
        run_captum = lambda f=captum_fn: f(net, xt, target).detach()                # noqa: E731
        run_ours(), run_captum()                                                      # warm-up
        ours_t, captum_t = [], []
        for _ in range(args.repeats):
            t, e = timed(run_ours, torch, args.device)
            ours_t.append(t)
            t, ref = timed(run_captum, torch, args.device)
            captum_t.append(t)
        ref = ref.to("cpu", torch.float64).numpy()
        ours = e.raw[0] if e.raw[0].shape == ref.shape else e.attributions
        rows = f"{e.n_queries}" + ("" if e.n_queries == captum_rows else f" ({captum_rows})")
        o, c = statistics.median(ours_t), statistics.median(captum_t)
        print(f"{name:<20} {o:>10.3f} {c:>9.3f} {o / c:>6.2f} {rows:>9} {np.abs(ours - ref).max():>11.2e} "
              f"{np.abs(ref).max():>11.2e}")


if __name__ == "__main__":
    main()
