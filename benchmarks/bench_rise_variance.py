"""RISE variance reduction: agreement with a high-budget reference map as a function of masks.

For each held-out image of the demo CNN (``make_shapes(n, random_state=DEMO_TEST_SEED)``,
target = label, softmax probabilities, RISE defaults: grid 7, p_keep 0.5, baseline 0), a
reference map is plain RISE with ``--ref-masks`` masks (80,000 = 20x the default 4,000).
Each variant (mask sampling x estimator) is run with a few seeds, independent of the
reference's, and its map at every budget (a prefix of one stream) is compared with the
reference: Pearson correlation over pixels and the centred relative L2 error
``||(a - mean a) - (r - mean r)|| / ||r - mean r||``. Also printed: the estimator's own
relative error (:func:`perturbx.engine.relative_error` of ``standard_error()``) next to
the measured one, and plain RISE at 8,000 masks (the paper's setting, the peer).

    python benchmarks/bench_rise_variance.py                       # full: 20 images, 3 seeds
    python benchmarks/bench_rise_variance.py --images 2 --seeds 1 --ref-masks 8000   # quick
    python benchmarks/bench_rise_variance.py --model resnet --images 2 --ref-masks 16000 --budgets 500 1000 2000
    python benchmarks/bench_rise_variance.py --overhead 5 --threads 2    # framework time per estimator setting

Estimators: ``plain`` (the paper's), ``cv`` (control variate with the mean score,
:class:`perturbx.estimators.MaskAverage` ``control_variate=True``) and ``beta`` (per-pixel
regression coefficient; computed here, not in the library).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

BUDGETS = (250, 500, 1000, 2000, 4000)


def centred_rel_l2(a: np.ndarray, r: np.ndarray) -> float:
    a, r = a - a.mean(), r - r.mean()
    return float(np.linalg.norm(a - r) / np.linalg.norm(r))


def pearson(a: np.ndarray, r: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), r.ravel())[0, 1])


class BetaEstimator:
    """Control variate with the per-pixel regression coefficient (benchmark only)."""

    def __init__(self, p: float) -> None:
        self.p, self.n = p, 0
        self.s = None

    def update(self, masks: np.ndarray, scores: np.ndarray) -> None:
        flat = masks.reshape(len(masks), -1).astype(np.float64)
        f = scores[:, 0].astype(np.float64)
        part = np.stack([f @ flat, flat.sum(0), f @ flat ** 2, (flat ** 2).sum(0)])
        self.s = part if self.s is None else self.s + part
        self.n += len(masks)

    def finalize(self) -> np.ndarray:
        fm, m, fm2, m2 = self.s / self.n
        beta = (fm2 - fm * m) / (m2 - m * m)
        return (fm - beta * (m - self.p)) / self.p


class SchemeSampler:
    """RISE masks drawn ``"iid"`` (the library's sampler), ``"antithetic"`` or ``"balanced"`` (measured here only).

    Every mask keeps each cell with probability ``p_keep`` and has a uniform shift, so every
    prefix is an unbiased RISE sample:

    * ``"antithetic"`` -- pairs sharing a shift, the second keeping a cell where
      ``1 - u < p_keep`` for the first's uniform ``u`` (the complementary grid at 0.5).
    * ``"balanced"`` -- in each block of ``block`` masks every cell is kept in exactly
      ``p_keep * block`` of them (floor or ceiling, the latter with probability the
      fractional part), and each shift axis is Latin-hypercube stratified over the block.

    Neither beat iid masks once the control variate is used (see the results file), so
    they are not part of the library.
    """

    def __init__(self, spatial, n_masks, grid_size, p_keep, rng, sampling="iid", block=16) -> None:
        from perturbx.samplers import RandomGridSampler

        self.iid = RandomGridSampler(spatial, n_masks, grid_size, p_keep, rng) if sampling == "iid" else None
        self.n_total, self.p_keep, self.sampling, self.block = n_masks, p_keep, sampling, block
        self.upsampler = RandomGridSampler(spatial, 1, grid_size, p_keep, np.random.default_rng(0)).upsampler
        if self.iid is None:
            self._grid_rng, self._shift_rng = rng.spawn(2)  # as the library's sampler does

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One pair or block: grids ``(k, gh, gw)`` and shifts in [0, 1) ``(k, 2)``."""
        (gh, gw), p = self.upsampler.grid, self.p_keep
        if self.sampling == "antithetic":
            u = self._grid_rng.random((1, gh, gw))
            return np.concatenate([u < p, 1.0 - u < p]), np.repeat(self._shift_rng.random((1, 2)), 2, axis=0)
        k = self.block
        ranks = self._grid_rng.random((k, gh, gw)).argsort(axis=0).argsort(axis=0)
        kept = np.floor(p * k + self._grid_rng.random((gh, gw)))
        strata = self._shift_rng.random((k, 2)).argsort(axis=0)  # a random permutation per axis
        return ranks < kept, (strata + self._shift_rng.random((k, 2))) / k

    def chunks(self, chunk_size: int):
        from perturbx.samplers.random_grid import GridChunk

        if self.sampling == "iid":
            yield from self.iid.chunks(chunk_size)
            return
        cell = np.asarray(self.upsampler.cell)
        grids, shifts = [], []
        for start in range(0, self.n_total, chunk_size):
            n = min(chunk_size, self.n_total - start)
            while len(grids) < n:
                g, sh = self._draw()
                grids += list(g.astype(np.float32))
                shifts += list(np.floor(sh * cell).astype(np.int64))
            yield GridChunk(np.stack(grids[:n]), np.stack(shifts[:n]), self.upsampler)
            grids, shifts = grids[n:], shifts[n:]


def stream(adapter, x, target, n, sampling, seed, estimators, checkpoints, chunk=250):
    """Run one mask stream; return {name: {budget: map}} and {budget: relative_error of cv}."""
    from perturbx.baselines import resolve_baseline
    from perturbx.engine import relative_error
    from perturbx.renderers import BlendRenderer
    rng = np.random.default_rng(seed)
    baseline = resolve_baseline(0.0, x, adapter.layout, rng)
    renderer = BlendRenderer(x, baseline, adapter.layout, adapter.backend, adapter.dtype)
    sampler = SchemeSampler(x.shape[1:], n, (7, 7), 0.5, rng, sampling=sampling)
    out = {name: {} for name in estimators}
    errors = {}
    done = 0
    for ch in sampler.chunks(chunk):
        masks = ch.materialize(adapter.backend, adapter.dtype)
        scores = adapter.predict_batch(renderer.render(masks))[:, [target]]
        for est in estimators.values():
            if isinstance(est, BetaEstimator):
                est.update(adapter.backend.to_numpy(masks), scores)
            else:
                est.update(ch, masks, scores)
        done += ch.size
        if done in checkpoints:
            for name, est in estimators.items():
                out[name][done] = est.finalize().reshape(-1)
            if "cv" in estimators and estimators["cv"].track_error:
                errors[done] = relative_error(*estimators["cv"].standard_error())
    return out, errors


def make_model(name: str, torch):
    import perturbx.models as pm
    from perturbx.adapters import Torch
    from perturbx.datasets import make_shapes

    if name == "demo":
        net = pm.load_demo_model().eval()
        data = make_shapes(20, random_state=pm.DEMO_TEST_SEED)
        return Torch(net, batch_size=250, output="probs"), data.images, data.labels
    net = pm.resnet18_shaped(n_classes=1000, random_state=0).eval()
    images = make_shapes(4, size=224, random_state=pm.DEMO_TEST_SEED).images
    adapter = Torch(net, batch_size=50, output="probs")
    labels = [int(np.argmax(adapter.predict(im[None])[0])) for im in images]  # random init: the top class
    return adapter, images, np.asarray(labels)


def overhead(repeats: int) -> None:
    """Wall time of demo-CNN RISE (4,000 masks, batch 32) per estimator setting, interleaved repeats."""
    import perturbx
    import perturbx.models as pm
    from perturbx.adapters import Torch

    net = pm.load_demo_model().eval()
    x = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    settings = {"plain (paper)": {"control_variate": False}, "control variate (default)": {},
                "control variate + tolerance (no stop)": {"tolerance": 1e-9}}
    walls: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats + 1):  # the first round is a warm-up
        for name, kw in settings.items():
            t0 = time.perf_counter()
            perturbx.RISE(n_masks=4000, random_state=0, **kw).explain(Torch(net, batch_size=32), x, target=0)
            walls[name].append(time.perf_counter() - t0)
    print("\n| estimator | median wall s | min wall s |\n|---|---|---|")
    for name, w in walls.items():
        print(f"| {name} | {np.median(w[1:]):.3f} | {min(w[1:]):.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("demo", "resnet"), default="demo")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ref-masks", type=int, default=80_000)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--samplings", nargs="+", default=["iid", "antithetic", "balanced"])
    ap.add_argument("--peer-masks", type=int, default=8000)
    ap.add_argument("--estimators", nargs="+", default=["plain", "cv"], choices=("plain", "cv", "beta"))
    ap.add_argument("--cache", default="/tmp/rise_variance_cache")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="print the tables of the images done so far")
    ap.add_argument("--overhead", type=int, default=0, metavar="REPEATS",
                    help="only time RISE with each estimator setting on the demo CNN")
    args = ap.parse_args()
    if args.overhead:
        import torch

        torch.set_num_threads(args.threads)
        overhead(args.overhead)
        return
    if args.report_only:
        saved = json.loads((Path(args.cache) / f"{args.model}_rows.json").read_text())
        report(saved["rows"], saved["est_err"], sorted(args.budgets), args, saved["images"])
        return

    import torch

    from perturbx.estimators import MaskAverage

    torch.set_num_threads(args.threads)
    adapter, images, labels = make_model(args.model, torch)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    budgets = sorted(args.budgets)
    rows: dict[str, list[list[float]]] = {}  # "variant|masks" -> [Pearson, rel L2] x [plain ref, cv ref]
    est_err: dict[str, list[tuple[float, float]]] = {}
    t0 = time.perf_counter()
    for i in range(args.images):
        x, target = images[i], int(labels[i])
        ref_file = cache / f"{args.model}_ref{args.ref_masks}_{i}.npz"
        if ref_file.exists():
            refs = dict(np.load(ref_file))
        else:  # one iid stream, both estimators: the plain reference and a far less noisy one
            ref_ests = {"plain": MaskAverage(adapter.backend, 0.5),
                        "cv": MaskAverage(adapter.backend, 0.5, control_variate=True, track_error=True)}
            ref_maps, ref_err = stream(adapter, x, target, args.ref_masks, "iid", 10_000 + i, ref_ests,
                                       {args.ref_masks}, chunk=500)
            refs = {name: by_budget[args.ref_masks] for name, by_budget in ref_maps.items()}
            refs["cv_error"] = np.array(ref_err[args.ref_masks])
            np.savez(ref_file, **refs)
        for seed in range(args.seeds):
            for sampling in args.samplings:
                n = max(budgets + ([args.peer_masks] if sampling == "iid" else []))
                ests = {"plain": MaskAverage(adapter.backend, 0.5),
                        "cv": MaskAverage(adapter.backend, 0.5, control_variate=True, track_error=True),
                        "beta": BetaEstimator(0.5)}
                ests = {k: v for k, v in ests.items() if k in args.estimators}
                checkpoints = set(budgets) | ({args.peer_masks} if sampling == "iid" else set())
                maps, errors = stream(adapter, x, target, n, sampling, 1000 * i + seed, ests, checkpoints)
                for name, by_budget in maps.items():
                    for b, a in by_budget.items():
                        rows.setdefault(f"{sampling}+{name}|{b}", []).append(
                            [f(a, refs[r]) for r in ("plain", "cv") for f in (pearson, centred_rel_l2)])
                if sampling == "iid":
                    for b, e in errors.items():
                        est_err.setdefault(str(b), []).append((e, centred_rel_l2(maps["cv"][b], refs["cv"])))
        est_err.setdefault("reference", []).append((float(refs["cv_error"]), np.nan))
        print(f"image {i} done, {time.perf_counter() - t0:.0f} s", flush=True)
        (cache / f"{args.model}_rows.json").write_text(json.dumps({"rows": rows, "est_err": est_err, "images": i + 1}))
    report(rows, est_err, budgets, args)


