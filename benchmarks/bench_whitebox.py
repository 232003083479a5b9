"""White-box methods of issue 17 against Captum and zennit (wall time, one run), and the tests of trust per method.

Speed (``--part speed``): each new method and its counterpart run on the same model, input,
target and settings, interleaved (perturbx, reference, perturbx, ...) after one warm-up call
each; printed per method: the median seconds of each, their ratio (perturbx / reference; < 1
means perturbx is faster), the rows the model evaluated (perturbx counts them), and the
largest difference between the two results. The model is the ResNet-18-shaped CNN (random
init, eval mode, 1000 classes) on one ``--size`` image, class 0; LRP also runs on a
VGG-16-shaped net with batch norm (random init). Settings: DeepLIFT baseline 0; DeepLIFT-SHAP
over 8 references; GradientSHAP 50 draws over 8 references (Captum given our draws);
conductances 50 steps; layers ``layer3`` (conductance, gradient x activation) and the
``layer3.0.conv1`` unit with the largest ``|activation x gradient|`` (neuron conductance); CAM
against Captum's LayerGradCam without ReLU on ``layer4`` (the same map up to ``h w``); LRP with
zennit's composite, canonizers and ``one_hot * output``.

Trust (``--part trust``): on the trained demo CNN and ``--n-images`` held-out images, for every
method of the registry that runs on it (black-box included): the share of images where the map
passes input invariance (shift -1), the mean worst top-5% intersection and Spearman correlation
under 8 random sign perturbations and (differentiable methods) 8 steps of the iterative attack
(epsilon 8/255), and the mean class sensitivity. Attention rollout and token Grad-CAM run on the
demo ViT.

    python benchmarks/bench_whitebox.py --threads 1 --repeats 3          # both parts
    python benchmarks/bench_whitebox.py --part speed --quick              # 64x64, few steps: checks it runs
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import types
import warnings

import numpy as np


def import_zennit():
    """zennit, importable without a working torchvision (see tests/test_gradients_zennit.py)."""
    from torch import nn

    try:
        import torchvision  # noqa: F401
    except Exception:  # ImportError, or RuntimeError from a torchvision built for another torch
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        stand_in = {n: types.ModuleType(n) for n in ("torchvision", "torchvision.models", "torchvision.models.resnet")}
        resnet = stand_in["torchvision.models.resnet"]
        resnet.BasicBlock = type("BasicBlock", (nn.Module,), {})
        resnet.Bottleneck = type("Bottleneck", (nn.Module,), {})
        stand_in["torchvision"].models = stand_in["torchvision.models"]
        stand_in["torchvision.models"].resnet = resnet
        sys.modules.update(stand_in)
        try:
            import zennit.attribution
        finally:
            for n in stand_in:
                sys.modules.pop(n, None)
    import zennit

    return zennit


# --- speed ------------------------------------------------------------------------------------------

def zennit_runner(torch, composite: str):
    """f(net, xt, t) -> relevance with zennit's composite on a copy with eps folded into the batch norms."""
    import_zennit()
    import zennit.attribution as za
    import zennit.canonizers as zc
    import zennit.composites as zco
    import zennit.layer as zl

    from perturbx.models import _BasicBlock

    class Block(zc.AttributeCanonizer):
        def __init__(self) -> None:
            super().__init__(self._map)

        @classmethod
        def _map(cls, name, module):
            return {"forward": cls.forward.__get__(module), "canonizer_sum": zl.Sum()} if isinstance(
                module, _BasicBlock) else None

        @staticmethod
        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu2(self.canonizer_sum(torch.stack([identity, out], dim=-1)))

    folded_nets = {}

    def run(net, xt, t):
        if id(net) not in folded_nets:
            ref = copy.deepcopy(net)
            for m in ref.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_var.add_(m.eps)
                    m.eps = 0.0
            folded_nets[id(net)] = ref
        ref = folded_nets[id(net)]
        canon = [zc.SequentialMergeBatchNorm(), Block()]
        comp = {"epsilon_gamma_box": lambda: zco.EpsilonGammaBox(low=0.0, high=1.0, canonizers=canon),
                "epsilon_plus": lambda: zco.EpsilonPlus(canonizers=canon),
                "epsilon_alpha2_beta1": lambda: zco.EpsilonAlpha2Beta1(canonizers=canon)}[composite]()
        with za.Gradient(model=ref, composite=comp) as attributor:
            _, rel = attributor(xt.clone().requires_grad_(True),
                                lambda out: out * torch.eye(out.shape[1], device=out.device)[[t]])
        return rel[0]

    return run


