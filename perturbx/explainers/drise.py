"""D-RISE: RISE for object detectors (Petsiuk et al. 2021)."""

from __future__ import annotations

from perturbx.targets import Detection

from .rise import RISE


class DRISE(RISE):
    """RISE with the D-RISE target: one saliency map per detection of an object detector.

    This is :class:`~perturbx.RISE` (the same masks, streamed per chunk on the model's
    device, the same estimators) with the paper's defaults and
    :class:`perturbx.targets.Detection` as the default target: ``target=None`` explains
    every detection of ``x`` with score >= 0.5 (``attributions`` ``(T, H, W)``), a
    ``Detection(box, label)`` one box. The weight of a mask is the best match over the
    perturbed image's detections of ``IoU x class similarity x objectness``
    (:class:`~perturbx.targets.Detection` says how each detector output format is read).
    ``RISE(...).explain(model, x, target=Detection(...))`` gives the same maps.

    Parameters
    ----------
    n_masks : int, default 5000
        The paper's number of masks for a detector (model queries, plus one for ``x``).
    grid_size : int or (gh, gw), default 16
        The paper's grid for detectors: finer than RISE's 7, since objects are smaller
        than the image.
    p_keep : float, default 0.5
    min_score : float, default 0.5
        With ``target=None``: the smallest score of a detection to explain.
    **kwargs
        Every other parameter of :class:`~perturbx.RISE` (``baseline``, ``random_state``,
        ``tolerance``, ``control_variate``, ...). ``control_variate=False`` is the paper's
        estimator ``sum_n w_n M_n`` up to the constant factor ``1 / (n_masks p_keep)``.

    Notes
    -----
    Memory does not grow with ``n_masks``: masks are drawn per chunk from the seeded
    stream and folded into the running map (xaitk-saliency's D-RISE holds every mask).
    """

    def __init__(self, n_masks: int = 5000, grid_size=16, p_keep: float = 0.5, *, min_score: float = 0.5,
                 baseline=0.0, random_state=None, progress: bool | None = None, max_queries: int | None = None,
                 tolerance: float | None = None, min_queries: int = 100, control_variate: bool = True) -> None:
        super().__init__(n_masks, grid_size, p_keep, baseline=baseline, random_state=random_state,
                         progress=progress, max_queries=max_queries, tolerance=tolerance, min_queries=min_queries,
                         control_variate=control_variate)
        Detection(min_score=min_score)  # validates min_score
        self.min_score = min_score

    def _default_target(self) -> Detection:
        return Detection(min_score=self.min_score)
