"""Coarse-to-fine occlusion against plain occlusion at the same finest window and stride, in one run.

The reference is ``perturbx.Occlusion(window, stride)`` (equal to Captum's Occlusion); the
candidate is ``CoarseToFineOcclusion(window, stride, coarsen=..., refine=..., threshold=..., fill=...)`` on the same
model, image, target and baseline (0). Printed per setting: mean queries of each (including the one
unperturbed query), their ratio (plain / coarse-to-fine), the agreement of the
coarse-to-fine map with the reference (Pearson over pixels, relative L2 error
``||a - ref|| / ||ref||``; mean and worst over images), the fraction of pixels whose value
equals plain occlusion's, and the pointing game (15 px) of both maps against the object masks.

* demo: the built-in demo CNN (softmax probabilities) on the 20 held-out shapes images
  (``make_shapes(20, random_state=DEMO_TEST_SEED)``), target = label.
* resnet: the ResNet-18-shaped CNN (random init, softmax over 1000 classes) on 224 px shapes
  images, target = the top class (no pointing game: a random network has no object).

    python benchmarks/bench_coarse_to_fine.py                      # demo + 1 ResNet image
    python benchmarks/bench_coarse_to_fine.py --resnet-images 0    # demo only
    python benchmarks/bench_coarse_to_fine.py --images 3 --quick   # check that it runs
    python benchmarks/bench_coarse_to_fine.py --device cuda --batch 256 --resnet-images 8   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np

DEMO_SETTINGS = [((12, 12), (4, 4)), ((8, 8), (4, 4)), ((6, 6), (2, 2))]  # (12, 4): the registry default at 64 px
#: the other way to spend fewer queries: plain occlusion with the same window and a larger stride
LARGER_STRIDES = {(4, 4): (6, 8), (2, 2): (3, 4)}
RESNET_SETTINGS = [((42, 42), (14, 14)), ((16, 16), (8, 8))]             # (42, 14): the registry default at 224 px
RULES = [{"coarsen": "stride", "refine": "range", "threshold": 0.2},
         {"coarsen": "stride", "refine": "range", "threshold": 0.1},    # the default
         {"coarsen": "stride", "refine": "range", "threshold": 0.05},
         {"coarsen": "stride", "refine": "range", "threshold": 0.02},
         {"coarsen": "window", "refine": "range", "threshold": 0.5},    # HiPe's mid-range
         {"coarsen": "window", "refine": "range", "threshold": 0.25},
         {"coarsen": "window", "refine": "range", "threshold": 0.1},
         {"coarsen": "window", "refine": "range", "threshold": 0.05},
         {"coarsen": "window", "refine": "range", "threshold": 0.1, "fill": "coarse"},
         {"coarsen": "window", "refine": "range", "threshold": 0.1, "fill": "zero"}]
DEFAULT_RULE = RULES[1:2]
RESNET_RULES = [RULES[1], RULES[3], RULES[4], RULES[6]]


def agreement(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Pearson correlation over pixels and relative L2 error ``||a - ref|| / ||ref||``."""
    a, ref = a.ravel().astype(np.float64), ref.ravel().astype(np.float64)
    return float(np.corrcoef(a, ref)[0, 1]), float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def plain_occlusion(model, images, targets, window, stride) -> list:
    """The reference: ``Occlusion(window, stride)``'s explanation of every image."""
    from perturbx import Occlusion

    return [Occlusion(window, stride).explain(model, x, target=int(t)) for x, t in zip(images, targets, strict=True)]


def compare_setting(model, images, targets, masks, window, stride, rules, refs) -> list[dict]:
    """One row per refinement rule for one (window, stride), over all images; ``refs`` from :func:`plain_occlusion`."""
    from perturbx.explainers.coarse_to_fine import CoarseToFineOcclusion
    from perturbx.metrics import pointing_game

    rows = []
    for rule in rules:
        start, stats = time.perf_counter(), []
        for x, t, ref, m in zip(images, targets, refs, masks, strict=True):
            e = CoarseToFineOcclusion(window, stride, **rule).explain(model, x, target=int(t))
            r, l2 = agreement(e.attributions, ref.attributions)
            finest = np.isclose(e.attributions, ref.attributions, rtol=1e-6, atol=1e-12).mean()
            hits = (pointing_game(e.attributions, m), pointing_game(ref.attributions, m)) if m is not None else (0, 0)
            stats.append((e.n_queries, ref.n_queries, r, l2, finest, *hits))
        s = np.array(stats, dtype=np.float64)
        rows.append({"window": window, "stride": stride, "rule": ", ".join(f"{v}" for v in rule.values()),
                     "q_c2f": s[:, 0].mean(), "q_plain": s[:, 1].mean(),
                     "ratio": s[:, 1].mean() / s[:, 0].mean(), "pearson": s[:, 2].mean(), "pearson_min": s[:, 2].min(),
                     "rel_l2": s[:, 3].mean(), "rel_l2_max": s[:, 3].max(), "finest": s[:, 4].mean(),
                     "pg_c2f": int(s[:, 5].sum()), "pg_plain": int(s[:, 6].sum()), "n": len(s),
                     "seconds": time.perf_counter() - start, "has_masks": masks[0] is not None})
    return rows