def report(rows, est_err, budgets, args, n_images=None) -> None:
    variants = sorted({key.split("|")[0] for key in rows})
    for k, ref in enumerate(("plain", "control-variate")):
        print(f"\n## {args.model}: {n_images or args.images} images x {args.seeds} seeds, reference {ref} RISE "
              f"{args.ref_masks} masks (iid)\n")
        print("mean Pearson / mean centred relative L2 error against the reference\n")
        print("| variant | " + " | ".join(str(b) for b in budgets) + " |")
        print("|---|" + "---|" * len(budgets))
        for v in variants:
            cells = []
            for b in budgets:
                vals = np.array(rows.get(f"{v}|{b}", [[np.nan] * 4]))
                cells.append(f"{vals[:, 2 * k].mean():.4f} / {vals[:, 2 * k + 1].mean():.3f}")
            print(f"| {v} | " + " | ".join(cells) + " |")
        peer = np.array(rows.get(f"iid+plain|{args.peer_masks}", [[np.nan] * 4]))
        print(f"\npeer: plain RISE (iid) at {args.peer_masks} masks: Pearson {peer[:, 2 * k].mean():.4f}, "
              f"rel L2 {peer[:, 2 * k + 1].mean():.3f}")
    print("\nestimated relative error (iid+cv, relative_error of standard_error()) vs measured rel L2 against "
          "the control-variate reference\n")
    print("| masks | estimated | measured |\n|---|---|---|")
    for b in sorted(est_err, key=lambda k: int(k) if k.isdigit() else 10 ** 9):
        vals = np.array(est_err[b])
        label = f"reference ({args.ref_masks}, cv)" if b == "reference" else b
        print(f"| {label} | {vals[:, 0].mean():.3f} | {vals[:, 1].mean():.3f} |")


if __name__ == "__main__":
    main()
