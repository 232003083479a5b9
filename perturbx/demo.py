"""The built-in demo: compare every available method on held-out synthetic images of the demo CNN.

Run it with ``perturbx demo``. It trains the demo CNN once (cached), draws held-out
images whose object masks are known, explains each with every available method (the
black-box ones, and the gradient ones when PyTorch is installed; the mask-optimisation
methods only on request, as they take minutes per image on a CPU), scores the maps
(deletion, insertion, pointing game, energy pointing, infidelity, cost) and writes
into the output folder:

- ``report.html``: one self-contained page (figures embedded, tables, parameters, versions);
- ``report.md``: the summary table; ``results.csv``: one row per image and method;
- ``demo.png``: images (object outlined) x methods; ``curves.png``: deletion/insertion curves.

It prints one line per method: model queries, seconds, and how often the map's peak
falls on the object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .compare import Comparison, compare
from .metrics.localisation import pointing_game
from .registry import METHODS, available_methods, make_explainer

#: metrics of the demo; "all" adds max-sensitivity and the randomisation check
DEMO_METRICS = ("deletion", "insertion", "pointing_game", "energy_pointing", "infidelity")


def demo_methods() -> list[str]:
    """Every available method except the mask-optimisation ones (minutes per image on a CPU)."""
    return [n for n in available_methods() if METHODS[n].kind != "optimisation"]


def default_explainers(random_state: int = 0, size: tuple[int, int] = (64, 64),
                       methods: list[str] | None = None) -> dict[str, object]:
    """The methods of :func:`demo_methods` (or ``methods``), at the registry's settings for ``size``.

    Returns a dict display name -> explainer.
    """
    names = demo_methods() if methods is None else methods
    return {METHODS[n].label: make_explainer(n, size=size, random_state=random_state) for n in names}


def peak_on_object(attribution: np.ndarray, mask: np.ndarray, tolerance: float = 15.0) -> bool:
    """True when the map's maximum lies within ``tolerance`` pixels of the object mask."""
    return pointing_game(attribution, mask, tolerance=tolerance)


@dataclass
class MethodSummary:
    """What the demo prints for one method."""

    name: str
    queries: float
    seconds: float
    hits: int
    hits_strict: int
    n: int
    deletion_auc: float = float("nan")
    insertion_auc: float = float("nan")

    def line(self) -> str:
        return (f"{self.name:<15} {self.queries:>6.0f} queries/image {self.seconds:>7.3f} s/image  "
                f"peak on object {self.hits_strict}/{self.n} (within 15 px: {self.hits}/{self.n})  "
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
                                 float(np.mean([r["seconds"] for r in rows])), sum(hits), sum(strict), len(rows),
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
    from .adapters import Torch
    from .datasets import make_shapes
    from .models import DEMO_TEST_SEED, load_demo_model

    t0 = time.perf_counter()
    net = load_demo_model(cache_dir=cache_dir)
    print(f"demo CNN ready in {time.perf_counter() - t0:.1f} s")
    data = make_shapes(n_images, random_state=DEMO_TEST_SEED + 1)
    explainers = default_explainers(random_state, data.images.shape[-2:], methods)
    for e in explainers.values():
        if hasattr(e, "progress"):
            e.progress = progress
    t1 = time.perf_counter()
    comp = compare(Torch(net, batch_size=128, output="probs"), data.images, explainers, metrics=list(metrics),
                   ground_truth=data.masks, n_jobs=n_jobs, targets=data.labels, class_names=data.class_names,
                   random_state=random_state)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    comp.save_figures(out, n_images=None, grid="demo.png")
    comp.to_csv(out / "results.csv")
    (out / "report.md").write_text("# perturbx demo\n\n" + comp.to_markdown(), encoding="utf-8")
    comp.to_html(out / "report.html", title="perturbx demo: every method on held-out synthetic shapes",
                 n_images=None)
    for s in summarise(comp):
        print(s.line())
    print(f"compared {len(comp.methods)} methods on {n_images} images in {time.perf_counter() - t1:.1f} s")
    skipped = [n for n in available_methods() if METHODS[n].label not in comp.methods and methods is None]
    if skipped:
        print(f"not run (mask optimisation, minutes per image on a CPU): {', '.join(skipped)}; "
              f"add them with --methods all")
    print(f"report: {out / 'report.html'}  figure: {out / 'demo.png'}")
    return comp
