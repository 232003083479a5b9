"""Result objects of a visualisation and of a pre-image."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import figures


@dataclass
class Visualization:
    """Images generated to maximise ``m`` objectives, ``k`` images each.

    Attributes
    ----------
    images : ndarray, shape (m, k, *sample_shape), float32
        The images in [0, 1], in the adapter's layout (feed them to the model as they are).
    rgb : ndarray, shape (m, k, H, W, 3), float32
        The same for display.
    objective : ndarray, shape (steps_done, m, k)
        Objective of every image at every step, on the transformed images the optimiser saw
        (for the zeroth-order optimiser, the mean over the step's perturbed evaluations).
    final_objective : ndarray, shape (m, k)
        Objective of the final, untransformed images.
    probabilities : ndarray, shape (m, k, n_classes)
        Class probabilities of the final images (the softmax of the model's output, or the
        output itself when it already is a distribution).
    objectives : list of str
        ``repr`` of each objective (the grid's row labels).
    n_queries : int
        Model rows evaluated (optimisation and the final scoring).
    seconds : float
    optimizer : {"autograd", "zeroth_order"}
    steps_done : int
        Steps run (fewer than asked when ``max_queries`` cut the run short).
    stopped_by_budget : bool
    params : dict
        The visualiser's configuration (``get_params()``).
    layout : str
        The adapter's input layout.
    """

    images: np.ndarray
    rgb: np.ndarray
    objective: np.ndarray
    final_objective: np.ndarray
    probabilities: np.ndarray
    objectives: list[str]
    n_queries: int
    seconds: float
    optimizer: str
    steps_done: int
    stopped_by_budget: bool
    params: dict[str, Any] = field(default_factory=dict)
    layout: str = "CHW"

    def figure(self, row_labels: Sequence[str] | None = None, *, title: str | None = None):
        """A grid, one row per objective and one column per image (matplotlib Figure)."""
        labels = list(self.objectives) if row_labels is None else list(row_labels)
        return figures.grid(self.rgb, row_labels=labels, title=title)

    plot = figure

    def to_png(self, row_labels: Sequence[str] | None = None, *, title: str | None = None, dpi: int = 100) -> bytes:
        """The grid of :meth:`figure` as PNG bytes (for a report)."""
        return figures.to_png(self.figure(row_labels, title=title), dpi=dpi)


@dataclass
class PreImageResult:
    """An image whose representation at ``layer`` matches that of a given input.

    Attributes
    ----------
    image : ndarray, shape sample_shape, float32
        The pre-image in [0, 1], in the adapter's layout.
    rgb : ndarray, shape (H, W, 3)
    relative_error : float
        ``||phi(x_hat) - phi(x)|| / ||phi(x)||`` at ``layer`` for the final, untransformed image.
    total_variation : float
        Classical total variation of the pre-image, ``mean_{c,u} sqrt(dx^2 + dy^2)``.
    input_total_variation : float
        The same of the input ``x``, for reference.
    objective : ndarray, shape (steps_done,)
        Objective per step (minus squared relative error minus the weighted regularisers).
    relative_error_history : ndarray, shape (steps_done,)
        Relative error per step, on the (transformed) images the optimiser saw.
    layer : str
    n_queries : int
    seconds : float
    steps_done : int
    stopped_by_budget : bool
    params : dict
    layout : str
    """

    image: np.ndarray
    rgb: np.ndarray
    relative_error: float
    total_variation: float
    input_total_variation: float
    objective: np.ndarray
    relative_error_history: np.ndarray
    layer: str
    n_queries: int
    seconds: float
    steps_done: int
    stopped_by_budget: bool
    params: dict[str, Any] = field(default_factory=dict)
    layout: str = "CHW"

    def figure(self, x: np.ndarray | None = None, *, title: str | None = None):
        """The pre-image, next to the input ``x`` (in the adapter's layout) when given."""
        cells = [self.rgb] if x is None else [figures.to_rgb(np.asarray(x), self.layout), self.rgb]
        labels = ["pre-image"] if x is None else ["input", "pre-image"]
        text = title or f"{self.layer}: relative error {self.relative_error:.3f}"
        return figures.grid(np.stack(cells)[None], col_labels=labels, title=text)

    plot = figure