def larger_strides(model, images, targets, window, stride, refs) -> list[str]:
    """Plain occlusion at larger strides against the ``refs`` at ``stride``: one line each."""
    from perturbx import Occlusion

    lines = []
    for step in LARGER_STRIDES.get(stride, ()):
        stats = []
        for x, t, ref in zip(images, targets, refs, strict=True):
            e = Occlusion(window, (step, step)).explain(model, x, target=int(t))
            stats.append((e.n_queries, ref.n_queries, *agreement(e.attributions, ref.attributions)))
        q, q_ref, r, l2 = np.array(stats).T
        lines.append(f"| {window[0]} / {stride[0]} | plain occlusion, stride {step} | {q_ref.mean():.0f} "
                     f"| {q.mean():.1f} | {q_ref.mean() / q.mean():.2f}x | {r.mean():.4f} ({r.min():.4f}) "
                     f"| {l2.mean():.4f} ({l2.max():.4f}) |")
    return lines


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n### {title}\n")
    print("| window / stride | coarsen, refine, threshold[, fill] | queries plain | queries c2f | ratio "
          "| Pearson mean (min) | rel. L2 mean (max) | pixels = plain | pointing c2f / plain | c2f seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pg = f"{r['pg_c2f']}/{r['n']} / {r['pg_plain']}/{r['n']}" if r["has_masks"] else "-"
        print(f"| {r['window'][0]} / {r['stride'][0]} | {r['rule']} | {r['q_plain']:.0f} | {r['q_c2f']:.1f} "
              f"| {r['ratio']:.2f}x | {r['pearson']:.4f} ({r['pearson_min']:.4f}) "
              f"| {r['rel_l2']:.4f} ({r['rel_l2_max']:.4f}) | {r['finest']:.1%} | {pg} | {r['seconds']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20, help="held-out demo images (default 20; 0: skip)")
    parser.add_argument("--resnet-images", type=int, default=1, help="224 px images for the ResNet (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument("--batch", type=int, default=64, help="adapter batch size")
    parser.add_argument("--device", default="cpu", help="torch device of the models")
    parser.add_argument("--quick", action="store_true", help="only the coarsest settings and the default rule")
    ns = parser.parse_args()

    import torch

    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model, resnet18_shaped

    torch.set_num_threads(ns.threads)
    rules = DEFAULT_RULE if ns.quick else RULES
    if ns.images:
        data = make_shapes(ns.images, random_state=DEMO_TEST_SEED)
        demo = Torch(load_demo_model(), batch_size=ns.batch, output="probs", device=ns.device)
        settings = DEMO_SETTINGS[:1] if ns.quick else DEMO_SETTINGS
        refs = {(w, s): plain_occlusion(demo, data.images, data.labels, w, s) for w, s in settings}
        rows = [row for w, s in settings
                for row in compare_setting(demo, data.images, data.labels, data.masks, w, s, rules, refs[w, s])]
        print_table(f"demo CNN, {ns.images} held-out images, target = label", rows)
        print("\nThe same reference against plain occlusion with a larger stride (fewer windows, no refinement):\n")
        print("| window / stride | runner | queries at the reference stride | queries | ratio | Pearson mean (min) "
              "| rel. L2 mean (max) |")
        print("|---|---|---|---|---|---|---|")
        for w, s in settings:
            print("\n".join(larger_strides(demo, data.images, data.labels, w, s, refs[w, s])))
    if ns.resnet_images:
        big = make_shapes(ns.resnet_images, size=224, random_state=DEMO_TEST_SEED)
        net = Torch(resnet18_shaped(1000, random_state=0).eval(), batch_size=ns.batch, output="probs",
                    device=ns.device)
        tops = net.predict(big.images).argmax(1)
        rows = [row for w, s in (RESNET_SETTINGS[:1] if ns.quick else RESNET_SETTINGS)
                for row in compare_setting(net, big.images, tops, [None] * len(tops), w, s,
                                          DEFAULT_RULE if ns.quick else RESNET_RULES,
                                          plain_occlusion(net, big.images, tops, w, s))]
        print_table(f"ResNet-18-shaped CNN (random init), {ns.resnet_images} image(s) of 224 px, target = top class",
                    rows)


if __name__ == "__main__":
    main()
