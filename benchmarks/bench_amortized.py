"""Amortized (FastSHAP) against KernelSHAP on the demo CNN: agreement, faithfulness, cost, honesty.

One run, in stages that are cached in ``--out`` (a killed run resumes: the fit from its
checkpoint, KernelSHAP's values from their files):

1. **fit** ``perturbx.Amortized`` on ``make_shapes`` images (``--players`` grid,
   ``--images`` x ``--coalitions`` queries, baseline 0.0, every class; budget
   ``--budget`` queries): queries, seconds, epochs, validation Pearson.
2. **agreement** on ``--held-out`` images ``make_shapes(n, random_state=DEMO_TEST_SEED)``
   (neither trained nor validated on), top class: Pearson correlation over the players with
   KernelSHAP at 4,096 samples (same players, baseline and target); the efficiency error
   ``max |sum(phi) - (f(x) - f(baseline))|``; model queries per explanation. KernelSHAP's values
   are cached per held-out count (``ks4096_4.npz`` for 64 images, ``ks4096_4_h256.npz`` for 256).
3. **faithfulness**: deletion (substrate 0) and insertion (substrate blur) AUC of the
   probability of the top class (``perturbx.metrics``, one row of pixels per step) for the
   amortised maps, KernelSHAP at 1,000 samples and at 4,096, and the paired difference of
   each from KernelSHAP at 1,000 on the same images (standard error, 95 % bootstrap interval).
4. **speed**: ``explain_many`` of ``--speed-images`` images, Amortized against KernelSHAP at
   1,000 samples (its defaults otherwise), wall seconds of each, same process, one after the
   other.
5. **honesty**: the estimated error (calibrated, no queries) on the held-out images, on
   uniform noise and on strongly textured shapes (``make_shapes(texture="strong")``), and the
   error measured with ``verify=--verify`` queries; for the held-out images also the true
   relative error against KernelSHAP at 4,096 samples.

    python benchmarks/bench_amortized.py --out /tmp/bench_amortized                 # run 2 of the results
    python benchmarks/bench_amortized.py --images 6000 --coalitions 64 --out /tmp/ba  # run 1 of the results
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def setup(threads: int, device: str = "cpu", batch_size: int = 256):
    import torch

    torch.set_num_threads(threads)
    from perturbx.adapters import Torch
    from perturbx.models import load_demo_model

    return Torch(load_demo_model(), device=device, batch_size=batch_size, output="probs")


def fit(model, args, out: Path):
    import perturbx
    from perturbx.targets import Class

    explainer = perturbx.Amortized(args.players, target=Class(None, score=args.score), n_images=args.images,
                                   coalitions=args.coalitions, members=args.members, distil=args.distil,
                                   width=args.width, top_class_weight=args.top_class_weight,
                                   validation=args.validation, validation_samples=args.validation_samples,
                                   epochs=args.epochs, patience=args.patience, max_queries=args.budget,
                                   checkpoint=out / f"amortized_{args.players}{suffix(args)}.pt", random_state=0,
                                   progress=True, device=args.device)
    start = time.perf_counter()
    explainer.fit(model)
    log = {k: v for k, v in explainer.training_log_.items() if k != "history"}
    log["wall_seconds_this_call"] = time.perf_counter() - start
    return explainer, log


def kernel_shap(model, images, n_samples: int, segments, path: Path, targets=None) -> dict:
    """KernelSHAP's top-class values (cached in ``path``) and the wall time of the run that made them."""
    import perturbx

    if path.is_file():
        return dict(np.load(path))
    start = time.perf_counter()
    found = perturbx.KernelSHAP(n_samples, segments, baseline=0.0, random_state=0, progress=True).explain_many(
        model, images, targets)
    result = {"values": np.stack([e.segment_weights[0] for e in found]),
              "errors": np.stack([e.errors[0] for e in found]), "targets": np.array([e.targets[0] for e in found]),
              "scores": np.array([e.scores[0] for e in found]), "base": np.array([e.base_value[0] for e in found]),
              "seconds": np.array(time.perf_counter() - start)}
    np.savez(path, **result)
    return result


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from perturbx.amortized.train import pearson_rows

    return pearson_rows(a, b)