def live_unit(torch, net, x: np.ndarray, layer: str, target: int) -> tuple[int, ...]:
    """The unit of ``layer`` with the largest ``|activation * gradient|`` for ``target`` (a unit that matters)."""
    acts = {}
    handle = dict(net.named_modules())[layer].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    try:
        out = net(torch.as_tensor(x)[None])
        (g,) = torch.autograd.grad(out[0, target], acts["a"])
    finally:
        handle.remove()
    score = (g[0] * acts["a"][0]).abs()
    return tuple(int(i) for i in np.unravel_index(int(score.argmax()), g.shape[1:]))


def speed_cases(torch, n_steps: int, n_samples: int, refs: np.ndarray, unit: tuple[int, ...]):
    """(name, model key, perturbx factory, reference runner(net, xt, t), reference's rows or None)."""
    from captum import attr as ca

    from perturbx import gradients as gx
    from perturbx.gradients.gradient_shap import draw

    b = torch.as_tensor(refs)

    def gshap(net, xt, t):
        index, alpha, noise = draw(np.random.default_rng(0), len(refs), n_samples, tuple(xt.shape[1:]), 0.0)
        saved = np.random.choice, np.random.uniform, torch.normal
        np.random.choice = lambda n, size: index.copy()
        np.random.uniform = lambda lo, hi, size: alpha.copy()
        torch.normal = lambda mean, std: torch.as_tensor(noise, device=xt.device)
        try:
            return ca.GradientShap(net).attribute(xt, baselines=b.to(xt.device), n_samples=n_samples, stdevs=0.0,
                                                  target=t)[0]
        finally:
            np.random.choice, np.random.uniform, torch.normal = saved

    def layer(net, name):
        return dict(net.named_modules())[name]

    return [
        ("DeepLIFT", "resnet", lambda: gx.DeepLIFT(),
         lambda net, xt, t: ca.DeepLift(net).attribute(xt, target=t, return_convergence_delta=True)[0][0], 2),
        ("DeepLIFTSHAP", "resnet", lambda: gx.DeepLIFTSHAP(refs),
         lambda net, xt, t: ca.DeepLiftShap(net).attribute(xt, baselines=b.to(xt.device), target=t)[0], 16),
        ("GradientSHAP", "resnet", lambda: gx.GradientSHAP(refs, n_samples=n_samples, random_state=0), gshap,
         n_samples),
        ("LayerConductance", "resnet", lambda: gx.LayerConductance("layer3", n_steps=n_steps),
         lambda net, xt, t: ca.LayerConductance(net, layer(net, "layer3")).attribute(xt, target=t, n_steps=n_steps,
                                                                                      method="riemann_trapezoid")[0],
         n_steps + 1),
        ("NeuronConductance", "resnet", lambda: gx.NeuronConductance("layer3.0.conv1", unit, n_steps=n_steps),
         lambda net, xt, t: ca.NeuronConductance(net, layer(net, "layer3.0.conv1")).attribute(
             xt, neuron_selector=unit, target=t, n_steps=n_steps)[0], n_steps),
        ("LayerGradXActivation", "resnet", lambda: gx.LayerGradientXActivation("layer3"),
         lambda net, xt, t: ca.LayerGradientXActivation(net, layer(net, "layer3")).attribute(xt, target=t)[0], 1),
        ("CAM (vs LayerGradCam)", "resnet", lambda: gx.CAM(),
         lambda net, xt, t: ca.LayerGradCam(net, net.layer4).attribute(xt, target=t)[0, 0] * float(
             np.prod(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(xt))))))))
                     .shape[2:])), 1),
        *[(f"LRP {c}", key, lambda c=c: gx.LRP(c), zennit_runner(torch, c), 1)
          for key in ("resnet", "vgg") for c in ("epsilon_gamma_box", "epsilon_plus", "epsilon_alpha2_beta1")],
    ]


