"""Figures (matplotlib, imported only when a figure is asked for; extra "viz").

Every function returns a ``matplotlib.figure.Figure`` made without pyplot (no global
state, no display needed); :func:`to_png` turns one into PNG bytes, which is what a report
embeds.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("perturbx.visualize figures need matplotlib: pip install 'perturbx[viz]'") from exc
    return Figure(figsize=(width, height), layout="constrained")


def to_rgb(images: np.ndarray, layout: str) -> np.ndarray:
    """Display RGB ``(..., H, W, 3)`` in [0, 1] of images ``(..., *sample_shape)`` in ``layout``.

    One channel is shown as grey; of more than three, the first three; two get a zero blue.
    """
    a = np.asarray(images, dtype=np.float32)
    if layout == "HW":
        a = a[..., None]
    elif layout == "CHW":
        a = np.moveaxis(a, -3, -1)
    c = a.shape[-1]
    if c == 1:
        a = np.repeat(a, 3, axis=-1)
    elif c == 2:
        a = np.concatenate([a, np.zeros_like(a[..., :1])], axis=-1)
    return np.clip(a[..., :3], 0.0, 1.0)


def grid(rgb: np.ndarray, *, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
         title: str | None = None, cell: float = 1.6):
    """A grid of images, one row per objective (class, channel) and one column per image.

    Parameters
    ----------
    rgb : ndarray, shape (rows, cols, H, W, 3)
        Display images in [0, 1].
    row_labels, col_labels : sequence of str, optional
    title : str, optional
    cell : float
        Side of one image in inches.

    Returns
    -------
    matplotlib.figure.Figure
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 5 or rgb.shape[-1] != 3:
        raise ValueError(f"grid takes display images of shape (rows, cols, H, W, 3). Got shape {rgb.shape}.")
    rows, cols = rgb.shape[:2]
    for name, labels, size in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(labels) != size:
            raise ValueError(f"The {name!r} parameter of grid needs {size} labels; got {len(labels)}.")
    fig = _figure(cell * cols + 0.4, cell * rows + (0.4 if title else 0.1))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(rgb[r, c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_labels is not None:
                ax.set_ylabel(str(row_labels[r]), fontsize=8)
            if r == 0 and col_labels is not None:
                ax.set_title(str(col_labels[c]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def scatter(embedding: np.ndarray, labels: np.ndarray | None = None, *, names: Sequence[str] | None = None,
            title: str | None = None, annotate: Sequence[str] | None = None):
    """A 2-D embedding ``(N, 2)`` as points coloured by integer ``labels`` (legend from ``names``).

    ``annotate`` writes one text label next to each point (used for meta-SNE's networks).
    """
    e = np.asarray(embedding, dtype=np.float64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"scatter takes an embedding of shape (N, 2). Got shape {e.shape}.")
    fig = _figure(4.2, 3.8)
    ax = fig.subplots()
    if labels is None:
        ax.scatter(e[:, 0], e[:, 1], s=12)
    else:
        labels = np.asarray(labels)
        for value in np.unique(labels):
            pick = labels == value
            name = names[int(value)] if names is not None and int(value) < len(names) else str(value)
            ax.scatter(e[pick, 0], e[pick, 1], s=12, label=name)
        ax.legend(fontsize=7, markerscale=1.5)
    if annotate is not None:
        for (x, y), text in zip(e, annotate, strict=True):
            ax.annotate(str(text), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def to_png(fig, *, dpi: int = 100) -> bytes:
    """PNG bytes of a figure (what a report embeds)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
