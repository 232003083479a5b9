"""Metrics as configured objects for :func:`perturbx.compare.compare`.

A spec holds a metric's settings and scores one :class:`Case` (an image, its
explanation and what came with it) into named columns. Every spec names the property it
tests (``group``: one of :data:`GROUPS`) and says in one line how to read its columns
(``guide``), so that a report can group and explain them. ``resolve_metrics`` turns names
such as ``"deletion"``, ``"pointing_game"`` or a group name (``"robustness"``) into specs
with default settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from perturbx.explanation import Explanation

from .faithfulness import Curve, deletion, insertion
from .localisation import energy_pointing, pointing_game
from .robustness import infidelity, max_sensitivity
from .sanity import model_randomization

__all__ = ["DIRECTIONS", "GROUPS", "ZERO_BEST", "Case", "Deletion", "EnergyPointing", "Infidelity", "Insertion",
           "MaxSensitivity", "MetricSpec", "PointingGame", "Randomization", "direction", "resolve_metrics"]

#: The properties a metric tests, in the order a report shows them
GROUPS = ("faithfulness", "robustness", "randomisation", "complexity", "localisation")


@dataclass
class Case:
    """One image and one method's explanation of it.

    Attributes
    ----------
    adapter : perturbx.adapters.Adapter
    x : ndarray, the sample in the adapter's layout
    explanation : Explanation (one target)
    explainer : the object that made it
    target : int
    mask : ndarray (H, W) of bool or None, the ground-truth object
    """

    adapter: Any
    x: np.ndarray
    explanation: Explanation
    explainer: Any
    target: int
    mask: np.ndarray | None = None


#: +1 when higher is better, -1 when lower is better, for every column a spec can produce
#: (0: a reference column with no better side, e.g. the random-order control)
DIRECTIONS: dict[str, int] = {
    "deletion_auc": -1, "insertion_auc": +1, "pointing_game": +1, "energy_pointing": +1,
    "infidelity": -1, "max_sensitivity": -1, "randomization_spearman": -1, "queries": -1, "seconds": -1,
    "deletion_lerf_auc": +1, "deletion_random_auc": 0, "road_auc": -1, "irof": +1,
    "faithfulness_correlation": +1, "faithfulness_estimate": +1, "monotonicity": +1, "completeness_gap": -1,
    "avg_sensitivity": -1, "local_lipschitz": -1, "relative_input_stability": -1,
    "relative_output_stability": -1, "relative_representation_stability": -1,
    "randomization_independent_spearman": -1, "random_logit_ssim": -1,
    "sparseness": +1, "complexity": -1,
    "energy_pointing_weighted": +1, "relevance_rank_accuracy": +1, "top_k_intersection": +1,
    "localisation_auc": +1, "focus": +1,
}

#: Columns whose best value is 0 with either sign (a report ranks them by absolute value)
ZERO_BEST = frozenset({"randomization_spearman", "randomization_independent_spearman", "completeness_gap"})


def direction(column: str) -> int:
    """+1 when higher is better, -1 when lower is better, 0 when unknown."""
    if column in DIRECTIONS:
        return DIRECTIONS[column]
    return DIRECTIONS["pointing_game"] if column.startswith("pointing_game_") else 0


class MetricSpec:
    """Base of the specs: ``name``, ``columns``, ``needs_mask`` and ``__call__(case) -> {column: value}``.

    A value is a float, or a :class:`~perturbx.metrics.Curve` whose ``auc`` is the value
    (compare keeps the curve for its figures).
    """

    name = "metric"
    columns: tuple[str, ...] = ()
    needs_mask = False
    #: the property the metric tests, one of GROUPS
    group = "faithfulness"
    #: one line on how to read the columns
    guide = ""
    #: False when a group name should not bring it in (it needs special inputs, as focus needs mosaics)
    in_groups = True

    def params(self) -> dict[str, Any]:
        return asdict(self) if hasattr(self, "__dataclass_fields__") else {}

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        raise NotImplementedError


@dataclass
class Deletion(MetricSpec):
    """Area under the deletion curve (lower is better); see :func:`perturbx.metrics.deletion`."""

    step: int | None = None
    substrate: float | str = 0.0
    name = "deletion"
    columns = ("deletion_auc",)
    group = "faithfulness"
    guide = "Score left as the most relevant pixels are removed (area); lower: the map found what the model uses."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {"deletion_auc": deletion(case.adapter, case.x, case.explanation, case.target, step=self.step,
                                         substrate=self.substrate, progress=False)}


@dataclass
class Insertion(MetricSpec):
    """Area under the insertion curve (higher is better); see :func:`perturbx.metrics.insertion`."""

    step: int | None = None
    substrate: float | str = "blur"
    name = "insertion"
    columns = ("insertion_auc",)
    group = "faithfulness"
    guide = "Score regained as the most relevant pixels are put back on a blurred copy (area); higher is better."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {"insertion_auc": insertion(case.adapter, case.x, case.explanation, case.target, step=self.step,
                                           substrate=self.substrate, progress=False)}


@dataclass
class PointingGame(MetricSpec):
    """1 when the map's maximum lies within ``tolerance`` pixels of the object, else 0.

    The column is ``pointing_game`` at the default 15 px, ``pointing_game_<t>px`` otherwise.
    """

    tolerance: float = 15.0
    ties: str = "share"
    name = "pointing_game"
    needs_mask = True
    group = "localisation"
    guide = "Share of hits: the map's maximum lies on the object (tied maxima score their share); higher is better."

    def __post_init__(self) -> None:
        self.columns = ("pointing_game" if self.tolerance == 15.0 else f"pointing_game_{self.tolerance:g}px",)

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {self.columns[0]: float(pointing_game(case.explanation, case.mask, tolerance=self.tolerance,
                                                     ties=self.ties))}


@dataclass
class EnergyPointing(MetricSpec):
    """Share of the positive attribution that falls on the object."""

    name = "energy_pointing"
    columns = ("energy_pointing",)
    needs_mask = True
    group = "localisation"
    guide = "Share of the positive attribution that falls on the object; higher is better."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {"energy_pointing": energy_pointing(case.explanation, case.mask)}


@dataclass
class Infidelity(MetricSpec):
    """Infidelity under random smooth removals, map scaled optimally (lower is better)."""

    n_perturbations: int = 100
    grid_size: int = 4
    p_keep: float = 0.7
    baseline: float | str = 0.0
    normalize: bool = True
    random_state: int = 0
    name = "infidelity"
    columns = ("infidelity",)
    group = "faithfulness"
    guide = "Squared error of the map (optimally scaled) predicting score drops under random removals; lower."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {"infidelity": infidelity(case.adapter, case.x, case.explanation, case.target,
                                         n_perturbations=self.n_perturbations, grid_size=self.grid_size,
                                         p_keep=self.p_keep, baseline=self.baseline, normalize=self.normalize,
                                         random_state=self.random_state, progress=False)}


@dataclass
class MaxSensitivity(MetricSpec):
    """Largest relative change of the map under uniform noise of ``radius`` (lower is better)."""

    radius: float = 0.02
    n_samples: int = 5
    random_state: int = 0
    name = "max_sensitivity"
    columns = ("max_sensitivity",)
    group = "robustness"
    guide = "Largest relative change of the map when the input moves by tiny noise; lower is steadier."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        return {"max_sensitivity": max_sensitivity(case.adapter, case.explainer, case.x, case.target,
                                                   radius=self.radius, n_samples=self.n_samples,
                                                   random_state=self.random_state, reference=case.explanation)}


@dataclass
class Randomization(MetricSpec):
    """Spearman correlation of the map with the map of the fully randomised model (near 0 is better).

    Cascading randomisation of every layer with parameters (Adebayo et al. 2018); needs
    a torch model. The column is the correlation after the last step.
    """

    absolute: bool = False
    random_state: int = 0
    name = "randomization"
    columns = ("randomization_spearman",)
    group = "randomisation"
    guide = "Rank correlation with the map of the fully randomised model; near 0: the map depends on the weights."

    def __call__(self, case: Case) -> dict[str, float | Curve]:
        result = model_randomization(case.adapter, case.explainer, case.x, case.target,
                                     absolute=self.absolute, random_state=self.random_state)
        return {"randomization_spearman": float(result.spearman[-1])}


from .specs_more import MORE_SPECS  # noqa: E402  (the new specs subclass MetricSpec above)
from .trust import DIRECTIONS as TRUST_DIRECTIONS  # noqa: E402  (the trust specs too)
from .trust import TRUST_SPECS  # noqa: E402

DIRECTIONS.update(TRUST_DIRECTIONS)

SPECS: dict[str, type[MetricSpec]] = {cls.name: cls for cls in (
    Deletion, Insertion, PointingGame, EnergyPointing, Infidelity, MaxSensitivity, Randomization, *MORE_SPECS,
    *TRUST_SPECS)}
ALIASES = {"pointing": "pointing_game", "energy": "energy_pointing", "sensitivity": "max_sensitivity",
           "sanity": "randomization", "model_randomization": "randomization", "randomisation_test": "randomization",
           "gini": "sparseness", "entropy": "complexity", "auc": "localisation_auc", "lipschitz": "local_lipschitz",
           "ris": "relative_input_stability", "ros": "relative_output_stability",
           "rrs": "relative_representation_stability", "lerf": "deletion_controls", "random_logit_test": "random_logit",
           "invariance": "input_invariance", "class_specificity": "class_sensitivity"}
#: Group names accepted by resolve_metrics: every spec of the group with its default settings
GROUP_ALIASES = {"randomization": "randomisation", "localization": "localisation"}


def group_specs(group: str, have_masks: bool) -> list[str]:
    """Names of the specs of ``group`` (the localisation ones only with masks), in catalogue order."""
    return [name for name, cls in SPECS.items()
            if cls.group == group and cls.in_groups and (have_masks or not cls.needs_mask)]


def resolve_metrics(metrics: object, have_masks: bool) -> list[MetricSpec]:
    """Specs for ``metrics``: "default", "all", a group name, or a sequence of names, group names and specs.

    "default" is deletion and insertion, plus pointing game and energy pointing when
    ground-truth masks are given. "all" adds infidelity, max-sensitivity and the
    randomisation check (expensive: every method runs again many times per image). A
    group name (one of :data:`GROUPS`: "faithfulness", "robustness", "randomisation",
    "complexity", "localisation") stands for every metric of that property (the
    localisation ones only with masks); "complexity" is the group (sparseness and
    complexity), "entropy" the complexity metric alone.
    """
    if isinstance(metrics, str) and metrics in ("default", "all"):
        names = ["deletion", "insertion"] + (["pointing_game", "energy_pointing"] if have_masks else [])
        if metrics == "all":
            names += ["infidelity", "max_sensitivity", "randomization"]
        metrics = names
    if isinstance(metrics, (str, MetricSpec)):
        metrics = [metrics]
    specs: list[MetricSpec] = []
    for m in metrics:  # type: ignore[union-attr]
        if isinstance(m, str):
            key = m.strip().lower()
            key = GROUP_ALIASES.get(key, key)
            if key in GROUPS:
                specs += [SPECS[n]() for n in group_specs(key, have_masks) if all(n != t.name for t in specs)]
                continue
            key = ALIASES.get(key, key)
            if key not in SPECS:
                raise ValueError(f"Unknown metric {m!r}; the metrics are {sorted(SPECS)}, the groups {list(GROUPS)} "
                                 f"(or 'default', 'all').")
            if any(t.name == key for t in specs):
                continue
            m = SPECS[key]()
        if not isinstance(m, MetricSpec):
            raise TypeError(f"A metric must be a name or a perturbx.metrics.specs.MetricSpec. Got {type(m).__name__}.")
        if m.needs_mask and not have_masks:
            raise ValueError(f"Metric {m.name!r} compares the map with the object's mask; pass ground_truth= "
                             f"(N, H, W) boolean masks or leave {m.name!r} out.")
        specs.append(m)
    return specs
