"""Estimators: streaming attribution estimates folded from (masks, scores) chunks."""

from .base import Estimator, weighted_mask_sum
from .mask_average import MaskAverage
from .score_drop import ScoreDrop

__all__ = ["Estimator", "MaskAverage", "ScoreDrop", "weighted_mask_sum"]
