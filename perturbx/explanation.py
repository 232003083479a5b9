"""The result of every explainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
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

    def plot(self, ax=None, *, target_index: int = 0, overlay: bool = True, cmap: str = "RdBu_r",
             alpha: float = 0.6, title: str | None = None):
        """Draw one target's map, over the input image when ``overlay``.

        Needs matplotlib (``pip install 'perturbx[viz]'``). Returns the matplotlib Axes.
        The colour scale is symmetric around 0.
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("Explanation.plot needs matplotlib: pip install 'perturbx[viz]'") from exc
        if ax is None:
            _, ax = plt.subplots(figsize=(4, 4))
        heat = self.maps()[target_index]
        if overlay and self.input is not None:
            ax.imshow(_display_image(self.input, self.input_layout), cmap="gray")
        lim = float(np.max(np.abs(heat))) or 1.0
        ax.imshow(heat, cmap=cmap, vmin=-lim, vmax=lim, alpha=alpha if overlay and self.input is not None else 1.0)
        ax.set_title(title if title is not None else
                     f"{self.method} · {self.target_names[target_index]} · {self.n_queries} queries")
        ax.axis("off")
        return ax


def _display_image(x: np.ndarray, layout: str) -> np.ndarray:
    """The sample as an (H, W) or (H, W, 3) image scaled to [0, 1] for display."""
    img = np.moveaxis(x, 0, -1) if layout == "CHW" else x
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[-1] != 3:
        img = img.mean(axis=-1)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
