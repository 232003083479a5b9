"""The built-in demo: explain held-out synthetic images of the demo CNN with every method.

Run it with ``perturbx demo``. It trains the demo CNN once (cached), draws held-out images
whose object masks are known, explains each with every black-box method, writes a figure
(image with the object outlined, one map per method) and prints one line per method:
model queries, seconds, and how often the map's peak falls on the object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from .explainers import RISE, Occlusion, PerturbationExplainer


def default_explainers(random_state: int = 0) -> dict[str, PerturbationExplainer]:
    """The methods the demo compares, at settings suited to 64x64 images."""
    return {
        "Occlusion": Occlusion(window=(12, 12), stride=(4, 4)),
        "RISE": RISE(n_masks=2000, grid_size=7, p_keep=0.5, random_state=random_state),
    }


def peak_on_object(attribution: np.ndarray, mask: np.ndarray, tolerance: float = 15.0) -> bool:
    """True when the map's maximum lies within ``tolerance`` pixels of the object mask."""
    peak = np.unravel_index(int(np.argmax(attribution)), attribution.shape)
    return bool(distance_transform_edt(~mask)[peak] <= tolerance)


@dataclass
class MethodSummary:
    """What the demo prints for one method."""

    name: str
    queries: float
    seconds: float
    hits: int
    hits_strict: int
    n: int

    def line(self) -> str:
        return (f"{self.name:<10} {self.queries:>8.0f} queries/image  {self.seconds:>7.3f} s/image  "
                f"peak on object {self.hits_strict}/{self.n}  (within 15 px: {self.hits}/{self.n})")


def run_demo(out: str | Path = "perturbx-demo", n_images: int = 6, *, cache_dir: str | None = None,
             random_state: int = 0, progress: bool | None = None) -> list[MethodSummary]:
    """Train or load the demo CNN, explain ``n_images`` held-out images, write ``out/demo.png``.

    Returns
    -------
    list of MethodSummary
        One per method, in the order of :func:`default_explainers`.
    """
    from .adapters import Torch
    from .datasets import make_shapes
    from .models import DEMO_TEST_SEED, load_demo_model

    t0 = time.perf_counter()
    net = load_demo_model(cache_dir=cache_dir)
    print(f"demo CNN ready in {time.perf_counter() - t0:.1f} s")
    data = make_shapes(n_images, random_state=DEMO_TEST_SEED + 1)
    model = Torch(net, batch_size=128)
    explainers = default_explainers(random_state)
    for e in explainers.values():
        e.progress = progress
    results = {name: [exp.explain(model, img, target=int(lbl)) for img, lbl in zip(data.images, data.labels,
                                                                                      strict=True)]
               for name, exp in explainers.items()}
    summaries = [_summarise(name, expl, data.masks) for name, expl in results.items()]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figure = _figure(data, results, out / "demo.png")
    for s in summaries:
        print(s.line())
    print(f"figure: {figure}")
    return summaries


def _summarise(name: str, explanations: list, masks: np.ndarray) -> MethodSummary:
    hits = [peak_on_object(e.attributions, m) for e, m in zip(explanations, masks, strict=True)]
    strict = [peak_on_object(e.attributions, m, tolerance=0) for e, m in zip(explanations, masks, strict=True)]
    return MethodSummary(name, float(np.mean([e.n_queries for e in explanations])),
                         float(np.mean([e.seconds for e in explanations])), sum(hits), sum(strict), len(hits))


def _figure(data, results: dict[str, list], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, names = len(data.images), list(results)
    fig, axes = plt.subplots(n, 1 + len(names), figsize=(2.2 * (1 + len(names)), 2.2 * n), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(np.moveaxis(data.images[i], 0, -1))
        axes[i, 0].contour(data.masks[i], levels=[0.5], colors="lime", linewidths=1)
        axes[i, 0].set_title(data.class_names[data.labels[i]], fontsize=9)
        axes[i, 0].axis("off")
        for j, name in enumerate(names):
            e = results[name][i]
            e.plot(axes[i, j + 1], title=f"{name} · {e.n_queries} q")
            axes[i, j + 1].contour(data.masks[i], levels=[0.5], colors="lime", linewidths=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