def timed(fn, torch, device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def run_speed(args) -> None:
    import torch

    from perturbx.adapters import Torch
    from perturbx.models import resnet18_shaped
    from perturbx.models.vgg import vgg_shaped

    size, n_steps, n_samples = (64, 8, 8) if args.quick else (args.size, 50, 50)
    nets = {"resnet": resnet18_shaped(1000, random_state=0).to(args.device).eval(),
            "vgg": vgg_shaped(1000, batch_norm=True, random_state=0,
                              config=(64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                      512, 512, 512, "M")).to(args.device).eval()}
    x = np.random.default_rng(0).random((3, size, size), dtype=np.float32)
    refs = np.random.default_rng(1).random((8, 3, size, size), dtype=np.float32)
    xt = torch.as_tensor(x, device=args.device)[None]
    print(f"torch {torch.__version__}, {args.threads} threads, device {args.device}, input 3x{size}x{size}, "
          f"{n_steps} steps, {n_samples} draws, median of {args.repeats}")
    print("| method | model | perturbx s | reference s | ratio | model rows | max abs difference | max abs value |")
    print("|---|---|---|---|---|---|---|---|")
    unit = live_unit(torch, nets["resnet"], x, "layer3.0.conv1", 0)
    for name, key, factory, reference, rows in speed_cases(torch, n_steps, n_samples, refs, unit):
        net, explainer = nets[key], factory()
        adapter = Torch(net, device=args.device, batch_size=64)
        run_ours = lambda e=explainer, a=adapter: e.explain(a, x, target=0)       # noqa: E731
        run_ref = lambda f=reference, n=net: f(n, xt, 0).detach()                  # noqa: E731
        run_ours(), run_ref()
        ours_t, ref_t = [], []
        for _ in range(args.repeats):
            t, e = timed(run_ours, torch, args.device)
            ours_t.append(t)
            t, ref = timed(run_ref, torch, args.device)
            ref_t.append(t)
        ref = ref.to("cpu", torch.float64).numpy()
        ours = e.raw[0] if e.raw[0].shape == ref.shape else e.attributions
        o, c = statistics.median(ours_t), statistics.median(ref_t)
        print(f"| {name} | {key} | {o:.3f} | {c:.3f} | {o / c:.2f} | {e.n_queries} ({rows}) | "
              f"{np.abs(ours - ref).max():.1e} | {np.abs(ref).max():.1e} |", flush=True)


# --- trust ------------------------------------------------------------------------------------------

def run_trust(args) -> None:
    import torch

    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes
    from perturbx.gradients import AttentionRollout, TokenGradCAM
    from perturbx.gradients._trust import supports_attack
    from perturbx.metrics import trust
    from perturbx.models import DEMO_TEST_SEED, load_demo_model
    from perturbx.models.vit import load_demo_vit
    from perturbx.registry import available_methods, make_explainer

    cnn, vit = load_demo_model().eval(), load_demo_vit().eval()
    images = make_shapes(args.n_images, random_state=DEMO_TEST_SEED).images
    names = [n for n in available_methods() if n not in ("meaningful", "extremal", "drise")]
    runs = [(n, make_explainer(n, size=(64, 64)), cnn, "demo CNN") for n in names]
    runs += [("attention_rollout", AttentionRollout(), vit, "demo ViT"), ("vit_gradcam", TokenGradCAM(), vit,
                                                                          "demo ViT")]
    print(f"torch {torch.__version__}, {args.threads} threads; {args.n_images} held-out images; epsilon 8/255, "
          f"top 5%, 8 random perturbations, 8 attack steps")
    print("| method | model | input invariance (pass share, median error) | fragility top-k random | "
          "Spearman random | top-k attack | Spearman attack | class sensitivity | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, explainer, net, label in runs:
        start = time.perf_counter()
        inv, frag, attack, cls = [], [], [], []
        for x in images:
            adapter = Torch(net)
            inv.append(trust.input_invariance(adapter, explainer, x))
            frag.append(trust.fragility(adapter, explainer, x, n_perturbations=8))
            if supports_attack(explainer, adapter):
                attack.append(trust.fragility(adapter, explainer, x, attack="iterative", n_steps=8))
            cls.append(trust.class_sensitivity(adapter, explainer, x).correlation)
        mean = lambda rs, f: np.nanmean([getattr(r, f) for r in rs]) if rs else float("nan")   # noqa: E731
        print(f"| {name} | {label} | {np.mean([r.passed for r in inv]):.2f}, "
              f"{np.median([r.error for r in inv]):.1e} | {mean(frag, 'topk_intersection'):.2f} | "
              f"{mean(frag, 'spearman'):.2f} | {mean(attack, 'topk_intersection'):.2f} | "
              f"{mean(attack, 'spearman'):.2f} | {np.mean(cls):.2f} | {time.perf_counter() - start:.0f} |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "trust", "all"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n-images", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(args.threads)
    if args.part in ("speed", "all"):
        run_speed(args)
    if args.part in ("trust", "all"):
        run_trust(args)


if __name__ == "__main__":
    main()
