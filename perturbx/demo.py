"""The built-in demo: compare every available method on held-out synthetic images of the demo CNN.

Run it with ``perturbx demo``. It trains the demo CNN once (cached), draws held-out
images whose object masks are known, explains each with every available method (the
black-box ones, and the gradient ones when PyTorch is installed; the mask-optimisation
methods only on request, as they take minutes per image on a CPU), scores the maps
(deletion, insertion, pointing game, energy pointing, infidelity, cost) and writes
into the output folder:

the files of :data:`perturbx.report.OUTPUT_FILES`, the same as ``perturbx compare``
(``report.html``, ``report.md``, ``results.csv``, ``summary.csv``, ``maps.png``,
``curves.png``).

It prints one line per method: model queries, seconds, and how often the map's peak
falls on the object, then the wall time of the comparison (the number the report shows).

LIME and KernelSHAP run here with ``baseline=0.0`` rather than their default ``"mean"``:
see :func:`default_explainers` and :func:`baseline_note`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .compare import Comparison, compare
from .dataset_runs import THREADS_ENV, default_threads
from .metrics.localisation import pointing_game
from .registry import METHODS, available_methods, make_explainer

#: metrics of the demo; "all" adds max-sensitivity and the randomisation check
DEMO_METRICS = ("deletion", "insertion", "pointing_game", "energy_pointing", "infidelity")
#: Methods whose default baseline ("mean": each hidden superpixel filled with its own mean colour) the demo
#: replaces by 0.0, the baseline of occlusion and RISE. On the demo's images the object is one flat colour, so
#: a mean-filled object is the object: hiding every superpixel barely moves the score, and the maps (changes of
#: a few thousandths of the score) painted the object deep blue, "against its class". With 0.0 a hidden
#: superpixel turns black and the object can disappear. :func:`baseline_note` measures this on the run's images.
ZERO_BASELINE = ("lime", "kernelshap")
TITLE = "perturbx demo: every method on held-out synthetic shapes"


def demo_methods() -> list[str]:
    """Every available classifier method except the mask-optimisation ones (minutes per image on a CPU)."""
    return [n for n in available_methods() if METHODS[n].kind not in ("optimisation", "detection")]


def default_explainers(random_state: int = 0, size: tuple[int, int] = (64, 64),
                       methods: list[str] | None = None) -> dict[str, object]:
    """The methods of :func:`demo_methods` (or ``methods``), at the registry's settings for ``size``.

    LIME and KernelSHAP get ``baseline=0.0`` (:data:`ZERO_BASELINE`). Returns a dict
    display name -> explainer.
    """
    names = demo_methods() if methods is None else methods
    out = {}
    for n in names:
        explainer = make_explainer(n, size=size, random_state=random_state)
        if n in ZERO_BASELINE:
            explainer = type(explainer)(**{**METHODS[n].settings(tuple(size), random_state), "baseline": 0.0})
        out[METHODS[n].label] = explainer
    return out


def baseline_note(model, images: np.ndarray, labels: np.ndarray) -> str:
    """Why LIME and KernelSHAP use ``baseline=0.0`` here, with the scores measured on ``images``.

    Compares the explained class's score on each image, ``f(x)``, with its score when every
    SLIC superpixel (LIME's and KernelSHAP's default segmentation) is filled with its mean
    colour (their default baseline) and when the image is black (the demo's baseline).

    Parameters
    ----------
    model : perturbx.adapters.Adapter
        The demo CNN (CHW layout).
    images : ndarray (N, 3, H, W)
    labels : ndarray (N,) of int
        The explained classes.
    """
    from .segmentation import compute_segments, segment_mean

    means = np.stack([segment_mean(x, compute_segments("slic", x, model.layout, "the demo")) for x in images])
    rows = np.arange(len(images))
    fx, fmean, fblack = (model.predict(b.astype(np.float32))[rows, labels]
                         for b in (images, means, np.zeros_like(images)))

    def span(s: np.ndarray) -> str:
        return f"{s.min():.2f}–{s.max():.2f}"

    return (f"LIME and KernelSHAP run with baseline=0.0 (a hidden superpixel turns black, as a hidden pixel does "
            f"for occlusion and RISE) instead of their default \"mean\" (a hidden superpixel filled with its own "
            f"mean colour). On these {len(images)} images the explained class scores f(x) = {span(fx)}. With every "
            f"superpixel filled with its mean colour it still scores {span(fmean)} (it moves by "
            f"{span(np.abs(fx - fmean))}), because each object is one flat colour and keeps its shape: the maps "
            f"would share out that small change and draw it in full colour. A black image scores {span(fblack)} "
            f"(a change of {span(np.abs(fx - fblack))}).")


@dataclass
class MethodSummary:
    """What the demo prints for one method.

    ``hits`` and ``hits_strict`` add up the pointing game over the images (within 15 px,
    and on the object itself): a map whose maximum is shared by several pixels scores the
    share of them that hit, so the sums need not be whole numbers.
    """

    name: str
    queries: float
    seconds: float
    hits: float
    hits_strict: float
    n: int
    deletion_auc: float = float("nan")
    insertion_auc: float = float("nan")

    def line(self) -> str:
        return (f"{self.name:<17} {self.queries:>6.0f} queries/image {self.seconds:>7.3f} s/image  "
                f"peak on object {self.hits_strict:.3g}/{self.n} (within 15 px: {self.hits:.3g}/{self.n})  "
                f"deletion AUC {self.deletion_auc:.3f}  insertion AUC {self.insertion_auc:.3f}")


def summarise(comp: Comparison) -> list[MethodSummary]:
    """One :class:`MethodSummary` per method of a comparison with ground truth."""
    out = []
    for method in comp.methods:
        rows = [r for r in comp.rows if r["method"] == method]
        maps = comp.maps[method]
        hits = [pointing_game(maps[i], comp.ground_truth[i]) for i in range(comp.n_images)]
        strict = [pointing_game(maps[i], comp.ground_truth[i], tolerance=0) for i in range(comp.n_images)]
        out.append(MethodSummary(method, float(np.mean([r["queries"] for r in rows])),
                                 float(np.mean([r["seconds"] for r in rows])), float(np.nansum(hits)),
                                 float(np.nansum(strict)), len(rows),
                                 float(np.nanmean([r.get("deletion_auc", np.nan) for r in rows])),
                                 float(np.nanmean([r.get("insertion_auc", np.nan) for r in rows]))))
    return out


def run_demo(out: str | Path = "perturbx-demo", n_images: int = 6, *, cache_dir: str | None = None,
             random_state: int = 0, progress: bool | None = None, methods: list[str] | None = None,
             metrics: object = DEMO_METRICS, n_jobs: int = 1) -> Comparison:
    """Train or load the demo CNN, compare the methods on ``n_images`` held-out images, write the report.

    Parameters
    ----------
    out : folder for the report, figures and CSV (created if needed)
    n_images : int, default 6
    cache_dir : where the trained demo CNN is cached
    random_state : int, default 0
        Seed of the sampling methods.
    progress : bool or None
        Progress bars of the methods (None: on a terminal).
    methods : list of str, optional
        Registry names; default :func:`demo_methods` (every available method but the
        slow mask-optimisation ones, which ``methods=available_methods()`` adds).
    metrics : default :data:`DEMO_METRICS`
    n_jobs : int, default 1

    Returns
    -------
    Comparison
    """
    from .models import _cache_path, load_demo_model

    with torch_threads() as threads:
        t0 = time.perf_counter()
        net = load_demo_model(cache_dir=cache_dir)
        print(f"demo CNN ready in {time.perf_counter() - t0:.1f} s (torch threads: {threads}; set "
              f"{THREADS_ENV} to change; weights cached in {_cache_path(cache_dir)}: delete it to retrain)")
        return _compare_and_write(net, out, n_images, random_state, progress, methods, metrics, n_jobs)


@contextmanager
def torch_threads():
    """Torch's threads pinned to :func:`~perturbx.dataset_runs.default_threads` inside, restored after.

    Yields the number of threads. PyTorch's default (every core) collapses when another busy
    process shares the machine; half the cores (or ``$PERTURBX_THREADS``) does not.
    """
    import torch

    threads, before = default_threads(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)


def _compare_and_write(net, out, n_images: int, random_state: int, progress, methods, metrics,
                       n_jobs: int) -> Comparison:
    """The part of :func:`run_demo` after the model is ready: compare, write, print."""
    from .adapters import Torch
    from .datasets import make_shapes
    from .models import DEMO_TEST_SEED

    data = make_shapes(n_images, random_state=DEMO_TEST_SEED + 1)
    explainers = default_explainers(random_state, data.images.shape[-2:], methods)
    for e in explainers.values():
        if hasattr(e, "progress"):
            e.progress = progress
    model = Torch(net, batch_size=128, output="probs")
    comp = compare(model, data.images, explainers, metrics=list(metrics), ground_truth=data.masks, n_jobs=n_jobs,
                   targets=data.labels, class_names=data.class_names, random_state=random_state)
    if any(METHODS[n].label in comp.methods for n in ZERO_BASELINE):
        comp.params["notes"] = {"baselines": baseline_note(model, data.images, data.labels)}
    from .report import write_outputs

    write_outputs(comp, out, title=TITLE, n_images=None)
    out = Path(out)
    for s in summarise(comp):
        print(s.line())
    print(f"compare() wall time: {comp.params['compare']['wall_seconds']:.1f} s ({len(comp.methods)} methods on "
          f"{n_images} images, explaining and scoring; the report shows the same number)")
    skipped = [n for n in available_methods() if METHODS[n].label not in comp.methods and methods is None]
    slow = [n for n in skipped if METHODS[n].kind != "detection"]
    if slow:
        print(f"not run (mask optimisation, minutes per image on a CPU): {', '.join(slow)}; "
              f"add them with --methods all")
    if len(slow) < len(skipped):
        detection = ", ".join(n for n in skipped if n not in slow)
        print(f"for object detectors: {detection} (perturbx demo --task detection)")
    print(f"report: {out / 'report.html'}  figure: {out / 'maps.png'}")
    return comp
