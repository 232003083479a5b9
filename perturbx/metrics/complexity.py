"""How concentrated is a map? Sparseness (Gini index) and complexity (entropy).

Both read the map alone (no model query) and use absolute attributions, since a
share of relevance is only defined for non-negative values:

- :func:`sparseness` (Chalasani et al. 2020): the Gini index of ``|a|``, 0 for a uniform
  map, ``1 - 1/n`` when one pixel holds everything (higher is sparser);
- :func:`complexity` (Bhatt, Weller & Moura 2020): the entropy of ``|a| / sum |a|`` in
  nats, 0 for one pixel, ``log n`` for a uniform map (lower is simpler).

Quantus 0.6 adds ``1e-7`` to every value before its Gini index and ``1e-12`` inside its
logarithm; here both are exact (``0 log 0 = 0``), and an all-zero map, whose relevance has
no distribution, gives NaN instead of a number set by those constants.
"""

from __future__ import annotations

import numpy as np

from ._common import as_map

__all__ = ["complexity", "sparseness"]


def sparseness(attribution: object) -> float:
    """Gini index of the absolute attributions (Chalasani et al. 2020).

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)

    Returns
    -------
    float
        ``sum_i (2i - n - 1) v_(i) / (n sum_i v_i)`` over the sorted values ``v_(1) <= ... <= v_(n)``
        of ``|a|``; in ``[0, 1 - 1/n]``, higher is sparser. NaN for an all-zero map.
    """
    amap, _ = as_map(attribution, None, "sparseness")
    v = np.sort(np.abs(amap).ravel())
    n, total = v.size, float(v.sum())
    if total == 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return float(((2 * i - n - 1) * v).sum() / (n * total))


def complexity(attribution: object) -> float:
    """Entropy of the relevance distribution ``|a| / sum |a|`` (Bhatt et al. 2020), in nats.

    Parameters
    ----------
    attribution : Explanation or ndarray (H, W)

    Returns
    -------
    float
        ``-sum p log p`` with ``0 log 0 = 0``; in ``[0, log(H * W)]``, lower is simpler. NaN
        for an all-zero map.
    """
    amap, _ = as_map(attribution, None, "complexity")
    v = np.abs(amap).ravel()
    total = float(v.sum())
    if total == 0:
        return float("nan")
    p = v[v > 0] / total
    return float(-(p * np.log(p)).sum())
