"""Run several explainers over many images and score them side by side.

:func:`compare` explains every image with every method, scores each explanation with
the chosen metrics (faithfulness, localisation, robustness, sanity) and its cost
(model queries and seconds), and returns a :class:`Comparison`: one row per image and
method, one aggregated row per method (mean and 95 % confidence interval), a markdown
table, a CSV, a figure (images x methods, ground truth outlined) and a self-contained
HTML report.
"""

from __future__ import annotations

import base64
import copy
import csv
import datetime
import html
import io
import json
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .adapters import as_adapter
from .explanation import Explanation, _display_image
from .metrics.faithfulness import Curve
from .metrics.specs import Case, MetricSpec, direction, resolve_metrics

__all__ = ["Comparison", "compare"]

COST_COLUMNS = ("queries", "seconds")
_GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class Comparison:
    """What :func:`compare` measured.

    Attributes
    ----------
    rows : list of dict
        One per (image, method): ``image``, ``method``, ``target`` and one float per
        column of :attr:`columns` (NaN where a metric has no value).
    methods : list of str
    columns : list of str
        Metric columns, then ``queries`` and ``seconds`` (per explanation).
    maps : dict str -> ndarray (N, H, W) float32
        Every method's map of every image.
    images : ndarray (N, H, W, 3) or (N, H, W)
        The images as displayed (scaled to [0, 1]).
    ground_truth : ndarray (N, H, W) of bool or None
    curves : dict
        ``curves[column][method]`` is a list (one per image) of ``(fractions, scores)``
        for the curve metrics (deletion, insertion).
    params : dict
        Every explainer's parameters, every metric's settings, the model and the call.
    versions : dict
        Python, platform and library versions.
    """

    rows: list[dict[str, Any]]
    methods: list[str]
    columns: list[str]
    maps: dict[str, np.ndarray]
    images: np.ndarray
    ground_truth: np.ndarray | None = None
    curves: dict[str, dict[str, list]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    class_names: Sequence[str] | None = None
    _png_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_images(self) -> int:
        return len(self.images)

    def summary(self, confidence: float = 0.95) -> list[dict[str, Any]]:
        """One row per method: ``method``, ``n``, and per column ``<col>`` (mean) and ``<col>_ci`` (half-width).

        The interval is Student's t interval of the mean over images,
        ``t_{(1+confidence)/2, n-1} * sd / sqrt(n)``; NaN values (a metric with no value
        for an image) are left out, and the half-width is NaN for fewer than 2 values.
        """
        out = []
        for method in self.methods:
            rows = [r for r in self.rows if r["method"] == method]
            row: dict[str, Any] = {"method": method, "n": len(rows)}
            for col in self.columns:
                values = np.array([r[col] for r in rows], dtype=np.float64)
                row[col], row[f"{col}_ci"] = mean_ci(values, confidence)
            out.append(row)
        return out

    def to_markdown(self, *, per_image: bool = False, digits: int = 3) -> str:
        """The summary as a markdown table (mean ± CI half-width; arrows say which way is better)."""
        head = ["method", "n"] + [_label(c) for c in self.columns]
        lines = [_md_row(head), _md_row(["---"] * len(head))]
        for row in self.summary():
            lines.append(_md_row([row["method"], str(row["n"])] +
                                 [_cell(row, c, digits) for c in self.columns]))
        if per_image:
            head = ["image", "method", "target", *self.columns]
            lines += ["", _md_row(head), _md_row(["---"] * len(head))]
            lines += [_md_row([str(r["image"]), r["method"], str(r["target"])] +
                              [_fmt(r[c], digits) for c in self.columns]) for r in self.rows]
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | Path, *, summary: bool = False) -> Path:
        """Write the per-image rows (or, with ``summary=True``, the aggregated rows) as CSV."""
        path = Path(path)
        rows = self.summary() if summary else self.rows
        fields = list(rows[0]) if rows else ["method"]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        return path

    def plot(self, *, n_images: int | None = 8, path: str | Path | None = None, dpi: int = 90):
        """Grid of images (rows) x methods (columns), ground truth outlined in green.

        Needs matplotlib. Returns the Figure (also saved to ``path`` when given).
        """
        return _grid_figure(self, n_images=n_images, path=path, dpi=dpi)

    def plot_curves(self, *, path: str | Path | None = None, dpi: int = 90):
        """Mean deletion / insertion curve of every method (one panel per curve metric)."""
        return _curves_figure(self, path=path, dpi=dpi)

    def save_figures(self, folder: str | Path, *, n_images: int | None = 8, grid: str = "maps.png",
                     curves: str = "curves.png") -> list[Path]:
        """Write the maps grid and (with curve metrics) the curves as PNG files into ``folder``.

        The images are rendered once and reused by a later :meth:`to_html` with the same ``n_images``.
        """
        folder = Path(folder)
        out = []
        for kind, name in (("grid", grid), ("curves", curves)):
            png = self._png(kind, n_images)
            if png is not None:
                (folder / name).write_bytes(png)
                out.append(folder / name)
        return out

    def to_html(self, path: str | Path, *, title: str = "perturbx comparison", n_images: int | None = 8) -> Path:
        """One self-contained HTML file: figures embedded as PNG, tables, parameters, versions."""
        return _write_html(self, Path(path), title=title, n_images=n_images)

    def _png(self, kind: str, n_images: int | None, dpi: int = 90) -> bytes | None:
        key = (kind, n_images if kind == "grid" else None, dpi)
        if key not in self._png_cache:
            fig = (_grid_figure(self, n_images=n_images, path=None, dpi=dpi) if kind == "grid"
                   else _curves_figure(self, path=None, dpi=dpi))
            self._png_cache[key] = None if fig is None else _png_bytes(fig, dpi)
        return self._png_cache[key]


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and t-interval half-width of the finite ``values`` (NaN, NaN when there are none)."""
    from scipy import stats

    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size < 2:
        return float(v.mean()), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
    return float(v.mean()), float(half)


def compare(model: object, images: object, explainers: object, metrics: object = "default",
            ground_truth: object = None, n_jobs: int = 1, *, targets: object = None,
            class_names: Sequence[str] | None = None, random_state: int = 0) -> Comparison:
    """Explain every image with every method and score the explanations.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        The model, as for an explainer (set ``output="probs"`` on a Torch adapter for
        the probability-based deletion/insertion curves of the RISE paper).
    images : ndarray (N, *sample_shape) or sequence of samples
        Samples in the adapter's layout.
    explainers : mapping name -> explainer, or sequence of explainers / method names
        Names are resolved by :mod:`perturbx.registry` with settings for the image size.
    metrics : "default", "all", or sequence of names / :mod:`perturbx.metrics.specs` objects
        Cost (queries, seconds) is always measured.
    ground_truth : ndarray (N, H, W) of bool, optional
        Object masks, for the pointing game and energy pointing.
    n_jobs : int, default 1
        Images explained in parallel threads (each with its own copy of the model);
        seconds per explanation then include the contention.
    targets : ndarray (N,) of int, optional
        Class to explain per image; default the model's top class (one extra query
        per image, not charged to any method).
    class_names : sequence of str, optional
        For the report.
    random_state : int, default 0
        Seed of the methods resolved by name.

    Returns
    -------
    Comparison
    """
    adapter = as_adapter(model)
    xs = _check_images(adapter, images)
    masks = _check_masks(ground_truth, xs, adapter)
    spatial = adapter.layout.spatial_shape(xs[0].shape)
    named = _named_explainers(explainers, spatial, random_state)
    specs = resolve_metrics(metrics, masks is not None)
    n_jobs = _check_n_jobs(n_jobs)
    target_arr = _targets(adapter, xs, targets)
    blocks = [b for b in np.array_split(np.arange(len(xs)), min(n_jobs, len(xs))) if b.size]
    work = [(_own_copy(adapter) if len(blocks) > 1 else adapter, block) for block in blocks]
    started = time.perf_counter()
    if len(work) == 1:
        results = [_run_block(a, b, xs, masks, target_arr, named, specs) for a, b in work]
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=len(work), prefer="threads")(
            delayed(_run_block)(a, b, xs, masks, target_arr, named, specs) for a, b in work)
    return _assemble(results, xs, masks, adapter, named, specs, class_names,
                     {"n_jobs": n_jobs, "targets": "given" if targets is not None else "top class",
                      "n_images": len(xs), "random_state": random_state,
                      "wall_seconds": round(time.perf_counter() - started, 3)})


def _check_images(adapter, images: object) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) or (isinstance(images, Sequence) and not isinstance(images, str)):
        seq = list(images)
    else:
        raise TypeError(f"The 'images' argument of compare must be an array (N, *sample_shape) or a sequence of "
                        f"samples. Got {type(images).__name__}.")
    if not seq:
        raise ValueError("The 'images' argument of compare is empty; pass at least one sample.")
    xs = [adapter.check_sample(x) for x in seq]
    shapes = {x.shape for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"The images given to compare have different shapes {sorted(shapes)}; resize them to "
                         f"one shape first.")
    return xs


def _check_masks(ground_truth: object, xs: list[np.ndarray], adapter) -> np.ndarray | None:
    if ground_truth is None:
        return None
    masks = np.asarray(ground_truth)
    expected = (len(xs), *adapter.layout.spatial_shape(xs[0].shape))
    if masks.shape != expected:
        raise ValueError(f"The 'ground_truth' argument of compare must be masks of shape (N, H, W) = {expected}. "
                         f"Got shape {masks.shape}.")
    return masks.astype(bool)


def _check_n_jobs(n_jobs: object) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"The 'n_jobs' argument of compare must be an int >= 1 or -1 (all cores). Got {n_jobs!r}.")
    if n_jobs == -1:
        import os

        return max(1, os.cpu_count() or 1)
    return int(n_jobs)


def _named_explainers(explainers: object, spatial: tuple[int, int], random_state: int) -> dict[str, Any]:
    from .registry import canonical_name, make_explainer

    if isinstance(explainers, str):
        explainers = [e for e in explainers.split(",") if e.strip()]
    items = list(explainers.items()) if isinstance(explainers, Mapping) else [(None, e) for e in explainers]
    if not items:
        raise ValueError("The 'explainers' argument of compare is empty; pass at least one method.")
    named: dict[str, Any] = {}
    for name, exp in items:
        if isinstance(exp, str):
            key = canonical_name(exp)
            name, exp = name or key, make_explainer(key, size=spatial, random_state=random_state)
        if not hasattr(exp, "explain"):
            raise TypeError(f"Every explainer given to compare must have an explain(model, x, target) method. "
                            f"Got {type(exp).__name__}.")
        name = str(name or type(exp).__name__)
        if name in named:
            raise ValueError(f"Two explainers given to compare are both named {name!r}; pass a dict with distinct "
                             f"names.")
        named[name] = exp
    return named


def _targets(adapter, xs: list[np.ndarray], targets: object) -> np.ndarray:
    if targets is None:
        return np.argmax(adapter.predict(np.stack(xs)), axis=1)
    arr = np.asarray(targets)
    if arr.shape != (len(xs),) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"The 'targets' argument of compare must be {len(xs)} class indices (one per image). "
                         f"Got {arr.dtype} array of shape {arr.shape}.")
    return arr.astype(int)


def _own_copy(adapter):
    """A copy with its own query counter and, for a torch adapter, its own module (hooks stay per thread)."""
    out = copy.copy(adapter)
    out.n_queries = 0
    module = getattr(adapter, "module", None)
    if module is not None:
        out.module = copy.deepcopy(module)
    return out


def _run_block(adapter, block: np.ndarray, xs, masks, targets, named: dict[str, Any],
               specs: list[MetricSpec]) -> list[tuple[dict, dict[str, np.ndarray], dict]]:
    """Explain and score the images ``block``; per image a (rows, maps, curves) triple."""
    out = []
    for i in block:
        i = int(i)
        rows, maps, curves = [], {}, {}
        for name, explainer in named.items():
            e = explainer.explain(adapter, xs[i], int(targets[i]))
            row: dict[str, Any] = {"image": i, "method": name, "target": int(targets[i])}
            case = Case(adapter, xs[i], e, explainer, int(targets[i]), None if masks is None else masks[i])
            for spec in specs:
                for col, value in spec(case).items():
                    if isinstance(value, Curve):
                        curves[(col, name)] = (value.fractions, value.scores)
                        value = value.auc
                    row[col] = float(value)
            row["queries"], row["seconds"] = int(e.n_queries), float(e.seconds)
            rows.append(row)
            maps[name] = _single_map(e)
        out.append((rows, maps, curves))
    return out


def _single_map(e: object) -> np.ndarray:
    a = e.attributions if isinstance(e, Explanation) else np.asarray(e)
    return np.asarray(a, dtype=np.float32)


def _assemble(results, xs, masks, adapter, named, specs, class_names, call: dict) -> Comparison:
    per_image = [item for block in results for item in block]
    per_image.sort(key=lambda item: item[0][0]["image"])
    rows = [r for item in per_image for r in item[0]]
    methods = list(named)
    columns = [c for s in specs for c in s.columns] + list(COST_COLUMNS)
    maps = {m: np.stack([item[1][m] for item in per_image]) for m in methods}
    curves: dict[str, dict[str, list]] = {}
    for item in per_image:
        for (col, m), curve in item[2].items():
            curves.setdefault(col, {}).setdefault(m, []).append(curve)
    images = np.stack([_display_image(x, adapter.layout.name) for x in xs]).astype(np.float32)
    params = {"compare": call, "model": repr(adapter),
              "explainers": {m: {"class": type(e).__name__, **_plain(_get_params(e))} for m, e in named.items()},
              "metrics": {s.name: _plain(s.params()) for s in specs}}
    return Comparison(rows, methods, columns, maps, images, masks, curves, params, library_versions(),
                      list(class_names) if class_names is not None else None)


def _get_params(explainer: object) -> dict:
    get = getattr(explainer, "get_params", None)
    return get() if callable(get) else {}


def _plain(value: object) -> Any:
    """JSON-friendly copy of a parameter dict (arrays and objects become short strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    return repr(value)


def library_versions() -> dict[str, str]:
    """Versions of Python, the platform and the libraries that shape the results."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("perturbx", "numpy", "scipy", "scikit-image", "scikit-learn", "torch", "onnxruntime",
                 "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "perturbx" not in out:
        from . import __version__

        out["perturbx"] = __version__
    out["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return out


def _label(col: str) -> str:
    arrow = {1: " ↑", -1: " ↓"}.get(direction(col), "")
    return f"{col}{arrow}"


def _fmt(v: float, digits: int) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"


def _cell(row: dict, col: str, digits: int) -> str:
    """A summary cell: mean ± CI half-width (queries as whole numbers)."""
    return _fmt_ci(row[col], row[f"{col}_ci"], 0 if col == "queries" else digits)


def _fmt_ci(mean: float, half: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(half) or (half == 0 and digits == 0):
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} ± {_fmt(half, digits)}"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _png_bytes(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _params_html(params: dict) -> str:
    """Every explainer's and metric's parameters as tables, the rest as JSON."""
    def table(rows: dict) -> str:
        body = "".join(f"<tr><td>{html.escape(name)}</td><td><code>{html.escape(json.dumps(p, default=str))}"
                       f"</code></td></tr>" for name, p in rows.items())
        return f"<table class=params>{body}</table>"

    rest = {k: v for k, v in params.items() if k not in ("explainers", "metrics")}
    return (f"<h3>Methods</h3>{table(params.get('explainers', {}))}<h3>Metrics</h3>{table(params.get('metrics', {}))}"
            f"<h3>Run</h3><pre>{html.escape(json.dumps(rest, indent=1, default=str))}</pre>")


# --- figures and the HTML report -------------------------------------------------------------------


def _new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("Comparison figures and reports need matplotlib: pip install 'perturbx[viz]'") from exc
    return Figure(figsize=(width, height))


def _grid_figure(comp: Comparison, *, n_images: int | None, path: str | Path | None, dpi: int):
    n = comp.n_images if n_images is None else max(1, min(int(n_images), comp.n_images))
    cols = 1 + len(comp.methods)
    fig = _new_figure(1.9 * cols, 1.9 * n + 0.3)
    axes = np.atleast_2d(fig.subplots(n, cols, squeeze=False))
    gray = comp.images if comp.images.ndim == 3 else comp.images.mean(axis=-1)
    for i in range(n):
        target = comp.rows[i * len(comp.methods)]["target"]
        name = comp.class_names[target] if comp.class_names and target < len(comp.class_names) else f"class {target}"
        axes[i, 0].imshow(comp.images[i], cmap="gray" if comp.images.ndim == 3 else None)
        axes[i, 0].set_title(f"#{i} · {name}", fontsize=8)
        for j, method in enumerate(comp.methods):
            ax = axes[i, j + 1]
            ax.imshow(gray[i], cmap="gray")
            ax.imshow(comp.maps[method][i], alpha=0.65, **_heat_scale(comp.maps[method][i]))
            if i == 0:
                ax.set_title(method, fontsize=9)
        for ax in axes[i]:
            if comp.ground_truth is not None and comp.ground_truth[i].any():
                ax.contour(comp.ground_truth[i], levels=[0.5], colors="lime", linewidths=0.8)
            ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _heat_scale(heat: np.ndarray) -> dict:
    """Colour scale of one map: symmetric red/blue around 0 when it has negative values, else white to red
    from its minimum to its maximum (a map of positive scores, such as RISE's, would otherwise be all red)."""
    lo, hi = float(heat.min()), float(heat.max())
    if lo < 0:
        lim = max(-lo, hi) or 1.0
        return {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}
    return {"cmap": "Reds", "vmin": lo, "vmax": hi if hi > lo else lo + 1.0}


def _curves_figure(comp: Comparison, *, path: str | Path | None, dpi: int):
    """Mean curve per method on a common fraction grid (linear interpolation); None without curve metrics."""
    if not comp.curves:
        return None
    fig = _new_figure(4.2 * len(comp.curves) + 1.8, 3.4)
    axes = np.atleast_1d(fig.subplots(1, len(comp.curves), squeeze=False)[0])
    colours = {m: f"C{k % 10}" for k, m in enumerate(comp.methods)}
    styles = {m: ("-", "--", ":")[(k // 10) % 3] for k, m in enumerate(comp.methods)}
    for ax, (col, per_method) in zip(axes, comp.curves.items(), strict=True):
        for method, curves in per_method.items():
            mean = np.mean([np.interp(_GRID, f, s) for f, s in curves], axis=0)
            ax.plot(_GRID, mean, color=colours[method], linestyle=styles[method], linewidth=1.2, label=method)
        ax.set_title(col.replace("_auc", "") + f" curve (mean of {comp.n_images} images)", fontsize=9)
        ax.set_xlabel("fraction of pixels " + ("removed" if col.startswith("deletion") else "inserted"))
        ax.set_ylabel("score of the target class")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}td.best{font-weight:bold;background:#eef8ee}
img{border:1px solid #ddd}.figure{overflow-x:auto}table.params td{text-align:left}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
.note{color:#555;font-size:13px}"""

_DEFINITIONS = {
    "deletion_auc": "area under the deletion curve: pixels removed in decreasing order of attribution "
                    "(Petsiuk et al. 2018); lower is better",
    "insertion_auc": "area under the insertion curve: pixels inserted into the substrate in the same order; "
                     "higher is better",
    "pointing_game": "share of images whose map maximum lies within 15 px of the object (Zhang et al. 2016)",
    "energy_pointing": "share of the positive attribution that lies on the object",
    "infidelity": "mean squared error between the map's prediction of score drops and the drops under random "
                  "removals, map optimally scaled (Yeh et al. 2019); lower is better",
    "max_sensitivity": "largest relative change of the map under small uniform input noise (Yeh et al. 2019)",
    "randomization_spearman": "Spearman correlation with the map of the fully randomised model "
                              "(Adebayo et al. 2018); near 0 means the map depends on the model",
    "queries": "model rows evaluated per explanation", "seconds": "wall-clock seconds per explanation",
}


def _summary_html(comp: Comparison) -> str:
    summary = comp.summary()
    best = {}
    for col in comp.columns:
        means = np.array([row[col] for row in summary], dtype=np.float64)
        if col == "randomization_spearman":  # best is closest to 0
            means = np.abs(means)
        if np.isfinite(means).any() and direction(col) and len(summary) > 1:
            best[col] = int(np.nanargmax(means * direction(col)))
    head = "".join(f"<th>{html.escape(_label(c))}</th>" for c in comp.columns)
    body = []
    for k, row in enumerate(summary):
        cells = "".join(f'<td{" class=best" if best.get(c) == k else ""}>'
                        f'{html.escape(_cell(row, c, 3))}</td>' for c in comp.columns)
        body.append(f"<tr><td>{html.escape(row['method'])}</td><td>{row['n']}</td>{cells}</tr>")
    return f"<table><tr><th>method</th><th>n</th>{head}</tr>{''.join(body)}</table>"


def _rows_html(comp: Comparison) -> str:
    keys = ["image", "method", "target", *comp.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]) if i < 3 else _fmt(r[c], 4))}</td>"
                                    for i, c in enumerate(keys)) + "</tr>" for r in comp.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _write_html(comp: Comparison, path: Path, *, title: str, n_images: int | None) -> Path:
    figures = [("Maps", comp._png("grid", n_images),
                "Each row is an image (ground-truth object outlined in green when known), each column a method. "
                "Maps with negative values: red supports the explained class, blue speaks against it, on a scale "
                "symmetric around 0; maps without negative values: white at their minimum, red at their maximum."),
               ("Deletion and insertion curves", comp._png("curves", None),
                "Mean over the images of each method's curve.")]
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class=note>{comp.n_images} images · {len(comp.methods)} methods · model "
             f"<code>{html.escape(str(comp.params.get('model', '')))}</code> · "
             f"{html.escape(comp.versions.get('date', ''))}</p>", "<h2>Summary</h2>",
             "<p class=note>Mean over images ± half-width of the 95 % t confidence interval; ↑ higher is better, "
             "↓ lower is better; the best method per column is highlighted.</p>", _summary_html(comp)]
    for heading, png, note in figures:
        if png is not None:
            parts.append(f"<h2>{html.escape(heading)}</h2><p class=note>{html.escape(note)}</p>"
                         f'<div class=figure><img alt="{html.escape(heading)}" src="data:image/png;base64,'
                         f'{base64.b64encode(png).decode("ascii")}"></div>')
    defs = "".join(f"<li><b>{html.escape(c)}</b>: {html.escape(_DEFINITIONS[c])}</li>"
                   for c in comp.columns if c in _DEFINITIONS)
    versions = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in comp.versions.items())
    parts += [f"<h2>Metrics</h2><ul>{defs}</ul>",
              f"<details><summary>Per-image results ({len(comp.rows)} rows)</summary>{_rows_html(comp)}</details>",
              f"<h2>Parameters</h2>{_params_html(comp.params)}",
              f"<h2>Versions</h2><table>{versions}</table>"]
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
    path.write_text(doc, encoding="utf-8")
    return path
