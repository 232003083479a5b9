"""perturbx.visualize on the demo CNN: Fourier against pixels, black-box budgets, pre-images, robustness.

All runs use the demo CNN (``perturbx.models.load_demo_model()``, 64 x 64 shapes, 4 classes)
and ``FeatureVisualization``'s defaults unless a row says otherwise (Adam, lr 0.05 with
autograd; standard transformations: pad 6, jitter 6, scale 0.9-1.1, rotation +-10 degrees).

1. ``steps``: steps to reach a given objective value, Fourier basis against pixels, same
   objective, transformations, learning rate (lucent's 0.05, and 0.2) and seeds. On the
   demo CNN: each class's log-probability up to log(0.99) (the class models), and the mean
   activation of four channels of ``features.11`` (the last BatchNorm, before the ReLU: after
   it, most channels are off on grey and have no gradient) up to three quarters of the
   largest value any of 500 held-out images gives that channel. ``steps_resnet``: a
   ResNet-18-shaped CNN with random weights at 128 px (``perturbx.models.resnet18_shaped``),
   channels of ``layer2`` and ``layer3`` up to 90 % of the lower of the two
   parameterisations' best values at lr 0.05. "Reached" is the first step at which the moving average (8 steps) of the
   objective on the transformed images the optimiser saw is at or above the value.
2. ``robust``: class models with the Fourier basis and the transformations against pixels
   with neither: own-class probability, and its mean and the share of draws below 0.9
   under 64 random standard transformations.
3. ``blackbox``: class models through ``adapters.Callable`` over numpy (the same network
   behind it): the final images' own-class probability after each query budget, with and
   without the transformations, and the autograd optimiser on ``adapters.Torch`` for scale.
4. ``preimage``: pre-images of ``features.5`` and ``features.8`` of held-out images from
   noise under each regulariser and the deep image prior: relative error, total variation.

lucent (``pip install torch-lucent``) is not part of the run: on 2026-11-30 pip resolved it
to torch 2.14.1 with the CUDA 13 libraries, torchvision 0.29.1 and kornia 0.4.1, replacing
the project's torch 2.13.0+cpu (benchmarks/results/visualize.md).

    python benchmarks/bench_visualize.py                  # everything, 3 seeds
    python benchmarks/bench_visualize.py --only steps blackbox --seeds 5
    python benchmarks/bench_visualize.py --quick          # few steps, to check it runs
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPE = (3, 64, 64)
CLASSES = (0, 1, 2, 3)
LOG_99 = float(np.log(0.99))


def steps_to_reach(curve: np.ndarray, value: float, window: int = 8) -> int | None:
    """First step (1-based) at which the moving average of ``curve`` over ``window`` steps is >= ``value``."""
    if len(curve) < window:
        return None
    avg = np.convolve(curve, np.ones(window) / window, mode="valid")
    hit = np.nonzero(avg >= value)[0]
    return int(hit[0] + window) if hit.size else None


def _fmt(steps: list[int | None], limit: int) -> str:
    vals = [s if s is not None else np.inf for s in steps]
    med = float(np.median(vals))
    text = f">{limit}" if not np.isfinite(med) else f"{med:.0f}"
    return f"{text:>6} (each: {', '.join(str(s) if s is not None else f'>{limit}' for s in steps)})"


def _curves(model, tasks, params, lrs, shape, steps, seeds, transforms="standard"):
    """Objective curves ``{(task, param, lr, seed): (steps,)}`` and seconds per step ``{param: s}``."""
    from perturbx import visualize as vz

    curves, secs = {}, {name: [] for name in params}
    for label, objective in tasks:
        for name, param in params.items():
            for lr in lrs:
                for seed in range(seeds):
                    vis = vz.FeatureVisualization(param=param, transforms=transforms, steps=steps, learning_rate=lr,
                                                  random_state=seed).visualize(model, objective, shape)
                    curves[label, name, lr, seed] = vis.objective[:, 0, 0]
                    secs[name].append(vis.seconds / vis.steps_done)
    return curves, {k: float(np.median(v)) for k, v in secs.items()}


def _report_steps(curves, values, params, lrs, seeds, limit) -> None:
    """Per task: median steps to reach its value, per parameterisation and learning rate; then a summary."""
    tasks = list(dict.fromkeys(k[0] for k in curves))
    for label in tasks:
        row = []
        for name in params:
            for lr in lrs:
                found = [steps_to_reach(curves[label, name, lr, s], values[label, s]) for s in range(seeds)]
                row.append(f"{name} lr {lr}: {_fmt(found, limit)}")
        print(f"  {label:44s} " + " | ".join(row))
    for lr in lrs:
        f = np.array([steps_to_reach(curves[t, "fourier", lr, s], values[t, s]) or np.inf for t in tasks
                      for s in range(seeds)], dtype=float)
        p = np.array([steps_to_reach(curves[t, "pixels", lr, s], values[t, s]) or np.inf for t in tasks
                      for s in range(seeds)], dtype=float)
        both = np.isfinite(f) | np.isfinite(p)
        print(f"  lr {lr}: median steps fourier {np.median(f):.0f}, pixels {np.median(p):.0f}; fourier reached "
              f"{np.isfinite(f).sum()}/{len(f)}, pixels {np.isfinite(p).sum()}/{len(p)}; of the {both.sum()} runs "
              f"where one reached it, fourier first in {(f < p)[both].sum()}, pixels first in {(p < f)[both].sum()}, "
              f"tied {(p == f)[both].sum()}")


def bench_steps(net, args) -> None:
    from perturbx import visualize as vz
    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED

    limit = 40 if args.quick else args.max_steps
    lrs = (0.05, 0.2)
    params = {"fourier": vz.Fourier(), "pixels": vz.Pixels()}
    print(f"\n## steps to reach a given objective value, Fourier against pixels (Adam at lr 0.05, lucent's default, "
          f"and 0.2; standard transformations; seeds {list(range(args.seeds))}; at most {limit} steps; moving "
          f"average of 8 steps)")

    data = make_shapes(500, random_state=DEMO_TEST_SEED).images
    acts = vz.layer_activations(Torch(net), data, "features.11")     # before the last ReLU: never without gradient
    channels = [int(c) for c in np.argsort(acts.max(axis=0))[::-1][:4]]
    tasks = [(f"class {c} log p >= log 0.99", vz.ClassProbability(c, log=True)) for c in CLASSES]
    tasks += [(f"features.11:{c} >= 0.75 * data max {0.75 * acts[:, c].max():.2f}", vz.Channel("features.11", c))
              for c in channels]
    targets = [LOG_99] * len(CLASSES) + [0.75 * float(acts[:, c].max()) for c in channels]
    curves, secs = _curves(Torch(net), tasks, params, lrs, SHAPE, limit, args.seeds)
    values = {(label, s): v for (label, _), v in zip(tasks, targets, strict=True) for s in range(args.seeds)}
    print("\ndemo CNN, 64 px (values: p = 0.99; three quarters of the channel's largest mean activation over 500 "
          "held-out images); seconds a step: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in secs.items()))
    _report_steps(curves, values, params, lrs, args.seeds, limit)


def bench_steps_resnet(net, args) -> None:
    from perturbx import visualize as vz
    from perturbx.adapters import Torch
    from perturbx.models import resnet18_shaped

    lrs = (0.05, 0.2)
    params = {"fourier": vz.Fourier(), "pixels": vz.Pixels()}
    side = 64 if args.quick else 128
    limit = 40 if args.quick else args.resnet_steps
    resnet = resnet18_shaped(10, random_state=0)
    tasks = [(f"{layer}:{c}", vz.Channel(layer, c)) for layer in ("layer2", "layer3") for c in (0, 1)]
    curves, secs = _curves(Torch(resnet), tasks, params, lrs, (3, side, side), limit, args.seeds)
    window = 8
    values = {}
    for label, _ in tasks:   # 90 % of the lower of the two best moving averages at lr 0.05
        for s in range(args.seeds):
            best = [np.convolve(curves[label, name, 0.05, s], np.ones(window) / window, mode="valid").max()
                    for name in params]
            values[label, s] = 0.9 * min(best)
    print(f"\n## steps to reach a given objective value, Fourier against pixels (as above, seeds "
          f"{list(range(args.seeds))}, at most {limit} steps)")
    print(f"\nResNet-18-shaped CNN, random weights, {side} px, channel objectives (value: 90 % of the lower of the two "
          f"best moving averages at lr 0.05); seconds a step: " + ", ".join(f"{k} {v * 1e3:.0f} ms"
                                                                             for k, v in secs.items()))
    _report_steps(curves, values, params, lrs, args.seeds, limit)


def bench_robust(net, args) -> None:
    from perturbx import visualize as vz
    from perturbx.adapters import Torch

    steps = 32 if args.quick else 256
    runs = {"fourier + transforms": vz.FeatureVisualization(steps=steps, random_state=0),
            "pixels, no transforms": vz.FeatureVisualization(param=vz.Pixels(), transforms=None, steps=steps,
                                                             random_state=0)}
    print(f"\n## robustness of class models ({steps} steps, log-probability objective, 64 draws of the standard "
          f"transformations)")
    classes = np.array(CLASSES)
    for name, visualizer in runs.items():
        vis = vz.class_models(Torch(net), SHAPE, classes, visualizer=visualizer)
        probs = vz.transformed_probabilities(Torch(net), vis.images[:, 0], vz.Transforms.standard(64), n_draws=64,
                                             random_state=1)[classes, :, classes]
        own = vis.probabilities[classes, 0, classes]
        share = np.array2string((probs < 0.9).mean(1), precision=2)
        print(f"  {name:22s} p {np.array2string(own, precision=4)}  transformed mean "
              f"{np.array2string(probs.mean(1), precision=3)}  share < 0.9 {share}"
              f"  objective {np.array2string(vis.final_objective[:, 0], precision=5)}  {vis.seconds:.1f} s")


def bench_blackbox(net, args) -> None:
    import torch

    from perturbx import visualize as vz
    from perturbx.adapters import Callable, Torch

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    budgets = (5, 10) if args.quick else (5, 10, 15, 20, 30, 40, 60)
    classes = np.array(CLASSES)
    print(f"\n## black box: class models through a numpy Callable (16 antithetic pairs a step, lr 0.2, sigma 0.2;"
          f" seeds {list(range(args.seeds))}); own-class probability of the final images")
    for transforms in (None, "standard"):
        print(f"\ntransforms={transforms!r}")
        for steps in budgets:
            probs, queries, secs = [], 0, 0.0
            for seed in range(args.seeds):
                model = Callable(predict, batch_size=256)
                vis = vz.class_models(model, SHAPE, classes, visualizer=vz.FeatureVisualization(
                    steps=steps, transforms=transforms, random_state=seed))
                probs.append(vis.probabilities[classes, 0, classes])
                queries, secs = vis.n_queries, secs + vis.seconds / args.seeds
            p = np.array(probs)
            print(f"  {steps:3d} steps  {queries:6d} queries ({queries // 4:5d} per class)  {secs:5.1f} s  "
                  f"min p {p.min():.4f}  mean p {p.mean():.4f}  classes >= 0.9: {(p >= 0.9).mean():.2f}  "
                  f">= 0.99: {(p >= 0.99).mean():.2f}")
    print("\nautograd on adapters.Torch (same objective, Fourier, standard transformations)")
    for steps in ((8, 16) if args.quick else (16, 32, 64, 128)):
        probs, secs = [], 0.0
        for seed in range(args.seeds):
            vis = vz.class_models(Torch(net), SHAPE, classes, visualizer=vz.FeatureVisualization(steps=steps,
                                                                                                  random_state=seed))
            probs.append(vis.probabilities[classes, 0, classes])
            secs += vis.seconds / args.seeds
        p = np.array(probs)
        print(f"  {steps:3d} steps  {vis.n_queries:6d} queries ({vis.n_queries // 4:5d} per class)  {secs:5.1f} s  "
              f"min p {p.min():.4f}  mean p {p.mean():.4f}  classes >= 0.9: {(p >= 0.9).mean():.2f}  "
              f">= 0.99: {(p >= 0.99).mean():.2f}")


def bench_preimage(net, args) -> None:
    from perturbx import visualize as vz
    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED

    steps = 40 if args.quick else 400
    images = make_shapes(args.images, random_state=DEMO_TEST_SEED).images
    settings = {"none": {"tv": 0.0}, "tv 1.0": {"tv": 1.0}, "alpha-norm 50": {"tv": 0.0, "alpha_norm": 50.0},
                "tv 1.0 + alpha-norm 50": {"tv": 1.0, "alpha_norm": 50.0},
                "deep image prior": {"tv": 0.0, "param": vz.DeepImagePrior()}}
    print(f"\n## pre-images from noise ({steps} steps, {len(images)} held-out images; mean and [min, max])")
    for layer in ("features.5", "features.8"):
        for name, kwargs in settings.items():
            errs, tvs, secs, tv_x = [], [], [], []
            for i, x in enumerate(images):
                r = vz.PreImage(layer, steps=steps, random_state=i, **kwargs).invert(Torch(net), x)
                errs.append(r.relative_error)
                tvs.append(r.total_variation)
                secs.append(r.seconds)
                tv_x.append(r.input_total_variation)
            print(f"  {layer} {name:24s} relative error {np.mean(errs):.4f} [{min(errs):.4f}, {max(errs):.4f}]  "
                  f"TV {np.mean(tvs):.4f} (inputs {np.mean(tv_x):.4f})  {np.mean(secs):.1f} s an image")


SECTIONS = {"steps": bench_steps, "steps_resnet": bench_steps_resnet, "robust": bench_robust,
            "blackbox": bench_blackbox, "preimage": bench_preimage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=256, help="step limit on the demo CNN")
    parser.add_argument("--resnet-steps", type=int, default=128, help="step limit on the ResNet-18-shaped CNN")
    parser.add_argument("--images", type=int, default=4, help="held-out images for the pre-images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import platform

    import torch

    from perturbx.models import load_demo_model

    torch.set_num_threads(args.threads)
    net = load_demo_model()
    print(f"# bench_visualize: torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or 'cpu'}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for name in args.only:
        start = time.perf_counter()
        SECTIONS[name](net, args)
        print(f"({name}: {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