def faithfulness(model, images, maps: dict[str, np.ndarray], targets,
                 paired_with: str = "KernelSHAP 1000") -> dict[str, dict[str, float]]:
    """Mean deletion and insertion AUC of each map set, with standard errors; for every set but ``paired_with``
    also the paired difference from it over the same images, its standard error and a 95 % bootstrap interval
    (10,000 resamples of the images, seeded)."""
    from perturbx.metrics import deletion, insertion

    out, per_image = {}, {}
    for name, m in maps.items():
        d = np.array([deletion(model, x, a, int(t)).auc for x, a, t in zip(images, m, targets, strict=True)])
        i = np.array([insertion(model, x, a, int(t)).auc for x, a, t in zip(images, m, targets, strict=True)])
        se = np.sqrt(len(d))
        out[name] = {"deletion": float(np.mean(d)), "insertion": float(np.mean(i)),
                     "deletion_se": float(np.std(d) / se), "insertion_se": float(np.std(i) / se)}
        per_image[name] = {"deletion": d, "insertion": i}
    for name in out:
        if name == paired_with or paired_with not in per_image:
            continue
        for metric in ("deletion", "insertion"):
            gap = per_image[name][metric] - per_image[paired_with][metric]
            rng = np.random.default_rng(0)
            boot = gap[rng.integers(0, len(gap), (10_000, len(gap)))].mean(axis=1)
            out[name][f"{metric}_minus_{paired_with}"] = float(gap.mean())
            out[name][f"{metric}_minus_se"] = float(gap.std(ddof=1) / np.sqrt(len(gap)))
            out[name][f"{metric}_minus_95"] = [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
    return out


def want(score: str, classes) -> list:
    """The targets of the run: ``Class(c, score=score)`` for each class (None: the top class)."""
    from perturbx.targets import Class

    return [Class(None if c is None else int(c), score=score) for c in classes]


def honesty(model, explainer, held_out, truth: dict, n_verify: int, n_images: int,
            score: str) -> dict[str, dict[str, float]]:
    import perturbx
    from perturbx.datasets import make_shapes

    sets = {"held-out shapes": held_out,
            "uniform noise": np.random.default_rng(7).random(held_out.shape, dtype=np.float32),
            "strong texture": make_shapes(len(held_out), texture="strong", random_state=11).images}
    verifier = perturbx.Amortized.load(explainer.checkpoint, verify=n_verify)
    out = {}
    for name, images in sets.items():
        found = explainer.explain_many(model, images, want(score, [None] * len(images)))
        est = np.array([e.estimated_error[0] for e in found])
        ver = np.array([verifier.explain(model, x, want(score, e.targets)[0]).estimated_error[0]
                        for x, e in zip(images[:n_images], found[:n_images], strict=True)])
        row = {"estimated_median": float(np.median(est)), "estimated_mean": float(np.mean(est)),
               "verified_median": float(np.median(ver)), "gap_median": float(np.median(
                   [abs(e.efficiency_gap[0]) for e in found]))}
        if name == "held-out shapes":
            phi = np.stack([e.segment_weights[0] for e in found])
            spread = np.linalg.norm(phi - phi.mean(1, keepdims=True), axis=1)
            dist2 = np.maximum(((phi - truth["values"]) ** 2).sum(1) - (truth["errors"] ** 2).sum(1), 0)
            row["true_median"] = float(np.median(np.sqrt(dist2) / spread))
        out[name] = row
    return out


def speed(model, explainer, n: int, segments, score: str) -> dict[str, float]:
    import perturbx
    from perturbx.datasets import make_shapes

    images = make_shapes(n, random_state=31337).images
    start = time.perf_counter()
    explainer.explain_many(model, images, want(score, [None] * n))
    ours = time.perf_counter() - start
    start = time.perf_counter()
    perturbx.KernelSHAP(1000, segments, baseline=0.0, random_state=0, progress=True).explain_many(
        model, images, want(score, [None] * n))
    theirs = time.perf_counter() - start
    return {"images": n, "amortized_seconds": ours, "kernelshap_1000_seconds": theirs, "speedup": theirs / ours}


def suffix(args) -> str:
    """File name suffix of a run's score (none for probabilities: the names of the first recorded run)."""
    return "" if args.score == "output" else f"_{args.score}"


def held_suffix(args) -> str:
    """File name suffix of KernelSHAP's values for a held-out set other than the recorded runs' 64 images."""
    return "" if args.held_out == 64 else f"_h{args.held_out}"


def ks_file(args, n_samples: int) -> Path:
    """Where KernelSHAP's values at ``n_samples`` on the run's held-out images are cached."""
    return args.out / f"ks{n_samples}_{args.players}{suffix(args)}{held_suffix(args)}.npz"


def machine() -> dict[str, str]:
    """CPU, cores, load and versions, for the results file."""
    import platform

    import torch

    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "load_average_at_start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--players", type=int, default=4)
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--coalitions", type=int, default=128)
    parser.add_argument("--validation", type=int, default=32)
    parser.add_argument("--validation-samples", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--budget", type=int, default=430_000)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--speed-images", type=int, default=256)
    parser.add_argument("--verify", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help='where the demo CNN and the explainer run ("cuda" on a GPU)')
    parser.add_argument("--batch-size", type=int, default=256, help="the demo CNN's batch (model queries at once)")
    parser.add_argument("--width", type=int, default=16, help="channels of the explainer U-Net's first level")
    parser.add_argument("--top-class-weight", type=float, default=1.0,
                        help="weight of each image's top class in the loss (Amortized(top_class_weight=))")
    parser.add_argument("--members", type=int, default=1, help="explainer networks averaged (Amortized(members=))")
    parser.add_argument("--distil", type=int, default=0, help="epochs distilling the members into one network")
    parser.add_argument("--score", choices=("output", "log_odds"), default="output",
                        help="what is explained: the class probability, or its softmax log-odds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from perturbx.amortized.game import grid_segments
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED

    model = setup(args.threads, args.device, args.batch_size)
    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine()}
    explainer, report["fit"] = fit(model, args, args.out)
    print("fit", json.dumps(report["fit"]), flush=True)
    segments = grid_segments((64, 64), (args.players, args.players))
    held_out = make_shapes(args.held_out, random_state=DEMO_TEST_SEED).images
    truth = kernel_shap(model, held_out, 4096, segments, ks_file(args, 4096),
                        want(args.score, [None] * len(held_out)))
    targets = [int(t) for t in truth["targets"]]
    before = model.n_queries
    start = time.perf_counter()
    found = explainer.explain_many(model, held_out, want(args.score, targets))
    ours = np.stack([e.segment_weights[0] for e in found])
    r = pearson(ours, truth["values"])
    report["agreement"] = {
        "images": len(held_out), "pearson_mean": float(r.mean()), "pearson_median": float(np.median(r)),
        "pearson_min": float(r.min()), "efficiency_max_error": float(max(
            abs(e.segment_weights[0].sum() - (e.scores[0] - e.base_value[0])) for e in found)),
        "efficiency_vs_kernelshap_max": float(np.max(np.abs(ours.sum(1) - (truth["scores"] - truth["base"])))),
        "queries_per_explanation": (model.n_queries - before) / len(held_out),
        "seconds": time.perf_counter() - start, "kernelshap_4096_seconds": float(truth["seconds"])}
    print("agreement", json.dumps(report["agreement"]), flush=True)
    ks1000 = kernel_shap(model, held_out, 1000, segments, ks_file(args, 1000),
                         want(args.score, targets))
    report["pearson_kernelshap_1000_vs_4096"] = float(pearson(ks1000["values"], truth["values"]).mean())
    maps = {"Amortized": ours[:, segments], "KernelSHAP 1000": ks1000["values"][:, segments],
            "KernelSHAP 4096": truth["values"][:, segments]}
    report["faithfulness"] = faithfulness(model, held_out, maps, targets)
    print("faithfulness", json.dumps(report["faithfulness"]), flush=True)
    report["honesty"] = honesty(model, explainer, held_out, truth, args.verify, 16, args.score)
    print("honesty", json.dumps(report["honesty"]), flush=True)
    report["speed"] = speed(model, explainer, args.speed_images, segments, args.score)
    print("speed", json.dumps(report["speed"]), flush=True)
    report["machine"]["load_average_at_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    (args.out / f"report_{args.players}{suffix(args)}{held_suffix(args)}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
