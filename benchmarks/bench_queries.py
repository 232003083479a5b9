"""Queries for the same map: perturbx's samplers and early stopping against the peers at their defaults.

For each method, on held-out images of one of three classifiers with different score
statistics (``--model``): the demo CNN (max-pooled head, the built-in shapes), the textured
CNN (``perturbx.models.load_textured_model``: small objects on strongly textured backgrounds,
the demo CNN's architecture, probabilities close to 1) or the ResNet-18-shaped CNN (random weights,
top class; ``--size`` sets its resolution, 224 by default), every runner's map is compared
with a reference map of the same estimand computed with 20x the method's default budget:

* RISE (pixels): reference perturbx ``RISE(n_masks=80_000)`` with ``--rise-reference``'s
  estimator (the regression control variate by default); peer: the authors' recipe
  (masks made with ``skimage.transform.resize``, plain score-weighted mean) with 8,000
  masks, as in the paper; perturbx ``RISE`` at smaller budgets with its default estimator
  and each ``--rise-variants`` control variate, and with ``tolerance``.
* RISE on recorded masks (``rise_recorded``; the issue-20 tables): each image's scores for
  ``--rise-masks`` RISE masks (seed ``1000 + image``) are recorded once in ``--rise-record``
  (reused when present), and every estimator is replayed on them: the paper's estimator on
  8,000 masks per seed, perturbx's default and each ``--rise-variants`` estimator (``mean``,
  ``none``, and the linear surrogates ``linear`` and ``cells``) on the first 125-2,000 of
  the same masks, the reference (``--rise-reference``, default the regression estimator) on
  every mask after the seeds'. The same estimand and mask stream as ``RISE``, the model run
  once per mask instead of once per runner.
* LIME (superpixels): reference perturbx ``LIME(n_samples=20_000, sampling="iid",
  control_variate=False)``, i.e. lime's own estimator (same kernel, ridge and sample
  distribution); peer: ``lime_image.LimeImageExplainer`` with its default 1,000 samples;
  perturbx ``LIME`` at smaller budgets with each coalition design (iid, antithetic,
  orthogonal) and the default (orthogonal + logistic control variate), and with ``tolerance``.
* KernelSHAP (superpixels): reference perturbx ``KernelSHAP(control_variate=False)`` (the
  plain regression) with 20x shap's default budget ``2 M + 2048``; peers:
  ``shap.KernelExplainer`` at its default budget (``nsamples="auto"``) without feature
  selection (``l1_reg=False``) and with all its defaults (shap 0.51: ``l1_reg="num_features(10)"``,
  which keeps 10 superpixels and zeroes the rest); perturbx ``KernelSHAP`` at smaller
  budgets with and without the control variate, and with ``tolerance``.
* Occlusion (pixels): reference and peer are plain occlusion (Captum's, which equals
  perturbx ``Occlusion``) with window 6 and stride 2 (16 and 8 at 224 px); perturbx
  ``CoarseToFineOcclusion`` with the same finest window and its default refinement.

All runners explain the true class's probability (softmax), superpixels are the same SLIC
segments for every runner of an image, and hidden superpixels / masked pixels take the
method's default baseline (segment mean for LIME and KernelSHAP as lime and shap's image
examples do; 0 for RISE and occlusion). Printed per runner (mean over images and seeds):
model queries, Pearson correlation with the reference, centred relative L2 error
``||(a - mean a) - (r - mean r)|| / ||r - mean r||`` (a constant offset, large in RISE maps,
is not counted), the pointing game against the object mask (peak on the object, 0 px
tolerance), and for perturbx the queries needed to reach the peer's Pearson (log-linear
interpolation between budgets) with the ratio peer queries / those queries. ``--per-image``
adds the same per image (Pearson averaged over the seeds of that image): the queries perturbx
needs to reach the peer's agreement on that image, and the ratio.

    python benchmarks/bench_queries.py                              # demo CNN, 20 images, all methods
    python benchmarks/bench_queries.py --model textured --size 64 --images 5 --seeds 2 --methods rise_recorded \
        --per-image --rise-variants mean,linear,cells,none --rise-masks 40000 --threads 1   # also demo, resnet
    python benchmarks/bench_queries.py --model textured --methods rise,lime,kernelshap --images 5 --per-image
    python benchmarks/bench_queries.py --model resnet --size 64 --images 5 --per-image --ref-factor 10
    python benchmarks/bench_queries.py --methods rise --images 5 --seeds 2
    python benchmarks/bench_queries.py --model resnet --images 1    # the 224-px model (slow on CPU)
    python benchmarks/bench_queries.py --quick                      # small sizes, to check it runs
    python benchmarks/bench_queries.py --model resnet --device cuda --images 4 --batch 256   # on a GPU
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # lime's progress bar, one per explanation

METHODS = ("rise", "lime", "kernelshap", "occlusion")  # and rise_recorded (by name)


@dataclass
class Case:
    """One image: input, object mask, target, segments, and the model as a numpy function."""

    x: np.ndarray
    mask: np.ndarray
    target: int
    segments: np.ndarray
    probs: object
    adapter: object


@dataclass
class Row:
    """Results of one runner: per (image, seed) queries, Pearson, relative L2 and pointing hits."""

    name: str
    queries: list = field(default_factory=list)
    pearson: list = field(default_factory=list)
    rel_l2: list = field(default_factory=list)
    hits: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    images: list = field(default_factory=list)

    def add(self, queries: int, feats: np.ndarray, ref: np.ndarray, pixel_map: np.ndarray, mask: np.ndarray,
            seconds: float, image: int = 0) -> None:
        a, r = feats.ravel() - feats.mean(), ref.ravel() - ref.mean()
        self.images.append(image)
        self.queries.append(queries)
        self.pearson.append(float(a @ r / max(np.linalg.norm(a) * np.linalg.norm(r), 1e-300)))
        self.rel_l2.append(float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-300)))
        self.hits.append(bool(mask[np.unravel_index(np.argmax(pixel_map), pixel_map.shape)]))
        self.seconds.append(seconds)

    def of_image(self, image: int) -> Row:
        """The same runner's results on one image only."""
        keep = [i for i, im in enumerate(self.images) if im == image]
        pick = lambda values: [values[i] for i in keep]  # noqa: E731
        return Row(self.name, pick(self.queries), pick(self.pearson), pick(self.rel_l2), pick(self.hits),
                   pick(self.seconds), pick(self.images))

    def line(self) -> str:
        return (f"| {self.name} | {np.mean(self.queries):.0f} | {np.mean(self.pearson):.4f} | "
                f"{np.mean(self.rel_l2):.4f} | {np.mean(self.hits):.2f} | {np.mean(self.seconds):.2f} |")


