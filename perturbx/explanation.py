"""The result of every explainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(repr=False)
class Explanation:
    """Attributions for one sample and the facts about how they were made.

    Attributes
    ----------
    attributions : ndarray
        ``(H, W)`` when one target was asked for (an int, None, one box ...), ``(T, H, W)``
        for several. Positive values support the target (raise its scalar).
    targets : ndarray of int, shape (T,)
        One int per scalar explained: the class indices for class targets, and for other
        targets their ``labels`` (output index, channel, detected label; see :attr:`target`).
    n_queries : int
        Model rows evaluated for this explanation, the unperturbed input included.
    seconds : float
        Wall-clock time of the whole ``explain`` call.
    method : str
        Name of the explainer.
    params : dict
        The explainer's configuration (``get_params()``).
    scores : ndarray, shape (T,)
        The target's scalars for the unperturbed input (class scores for class targets).
    input : ndarray or None
        The explained sample, in the model's layout.
    input_layout : str
        Layout of ``input`` ("CHW", "HWC" or "HW").
    extras : dict
        Method-specific results, also readable as attributes (for example
        ``channel_attributions`` of a per-channel occlusion window).
    target : perturbx.targets.Target or None
        The bound target: what was explained (boxes of a detection, the region's mask ...),
        and how to compute it again on new outputs.
    """

    attributions: np.ndarray
    targets: np.ndarray
    n_queries: int
    seconds: float
    method: str
    params: dict[str, Any]
    scores: np.ndarray
    input: np.ndarray | None = None
    input_layout: str = "CHW"
    extras: dict[str, Any] = field(default_factory=dict)
    target: Any = None

    def __getattr__(self, name: str) -> Any:
        extras = self.__dict__.get("extras", {})
        if name in extras:
            return extras[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('method', '?')} has no "
                             f"attribute {name!r}")

    @property
    def target_names(self) -> list[str]:
        """A display name per scalar explained ("class 3", "label 1 at (10, 12, 30, 40)", ...)."""
        if self.target is not None:
            return list(self.target.names)
        return [f"class {int(t)}" for t in np.atleast_1d(self.targets)]

    def maps(self) -> np.ndarray:
        """Attributions with the target axis always present: ``(T, H, W)``."""
        a = self.attributions
        return a[None] if a.ndim == 2 else a

    def to_shap(self, output_names: list[str] | None = None):
        """This explanation as a ``shap.Explanation`` that ``shap.image_plot`` draws (see :mod:`perturbx.interop`)."""
        from .interop import to_shap

        return to_shap(self, output_names)

    def __repr__(self) -> str:
        """One line: method, map shape, what was explained, its scores, cost."""
        names = self.target_names
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
        scores = np.atleast_1d(np.asarray(self.scores, dtype=float))
        score_text = ", ".join(f"{v:.4g}" for v in scores[:4]) + (", ..." if scores.size > 4 else "")
        return (f"Explanation({self.method}, attributions {tuple(np.shape(self.attributions))}, "
                f"targets [{shown}], scores [{score_text}], {self.n_queries} queries, {self.seconds:.3g} s)")

    def plot(self, ax=None, *, target_index: int | None = None, overlay: bool = True, cmap: str = "RdBu_r",
             alpha: float = 0.6, title: str | None = None, colorbar: bool = True):
        """Draw the maps, one panel per target, each over the input image when ``overlay``.

        Needs matplotlib (``pip install 'perturbx[viz]'``). Every panel has its own colour
        scale, symmetric about 0 (blue: against the target, red: for it), and a colour bar
        in the map's units (score change).

        Parameters
        ----------
        ax : matplotlib Axes or sequence of Axes, optional
            Where to draw: one Axes per map drawn. By default a new figure, with the maps
            of several targets in a grid (at most 4 per row).
        target_index : int, optional
            Draw only this target's map. By default every target's.
        overlay, cmap, alpha :
            Draw over a grey copy of the input with this colour map and opacity.
        title : str, optional
            Title of a single panel (default: method, target name and queries).
        colorbar : bool, default True

        Returns
        -------
        matplotlib Axes for one map, else a numpy array of Axes (one per target, in order).
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("Explanation.plot needs matplotlib: pip install 'perturbx[viz]'") from exc
        maps = self.maps()
        indices = list(range(len(maps))) if target_index is None else [self._check_index(target_index, len(maps))]
        if ax is None:
            cols = min(4, len(indices))
            rows = -(-len(indices) // cols)
            _, grid = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False,
                                   layout="constrained")
            for spare in grid.ravel()[len(indices):]:
                spare.axis("off")
            axes = list(grid.ravel()[:len(indices)])
        else:
            axes = list(np.ravel(np.asarray(ax, dtype=object)))
            if len(axes) != len(indices):
                raise ValueError(f"The 'ax' parameter of Explanation.plot must hold one Axes per map drawn "
                                 f"({len(indices)}). Got {len(axes)}; pass target_index= to draw one map, or "
                                 f"leave ax out to get a grid.")
        for a, i in zip(axes, indices, strict=True):
            label = title if title is not None and len(indices) == 1 else (
                f"{self.method} · {self.target_names[i]} · {self.n_queries} queries")
            self._draw(a, maps[i], label, overlay=overlay, cmap=cmap, alpha=alpha, colorbar=colorbar)
        return axes[0] if len(axes) == 1 else np.array(axes, dtype=object)

    @staticmethod
    def _check_index(index: object, n: int) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise ValueError(f"The 'target_index' parameter of Explanation.plot must be an int in [0, {n}) (the "
                             f"explanation has {n} target(s)), or None to draw them all. Got {index!r}.")
        return int(index) % n

    def _draw(self, ax, heat: np.ndarray, label: str, *, overlay: bool, cmap: str, alpha: float,
              colorbar: bool) -> None:
        """One map on ``ax``: colour scale symmetric about 0, with its colour bar."""
        over = overlay and self.input is not None
        if over:
            ax.imshow(_display_image(self.input, self.input_layout), cmap="gray")
        lim = float(np.max(np.abs(heat))) or 1.0
        image = ax.imshow(heat, cmap=cmap, vmin=-lim, vmax=lim, alpha=alpha if over else 1.0)
        if colorbar:
            bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            if bar.solids is not None:
                bar.solids.set_alpha(1.0)
        ax.set_title(label, fontsize=9)
        ax.axis("off")


def _display_image(x: np.ndarray, layout: str) -> np.ndarray:
    """The sample as an (H, W) or (H, W, 3) image scaled to [0, 1] for display."""
    img = np.moveaxis(x, 0, -1) if layout == "CHW" else x
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] != 3:
        img = img.mean(axis=-1)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
