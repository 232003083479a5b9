"""matplotlib figures of a comparison: the maps grid (``maps.png``) and the mean curves (``curves.png``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from perturbx.compare import Comparison, format_scale

__all__ = ["CMAP", "curves_figure", "figure_png", "maps_figure", "save_figures"]

#: The one diverging colour map of every map, symmetric about zero (red > 0, white 0, blue < 0)
CMAP = "RdBu_r"
#: Weight of the map's colour over the greyscale image
ALPHA = 0.65
_GRID = np.linspace(0.0, 1.0, 101)


def _new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("Comparison figures and reports need matplotlib: pip install 'perturbx[viz]'") from exc
    return Figure(figsize=(width, height))


def _shown(comp: Comparison, n_images: int | None) -> int:
    return comp.n_images if n_images is None else max(1, min(int(n_images), comp.n_images))


def target_name(comp: Comparison, i: int) -> str:
    """What image ``i`` explains: its class's name, "class k", or a target's own name (a box, a region)."""
    target = comp.rows[i * len(comp.methods)]["target"]
    if not isinstance(target, (int, np.integer)):
        return str(target)
    if comp.class_names and 0 <= target < len(comp.class_names):
        return str(comp.class_names[target])
    return f"class {target}"


def maps_figure(comp: Comparison, *, n_images: int | None = 8, path: str | Path | None = None, dpi: int = 90):
    """Grid of images (rows) x methods (columns), ground truth outlined in green.

    Every map is drawn in :data:`CMAP` from ``-max|a|`` to ``+max|a|`` (symmetric about
    zero) over the greyscale image; ``max|a|`` is printed under it, with "negligible"
    when :meth:`~perturbx.compare.Comparison.map_scale` says so.

    Parameters
    ----------
    comp : Comparison
    n_images : int or None, default 8
        First images shown (None: all).
    path : str or Path, optional
        Also save the figure there (PNG at ``dpi``).
    dpi : int, default 90

    Returns
    -------
    matplotlib.figure.Figure
    """
    n = _shown(comp, n_images)
    cols = 1 + len(comp.methods)
    fig = _new_figure(1.9 * cols, 2.15 * n + 0.3)
    axes = np.atleast_2d(fig.subplots(n, cols, squeeze=False))
    gray = comp.images if comp.images.ndim == 3 else comp.images.mean(axis=-1)
    for i in range(n):
        score = "" if comp.scores is None else f" · f(x) {comp.scores[i]:.3f}"
        axes[i, 0].imshow(comp.images[i], cmap="gray" if comp.images.ndim == 3 else None)
        axes[i, 0].set_title(f"#{i} · {target_name(comp, i)}{score}", fontsize=8)
        for j, method in enumerate(comp.methods):
            _map_panel(axes[i, j + 1], comp, method, i, gray[i])
        for ax in axes[i]:
            if comp.ground_truth is not None and comp.ground_truth[i].any():
                ax.contour(comp.ground_truth[i], levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def _map_panel(ax, comp: Comparison, method: str, i: int, gray: np.ndarray) -> None:
    scale = comp.map_scale(method, i)
    lim = scale.max_abs or 1.0
    ax.imshow(gray, cmap="gray")
    ax.imshow(comp.maps[method][i], cmap=CMAP, vmin=-lim, vmax=lim, alpha=ALPHA)
    ax.set_title(method, fontsize=8)
    label = f"±{format_scale(scale.max_abs)}"
    if scale.negligible:
        label += " · negligible"
    ax.set_xlabel(label, fontsize=7, color="#b00020" if scale.negligible else "#333333", labelpad=2)
    for spine in ax.spines.values():
        spine.set_visible(bool(scale.negligible))
        spine.set_color("#b00020")
        spine.set_linewidth(1.5)


def curves_figure(comp: Comparison, *, path: str | Path | None = None, dpi: int = 90):
    """Mean curve per method on a common fraction grid (linear interpolation); None without curve metrics.

    Parameters
    ----------
    comp : Comparison
    path : str or Path, optional
        Also save the figure there.
    dpi : int, default 90

    Returns
    -------
    matplotlib.figure.Figure or None
    """
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
        ax.set_ylabel("the target's score")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def figure_png(comp: Comparison, kind: str, n_images: int | None = 8, dpi: int = 90) -> bytes | None:
    """The maps grid (``kind="grid"``) or the curves (``"curves"``) as PNG bytes, drawn once per comparison."""
    key = (kind, n_images if kind == "grid" else None, dpi)
    if key not in comp._png_cache:
        fig = (maps_figure(comp, n_images=n_images, dpi=dpi) if kind == "grid"
               else curves_figure(comp, dpi=dpi))
        comp._png_cache[key] = None if fig is None else _png_bytes(fig, dpi)
    return comp._png_cache[key]


def _png_bytes(fig, dpi: int) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figures(comp: Comparison, folder: str | Path, *, n_images: int | None = 8, grid: str = "maps.png",
                 curves: str = "curves.png") -> list[Path]:
    """Write the maps grid and (with curve metrics) the curves as PNG files into ``folder``.

    Returns
    -------
    list of Path
        The files written.
    """
    folder = Path(folder)
    out = []
    for kind, name in (("grid", grid), ("curves", curves)):
        png = figure_png(comp, kind, n_images)
        if png is not None:
            (folder / name).write_bytes(png)
            out.append(folder / name)
    return out
