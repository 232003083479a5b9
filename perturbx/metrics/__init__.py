"""Metrics that say how far to trust an attribution map, grouped by the property they test.

- faithfulness: :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018; ``order=`` "morf",
  "lerf" or "random" for the controls), :func:`road` (Rong et al. 2022), :func:`irof`
  (Rieger & Hansen 2020), :func:`faithfulness_correlation` (Bhatt et al. 2020),
  :func:`faithfulness_estimate` (Alvarez-Melis & Jaakkola 2018), :func:`monotonicity`
  (Arya et al. 2019), :func:`sufficiency` (Dasgupta et al. 2022), :func:`infidelity`
  (Yeh et al. 2019), :func:`completeness` (Sundararajan et al. 2017); every model query
  batched through the model's adapter like any perturbation;
- robustness: :func:`max_sensitivity`, :func:`avg_sensitivity` (Yeh et al. 2019),
  :func:`local_lipschitz_estimate` (Alvarez-Melis & Jaakkola 2018),
  :func:`relative_input_stability`, :func:`relative_representation_stability`,
  :func:`relative_output_stability` (Agarwal et al. 2022);
- randomisation: :func:`model_randomization` (Adebayo et al. 2018, cascading or
  independent; needs PyTorch), :func:`random_logit` (Sixt et al. 2020);
- complexity: :func:`sparseness` (Gini index), :func:`complexity` (entropy);
- localisation: :func:`pointing_game` (Zhang et al. 2016; tied maxima score their share),
  :func:`energy_pointing`, :func:`relevance_rank_accuracy`, :func:`top_k_intersection`,
  :func:`localisation_auc`, :func:`focus` (on :func:`make_mosaics`).

Cost (model queries and seconds) is read from each :class:`~perturbx.Explanation`.
:func:`perturbx.compare.compare` runs any of them over many images and methods
(:mod:`perturbx.metrics.specs`).
"""

from . import specs  # noqa: F401  (before trust: specs imports the spec modules, which import it)
from .axiomatic import CompletenessResult, completeness
from .complexity import complexity, sparseness
from .correlation import faithfulness_correlation, faithfulness_estimate, monotonicity
from .faithfulness import Curve, deletion, insertion
from .focus import Mosaics, focus, make_mosaics
from .irof import IrofCurve, irof
from .localisation import energy_pointing, pointing_game
from .randomisation import random_logit
from .ranking import localisation_auc, relevance_rank_accuracy, top_k_intersection
from .road import RoadCurve, road
from .robustness import avg_sensitivity, infidelity, local_lipschitz_estimate, max_sensitivity
from .sanity import RandomizationResult, model_randomization
from .stability import relative_input_stability, relative_output_stability, relative_representation_stability
from .sufficiency import sufficiency
from .trust import (
    ClassSensitivityResult,
    FragilityResult,
    InvarianceResult,
    class_sensitivity,
    fragility,
    input_invariance,
)

__all__ = [
    "ClassSensitivityResult",
    "CompletenessResult",
    "Curve",
    "FragilityResult",
    "InvarianceResult",
    "IrofCurve",
    "Mosaics",
    "RandomizationResult",
    "RoadCurve",
    "avg_sensitivity",
    "class_sensitivity",
    "completeness",
    "complexity",
    "deletion",
    "energy_pointing",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "focus",
    "fragility",
    "infidelity",
    "input_invariance",
    "insertion",
    "irof",
    "local_lipschitz_estimate",
    "localisation_auc",
    "make_mosaics",
    "max_sensitivity",
    "model_randomization",
    "monotonicity",
    "pointing_game",
    "random_logit",
    "relative_input_stability",
    "relative_output_stability",
    "relative_representation_stability",
    "relevance_rank_accuracy",
    "road",
    "sparseness",
    "sufficiency",
    "top_k_intersection",
]
