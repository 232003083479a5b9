"""Hand perturbx results to other libraries.

:func:`to_shap` turns an :class:`~perturbx.Explanation` into a ``shap.Explanation`` that
``shap.image_plot`` (``shap.plots.image``) draws, so shap users keep their plots.
shap is imported only when called.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_shap(explanation: Any, output_names: list[str] | None = None):
    """A ``shap.Explanation`` of one image with the attributions of every target.

    Parameters
    ----------
    explanation : perturbx.Explanation
        Any perturbx explanation of an image sample (layout "CHW", "HWC" or "HW").
    output_names : list of str, optional
        Names of the targets, shown as titles by ``shap.image_plot``; defaults to
        ``"class <index>"``.

    Returns
    -------
    shap.Explanation
        ``values`` (1, H, W, C, T): each pixel's attribution split evenly over its C
        channels (``image_plot`` sums the channel axis back, so it draws the perturbx
        map); ``data`` (1, H, W, C): the input, channels last; ``base_values`` (1, T):
        the score of the baseline when the method has one (``base_value`` of
        KernelSHAP), else the model's scores minus the sum of the attributions;
        ``output_names``: one per target.

    Raises
    ------
    ValueError
        The explanation does not hold its input image (``explanation.input`` is None).
    ImportError
        shap is not installed.
    """
    try:
        import shap
    except ImportError as exc:
        raise ImportError("to_shap needs shap: pip install shap") from exc
    if explanation.input is None:
        raise ValueError("to_shap needs the explained image, but this Explanation has input=None; "
                         "build it with explain() or set its input (one sample in input_layout).")
    data = _channels_last(np.asarray(explanation.input, dtype=np.float64), explanation.input_layout)
    maps = np.asarray(explanation.maps(), dtype=np.float64)  # (T, H, W)
    n_channels = data.shape[-1]
    values = np.broadcast_to(np.moveaxis(maps, 0, -1)[:, :, None, :] / n_channels,
                             (*maps.shape[1:], n_channels, len(maps)))
    base = explanation.extras.get("base_value")
    if base is None:
        base = np.asarray(explanation.scores, dtype=np.float64) - maps.reshape(len(maps), -1).sum(axis=1)
    names = list(output_names) if output_names is not None else [f"class {int(t)}" for t in explanation.targets]
    if len(names) != len(maps):
        raise ValueError(f"output_names has {len(names)} names but the explanation has {len(maps)} targets; "
                         f"give one name per target.")
    return shap.Explanation(values=np.ascontiguousarray(values)[None], base_values=np.asarray(base)[None],
                            data=data[None], output_names=names)


def _channels_last(x: np.ndarray, layout: str) -> np.ndarray:
    """One sample as (H, W, C)."""
    if layout == "CHW":
        return np.moveaxis(x, 0, -1)
    if layout == "HW":
        return x[:, :, None]
    return x