def build_cases(model: str, n_images: int, batch: int, device: str = "cpu", size: int | None = None) -> list[Case]:
    import torch

    import perturbx
    from perturbx._utils import Layout
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model, load_textured_model, resnet18_shaped, textured_shapes
    from perturbx.segmentation import compute_segments

    if model == "resnet":
        net, size = resnet18_shaped(1000, random_state=0).eval(), size or 224
    elif model == "textured":
        net, size = load_textured_model().eval(), size or 64
    else:
        net, size = load_demo_model().eval(), size or 64
    net = net.to(device)
    if model == "textured":
        data = textured_shapes(n_images, size=size)
    else:
        data = make_shapes(n_images, size=size, random_state=DEMO_TEST_SEED)

    def probs(images: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                part = torch.as_tensor(np.ascontiguousarray(images[i:i + batch], dtype=np.float32)).to(device)
                out.append(torch.softmax(net(part), dim=1).cpu().numpy())
        return np.concatenate(out)

    cases = []
    for x, m, y in zip(data.images, data.masks, data.labels, strict=True):
        target = int(probs(x[None]).argmax()) if model == "resnet" else int(y)
        segments = compute_segments("slic", x, Layout("CHW"), "benchmark")
        adapter = perturbx.adapters.Torch(net, output="probs", batch_size=batch, device=device)
        cases.append(Case(x, m, target, segments, probs, adapter))
    return cases


def paint(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    return np.asarray(values)[segments]


# --- RISE -------------------------------------------------------------------------------------------------------------
def authors_rise(case: Case, n: int, seed: int, grid: int = 7, p: float = 0.5, chunk: int = 500) -> np.ndarray:
    """The RISE authors' recipe (skimage resize per mask, random shift, plain weighted mean), in chunks."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    h, w = case.x.shape[1:]
    cell = np.ceil(np.array([h, w]) / grid).astype(int)
    up = (grid + 1) * cell
    total = np.zeros(h * w)
    for start in range(0, n, chunk):
        k = min(chunk, n - start)
        grids = (rng.random((k, grid, grid)) < p).astype(np.float32)
        masks = np.empty((k, h, w), dtype=np.float32)
        for i in range(k):
            dy, dx = rng.integers(0, cell[0]), rng.integers(0, cell[1])
            masks[i] = resize(grids[i], up, order=1, mode="reflect", anti_aliasing=False)[dy:dy + h, dx:dx + w]
        scores = case.probs(masks[:, None] * case.x[None])[:, case.target]
        total += scores @ masks.reshape(k, -1)
    return (total / n / p).reshape(h, w)


def study_rise(cases, seeds, budgets, tolerances, opts):
    import perturbx

    ref_n, peer_n = (4000, 800) if opts.quick else (opts.ref_factor * 4000, 8000)
    rows = {"peer": Row(f"authors' RISE, {peer_n} masks")}
    for i, case in enumerate(cases):
        ref = perturbx.RISE(n_masks=ref_n, control_variate=opts.rise_reference, random_state=10_000).explain(
            case.adapter, case.x, case.target).attributions
        for seed in seeds:
            t0 = time.perf_counter()
            peer = authors_rise(case, peer_n, seed)
            rows["peer"].add(peer_n + 1, peer, ref, peer, case.mask, time.perf_counter() - t0, i)
            for b, variant in itertools.product(budgets, [None, *opts.rise_variants]):
                kw = {} if variant is None else {"control_variate": variant}
                e = perturbx.RISE(n_masks=b, random_state=seed, **kw).explain(case.adapter, case.x, case.target)
                key, name = (b, "") if variant is None else ((variant, b), f", control_variate={variant!r}")
                rows.setdefault(key, Row(f"perturbx RISE, {b} masks{name}")).add(
                    e.n_queries, e.attributions, ref, e.attributions, case.mask, e.seconds, i)
            for tol in tolerances:
                e = perturbx.RISE(n_masks=peer_n, tolerance=tol, random_state=seed).explain(
                    case.adapter, case.x, case.target)
                rows.setdefault(f"tol{tol}", Row(f"perturbx RISE, tolerance={tol}")).add(
                    e.n_queries, e.attributions, ref, e.attributions, case.mask, e.seconds, i)
    return rows


#: RISE estimators of the recorded-masks study: name -> (control variate, GridRegression features and link)
#: ("regression" is what ``RISE(control_variate="regression")`` runs; "linear" and "cells" are its linear ancestors)
RISE_ESTIMATORS = {"none": ("none", None), "mean": ("mean", None), "regression": ("regression", ("blocks", "isotonic")),
                   "linear": ("regression", ("blocks", "linear")), "cells": ("regression", ("cells", "linear"))}


def rise_estimator(name: str, p: float = 0.5):
    """A fresh streaming RISE estimator (the one ``RISE`` builds for that control variate)."""
    from perturbx.backend import NUMPY
    from perturbx.estimators import MaskAverage
    from perturbx.estimators.grid_regression import GridRegression

    kind, surrogate = RISE_ESTIMATORS[name]
    if kind == "regression":
        return GridRegression(NUMPY, p, features=surrogate[0], link=surrogate[1])
    return MaskAverage(NUMPY, p, control_variate=kind == "mean")


def record_rise_scores(case: Case, n: int, seed: int, path: str, chunk: int = 250) -> dict:
    """Grids, shifts and target probabilities of ``n`` RISE masks (7 x 7, p 0.5, baseline 0), kept in ``path``.

    The masks are ``RandomGridSampler``'s for ``np.random.default_rng(seed)``, i.e. those of
    ``RISE(random_state=...)``'s stream; a file with at least ``n`` masks for the same image
    and target is reused, so the model runs once per image for every estimator and budget.
    """
    from perturbx.backend import NUMPY
    from perturbx.samplers import RandomGridSampler

    if os.path.exists(path):
        d = dict(np.load(path))
        if len(d["scores"]) >= n and int(d["target"]) == case.target and np.array_equal(d["x"], case.x):
            return d
    sampler = RandomGridSampler(case.x.shape[1:], n, (7, 7), 0.5, np.random.default_rng(seed))
    grids, shifts, scores = [], [], []
    for ch in sampler.chunks(chunk):
        masks = ch.materialize(NUMPY, np.float32)
        scores.append(case.probs(masks[:, None] * case.x[None])[:, case.target])
        grids.append(ch.grids.astype(np.uint8))
        shifts.append(ch.shifts)
    d = {"grids": np.concatenate(grids), "shifts": np.concatenate(shifts), "scores": np.concatenate(scores),
         "x": case.x, "mask": case.mask, "target": case.target}
    np.savez(path, **d)
    return d


def replay_rise(d: dict, name: str, lo: int, hi: int, upsampler, chunk: int = 500) -> np.ndarray:
    """The map ``(H, W)`` of estimator ``name`` fed the recorded masks ``lo:hi`` in chunks, as the engine feeds it."""
    from perturbx.backend import NUMPY
    from perturbx.samplers.random_grid import GridChunk

    est = rise_estimator(name)
    for a in range(lo, hi, chunk):
        b = min(a + chunk, hi)
        ch = GridChunk(d["grids"][a:b].astype(np.float32), d["shifts"][a:b], upsampler)
        est.update(ch, ch.materialize(NUMPY, np.float32), np.asarray(d["scores"][a:b], np.float64)[:, None])
    return est.finalize()[0]


def study_rise_recorded(cases, seeds, budgets, tolerances, opts):
    """RISE estimators replayed on recorded masks: the paper's at 8,000 against perturbx's at smaller budgets.

    Image ``i``'s masks come from seed ``1000 + i``; seed ``k`` uses masks ``8000 k`` to
    ``8000 (k + 1)`` (the paper's estimator on all of them, perturbx's on their first
    ``b``) and the reference is ``--rise-reference``'s estimator on every mask after the seeds'.
    """
    import perturbx
    from perturbx.explainers.rise import _control_variate_kind
    from perturbx.samplers import RandomGridSampler

    peer_n = 8000
    default = _control_variate_kind(perturbx.RISE().control_variate, "RISE")
    os.makedirs(opts.rise_record, exist_ok=True)
    rows = {"peer": Row(f"paper's estimator, {peer_n} masks")}
    for i, case in enumerate(cases):
        size = case.x.shape[-1]
        path = os.path.join(opts.rise_record, f"{opts.model}{size}_{i}.npz")
        d = record_rise_scores(case, opts.rise_masks, 1000 + i, path)
        up = RandomGridSampler((size, size), 1, (7, 7), 0.5, np.random.default_rng(0)).upsampler
        n = len(d["scores"])
        ref_lo = peer_n * len(seeds)
        if n - ref_lo < peer_n:
            raise ValueError(f"image {i}: {n} recorded masks leave fewer than {peer_n} for the reference; "
                             f"raise --rise-masks or lower --seeds")
        ref = replay_rise(d, opts.rise_reference, ref_lo, n, up)
        rows.setdefault("reference", Row(f"reference ({opts.rise_reference} estimator, {n - ref_lo} masks)")).add(
            n - ref_lo, ref, ref, ref, case.mask, 0.0, i)
        for seed in seeds:
            lo = seed * peer_n
            peer = replay_rise(d, "none", lo, lo + peer_n, up)
            rows["peer"].add(peer_n, peer, ref, peer, case.mask, 0.0, i)
            for b, variant in itertools.product(budgets, [None, *opts.rise_variants]):
                e = replay_rise(d, default if variant is None else variant, lo, lo + b, up)
                key, name = (b, f"default ({default})") if variant is None else ((variant, b), variant)
                rows.setdefault(key, Row(f"perturbx RISE, {b} masks, {name}")).add(
                    b + 1, e, ref, e, case.mask, 0.0, i)
    return rows


# --- LIME -------------------------------------------------------------------------------------------------------------
def lime_peer(case: Case, n: int, seed: int) -> np.ndarray:
    from lime.lime_image import LimeImageExplainer

    target = case.target

    def classifier_fn(images):  # (n, H, W, 3) float64
        return case.probs(np.asarray(images).transpose(0, 3, 1, 2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = LimeImageExplainer(random_state=seed).explain_instance(
            case.x.transpose(1, 2, 0).astype(np.float64), classifier_fn, labels=(target,), top_labels=None,
            hide_color=None, num_samples=n, batch_size=256, segmentation_fn=lambda image: case.segments)
    w = np.zeros(int(case.segments.max()) + 1)
    for feature, weight in exp.local_exp[target]:
        w[feature] = weight
    return w


#: LIME runners: name -> (sampling, control_variate); the last is perturbx's default
LIME_VARIANTS = {"iid": ("iid", False), "antithetic": ("antithetic", False), "orthogonal": ("orthogonal", False),
                 "orthogonal + control variate": ("orthogonal", True)}
LIME_DEFAULT = "orthogonal + control variate"


def study_lime(cases, seeds, budgets, tolerances, opts):
    from perturbx.explainers.lime import LIME

    ref_n, peer_n = (4000, 400) if opts.quick else (opts.ref_factor * 1000, 1000)
    rows = {"peer": Row(f"lime, {peer_n} samples")}
    for i, case in enumerate(cases):
        kw = {"segmentation": case.segments}
        ref = LIME(n_samples=ref_n, sampling="iid", control_variate=False, random_state=10_000, **kw).explain(
            case.adapter, case.x, case.target).segment_weights[0]
        rows.setdefault("reference", Row(f"reference (lime's estimator, {ref_n} samples)")).add(
            ref_n, ref, ref, paint(ref, case.segments), case.mask, 0.0, i)
        for seed in seeds:
            t0 = time.perf_counter()
            peer = lime_peer(case, peer_n, seed)
            rows["peer"].add(peer_n, peer, ref, paint(peer, case.segments), case.mask, time.perf_counter() - t0, i)
            for b, variant in itertools.product(budgets, opts.lime_variants):
                sampling, cv = LIME_VARIANTS[variant]
                e = LIME(n_samples=b, sampling=sampling, control_variate=cv, random_state=seed, **kw).explain(
                    case.adapter, case.x, case.target)
                key = b if variant == LIME_DEFAULT else (variant, b)
                rows.setdefault(key, Row(f"perturbx LIME, {b} samples, {variant}")).add(
                    e.n_queries, e.segment_weights[0], ref, e.attributions, case.mask, e.seconds, i)
            for tol in tolerances:
                e = LIME(n_samples=peer_n, tolerance=tol, random_state=seed, **kw).explain(
                    case.adapter, case.x, case.target)
                rows.setdefault(f"tol{tol}", Row(f"perturbx LIME, tolerance={tol}")).add(
                    e.n_queries, e.segment_weights[0], ref, e.attributions, case.mask, e.seconds, i)
    return rows


# --- KernelSHAP -------------------------------------------------------------------------------------------------------
def superpixel_game(case: Case):
    """The superpixel game of the shap runner, every class: coalitions ``(n, M)`` -> probabilities ``(n, K)``
    (superpixels outside the coalition at their mean colour)."""
    from perturbx.segmentation import segment_mean

    hidden = segment_mean(case.x, case.segments)

    def game(z: np.ndarray) -> np.ndarray:
        keep = z[:, case.segments][:, None].astype(np.float32)            # (n, 1, H, W)
        return case.probs(keep * case.x[None] + (1 - keep) * hidden[None])

    return game


def shap_peer(case: Case, seed: int, l1_reg: object = False) -> tuple[np.ndarray, int]:
    """shap's KernelExplainer on the superpixel game; ``l1_reg=None`` leaves shap's default (num_features(10))."""
    import shap

    every_class = superpixel_game(case)
    m = int(case.segments.max()) + 1
    calls = [0]

    def game(z: np.ndarray) -> np.ndarray:
        calls[0] += len(z)
        return every_class(z)[:, case.target]

    np.random.seed(seed)
    explainer = shap.KernelExplainer(game, np.zeros((1, m)))
    calls[0] = 0
    kw = {} if l1_reg is None else {"l1_reg": l1_reg}
    values = explainer.shap_values(np.ones((1, m)), silent=True, **kw)
    return np.asarray(values).ravel(), calls[0]


def study_kernelshap(cases, seeds, budgets, tolerances, opts):
    from perturbx.explainers.kernel_shap import KernelSHAP

    rows = {"peer": Row("shap KernelExplainer, default nsamples, l1_reg=False"),
            "peer default": Row("shap KernelExplainer, its defaults (l1_reg='num_features(10)')")}
    for i, case in enumerate(cases):
        m = int(case.segments.max()) + 1
        kw = {"segmentation": case.segments}
        ref_n = (2 if opts.quick else opts.ref_factor) * (2 * m + 2048)
        ref = KernelSHAP(n_samples=ref_n, control_variate=False, random_state=10_000, **kw).explain(
            case.adapter, case.x, case.target).segment_weights[0]
        rows.setdefault("reference", Row(f"reference (plain regression, {ref_n} samples)")).add(
            ref_n, ref, ref, paint(ref, case.segments), case.mask, 0.0, i)
        for seed in seeds:
            for key, l1_reg in (("peer", False), ("peer default", None)):
                t0 = time.perf_counter()
                peer, n_peer = shap_peer(case, seed, l1_reg)
                rows[key].add(n_peer, peer, ref, paint(peer, case.segments), case.mask, time.perf_counter() - t0, i)
            for b, cv in itertools.product(budgets, (True,) if opts.no_linear else (True, False)):
                e = KernelSHAP(n_samples=b, control_variate=cv, random_state=seed, **kw).explain(
                    case.adapter, case.x, case.target)
                key, name = (b, "") if cv else (("linear", b), ", no control variate")
                rows.setdefault(key, Row(f"perturbx KernelSHAP, {b} samples{name}")).add(
                    e.n_queries, e.segment_weights[0], ref, e.attributions, case.mask, e.seconds, i)
            for tol in tolerances:
                try:
                    e = KernelSHAP(n_samples=2 * m + 2048, tolerance=tol, random_state=seed, **kw).explain(
                        case.adapter, case.x, case.target)
                except TypeError:  # a KernelSHAP without early stopping
                    break
                rows.setdefault(f"tol{tol}", Row(f"perturbx KernelSHAP, tolerance={tol}")).add(
                    e.n_queries, e.segment_weights[0], ref, e.attributions, case.mask, e.seconds, i)
    return rows


# --- Occlusion --------------------------------------------------------------------------------------------------------
def study_occlusion(cases, seeds, budgets, tolerances, opts):
    import perturbx

    try:
        from perturbx.explainers.coarse_to_fine import CoarseToFineOcclusion
    except ImportError:
        print("(no CoarseToFineOcclusion: occlusion skipped)")
        return {}
    side = cases[0].x.shape[-1]
    geometry = {"window": (6, 6), "stride": (2, 2)} if side <= 64 else {"window": (16, 16), "stride": (8, 8)}
    rows = {"peer": Row(f"plain occlusion (= Captum), window {geometry['window'][0]}, stride {geometry['stride'][0]}")}
    for i, case in enumerate(cases):
        t0 = time.perf_counter()
        e = CoarseToFineOcclusion(**geometry).explain(case.adapter, case.x, case.target)
        plain = perturbx.Occlusion(**geometry)
        t1 = time.perf_counter()
        ref = plain.explain(case.adapter, case.x, case.target)
        rows["peer"].add(ref.n_queries, ref.attributions, ref.attributions, ref.attributions, case.mask,
                         time.perf_counter() - t1, i)
        rows.setdefault("c2f", Row("perturbx CoarseToFineOcclusion")).add(
            e.n_queries, e.attributions, ref.attributions, e.attributions, case.mask, t1 - t0, i)
    return rows


def queries_to_match(rows: dict, target_pearson: float, variant: str | None = None) -> float:
    """Budget at which perturbx's mean Pearson reaches ``target_pearson`` (log-linear interpolation).

    ``variant`` None: rows keyed by an int budget; else rows keyed ``(variant, budget)``.
    """
    def mine(k) -> bool:
        return isinstance(k, int) if variant is None else isinstance(k, tuple) and k[0] == variant

    pts = sorted((np.mean(r.queries), np.mean(r.pearson)) for k, r in rows.items() if mine(k))
    for (q0, p0), (q1, p1) in itertools.pairwise(pts):
        if p0 < target_pearson <= p1:
            frac = (target_pearson - p0) / (p1 - p0)
            return float(np.exp(np.log(q0) + frac * (np.log(q1) - np.log(q0))))
    if pts and pts[0][1] >= target_pearson:  # already at the smallest budget
        return float(pts[0][0])
    return float("nan")


def report(method: str, rows: dict) -> None:
    print(f"\n## {method}\n")
    print("| runner | queries | Pearson | rel. L2 (centred) | pointing (0 px) | seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows.values():
        print(row.line())
    peers = [k for k in rows if isinstance(k, str) and k.startswith("peer")]
    if not any(isinstance(k, int) for k in rows):
        return
    for peer_key, variant in itertools.product(peers, [None, *sorted({k[0] for k in rows if isinstance(k, tuple)})]):
        peer = rows[peer_key]
        need = queries_to_match(rows, float(np.mean(peer.pearson)), variant)
        label = "perturbx" + (f" ({variant})" if variant else "")
        who = f"{peer.name}: Pearson {np.mean(peer.pearson):.4f}"
        if np.isnan(need):
            print(f"\n{label} does not reach {who} within its budgets")
            continue
        print(f"\n{label} reaches {who} at ~{need:.0f} queries: "
              f"{np.mean(peer.queries) / need:.2f}x fewer than the peer's {np.mean(peer.queries):.0f}")


def report_per_image(method: str, rows: dict) -> None:
    """Per image: each peer's Pearson (mean over seeds) and the queries perturbx needs for it, per variant."""
    peers = [k for k in rows if isinstance(k, str) and k.startswith("peer")]
    variants = [None, *sorted({k[0] for k in rows if isinstance(k, tuple)})]
    images = sorted(set(rows[peers[0]].images)) if peers else []
    if not images or not any(isinstance(k, int) for k in rows):
        return
    for peer_key in peers:
        peer = rows[peer_key]
        print(f"\n### {method}, per image: against {peer.name} ({np.mean(peer.queries):.0f} queries)\n")
        names = ["perturbx default" if v is None else str(v) for v in variants]
        print("| image | peer Pearson | " + " | ".join(f"{n}: queries (x fewer)" for n in names) + " |")
        print("|---|---|" + "---|" * len(names))
        for image in images:
            mine = {k: r.of_image(image) for k, r in rows.items()}
            target = float(np.mean(mine[peer_key].pearson))
            cells = []
            for variant in variants:
                need = queries_to_match(mine, target, variant)
                ratio = np.mean(mine[peer_key].queries) / need
                smallest = min(np.mean(r.queries) for k, r in mine.items()
                               if (isinstance(k, int) if variant is None else isinstance(k, tuple) and k[0] == variant))
                at_most = "<= " if need == smallest else ""  # reached already at the smallest budget run
                cells.append("not reached" if np.isnan(need) else
                             f"{at_most}{need:.0f} ({'>= ' if at_most else ''}{ratio:.1f}x)")
            print(f"| {image} | {target:.4f} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--model", choices=("demo", "textured", "resnet"), default="demo")
    ap.add_argument("--size", type=int, default=None, help="image side (default: 64; resnet 224)")
    ap.add_argument("--per-image", action="store_true", help="also report the queries to match per image")
    ap.add_argument("--rise-variants", default="mean,none",
                    help="RISE control variates to run besides the default ('' for none)")
    ap.add_argument("--rise-reference", default="regression", help="control variate of the RISE reference")
    ap.add_argument("--rise-record", default=os.path.join(tempfile.gettempdir(), "perturbx_rise_masks"),
                    help="rise_recorded: folder of the recorded masks and scores (reused when present)")
    ap.add_argument("--rise-masks", type=int, default=40_000, help="rise_recorded: masks recorded per image")
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu", help="torch device of the model (cuda: every forward on the GPU)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ref-factor", type=int, default=20, help="reference budget / the method's default budget")
    ap.add_argument("--budgets", default=None, help="comma-separated perturbx budgets (default: per method)")
    ap.add_argument("--lime-variants", default=",".join(LIME_VARIANTS), help="LIME designs to run")
    ap.add_argument("--no-linear", action="store_true", help="KernelSHAP: skip the runs without control variate")
    args = ap.parse_args()
    args.lime_variants = [v.strip() for v in args.lime_variants.split(",")]
    args.rise_variants = [v.strip() for v in args.rise_variants.split(",") if v.strip()]
    import torch

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    cases = build_cases(args.model, 2 if args.quick else args.images, args.batch, args.device, args.size)
    seeds = list(range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds)))
    plans = {
        "rise": ([250, 500, 1000, 2000, 4000], [0.2, 0.15, 0.1]),
        "rise_recorded": ([125, 250, 500, 1000, 2000], []),
        "lime": ([125, 250, 500, 1000], [0.3, 0.2]),
        "kernelshap": ([128, 256, 512, 1024, 2148], [0.2, 0.1]),
        "occlusion": ([], []),
    }
    print(f"model={args.model} size={cases[0].x.shape[-1]} images={len(cases)} seeds={seeds[0]}..{seeds[-1]} "
          f"threads={args.threads} batch={args.batch} device={args.device} ref-factor={args.ref_factor} "
          f"torch={torch.__version__}")
    for method in args.methods.split(","):
        budgets, tolerances = plans[method]
        if args.budgets:
            budgets = [int(b) for b in args.budgets.split(",")]
        if args.quick:
            budgets, tolerances = budgets[:2], tolerances[:1]
        t0 = time.perf_counter()
        rows = globals()[f"study_{method}"](cases, seeds, budgets, tolerances, args)
        if rows:
            report(method, rows)
            if args.per_image:
                report_per_image(method, rows)
            print(f"\n({method}: {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
