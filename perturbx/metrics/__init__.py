"""Metrics that say how far to trust an attribution map.

- faithfulness: :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018), batched
  through the model's adapter like any perturbation;
- localisation: :func:`pointing_game` (Zhang et al. 2016), :func:`energy_pointing`;
- sanity: :func:`model_randomization` (Adebayo et al. 2018; needs PyTorch);
- robustness: :func:`infidelity`, :func:`max_sensitivity` (Yeh et al. 2019).

Cost (model queries and seconds) is read from each :class:`~perturbx.Explanation`.
:func:`perturbx.compare.compare` runs any of them over many images and methods.
"""

from .faithfulness import Curve, deletion, insertion
from .localisation import energy_pointing, pointing_game
from .robustness import infidelity, max_sensitivity
from .sanity import RandomizationResult, model_randomization

__all__ = ["Curve", "RandomizationResult", "deletion", "energy_pointing", "infidelity", "insertion",
           "max_sensitivity", "model_randomization", "pointing_game"]
