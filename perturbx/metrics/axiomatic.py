"""Completeness (Sundararajan, Taly & Yan 2017): does the map sum to the score's change?

For a map in score units relative to a baseline (integrated gradients, KernelSHAP,
occlusion of the whole image), ``sum(a) = f(x) - f(baseline)``. The gap is a float: the
sum is accumulated in a different order from the model's own arithmetic, so an exact
equality test (Quantus 0.6's ``Completeness``) fails maps that satisfy the axiom up to
rounding. :func:`completeness` reports the gap and judges it with a tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from perturbx._utils import check_random_state
from perturbx.baselines import check_baseline, resolve_baseline
from perturbx.engine import predict_in_batches

from ._common import check_real, prepare

__all__ = ["CompletenessResult", "completeness"]


@dataclass
class CompletenessResult:
    """Outcome of :func:`completeness`.

    Attributes
    ----------
    gap : float
        ``sum(a) - (f(x) - f(baseline))``, in score units.
    change : float
        ``f(x) - f(baseline)``.
    relative_gap : float
        ``|gap| / max(|f(x) - f(baseline)|, |f(x)|)`` (NaN when both are 0).
    complete : bool
        ``|gap| <= atol + rtol * |f(x) - f(baseline)|``.
    """

    gap: float
    change: float
    relative_gap: float
    complete: bool


def completeness(model: object, x: np.ndarray, attribution: object, target: object = None, *,
                 baseline: object = 0.0, rtol: float = 1e-4, atol: float = 1e-6,
                 random_state: object = 0) -> CompletenessResult:
    """Completeness gap of a map relative to a baseline, judged with a tolerance.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
    x : ndarray
        One sample in the adapter's layout.
    attribution : Explanation or ndarray (H, W)
        A map in score units (channels summed).
    target : optional
        Default: the Explanation's target, else the top class.
    baseline : baseline spec, default 0.0
        The reference input the map is relative to.
    rtol, atol : float, default 1e-4 and 1e-6
        Tolerance of the judgement (relative to ``|f(x) - f(baseline)|``, and absolute in
        score units): float32 models sum thousands of terms, so rounding alone leaves
        gaps of about 1e-6 relative.
    random_state : int, Generator or None
        Only used by a "noise" baseline.

    Returns
    -------
    CompletenessResult

    Notes
    -----
    Queries: 2 (``x`` and the baseline, in one batch).
    """
    owner = "completeness"
    rtol, atol = check_real(rtol, "rtol", owner, low_open=False), check_real(atol, "atol", owner, low_open=False)
    rng = check_random_state(random_state, owner=f"The 'random_state' argument of {owner}")
    adapter, x, amap, target, _ = prepare(model, x, attribution, target, owner)
    base = resolve_baseline(check_baseline(baseline, owner), x, adapter.layout, rng)
    f = predict_in_batches(adapter, adapter.backend.asarray(np.stack([x, base]), adapter.dtype), target)[:, 0]
    change = float(f[0] - f[1])
    gap = float(amap.sum()) - change
    scale = max(abs(change), abs(float(f[0])))
    return CompletenessResult(gap, change, abs(gap) / scale if scale > 0 else float("nan"),
                              bool(abs(gap) <= atol + rtol * abs(change)))
