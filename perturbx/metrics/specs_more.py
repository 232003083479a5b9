"""Specs of the metrics beyond the first seven, grouped by property (see :mod:`perturbx.metrics.specs`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .axiomatic import completeness
from .complexity import complexity, sparseness
from .correlation import faithfulness_correlation, faithfulness_estimate, monotonicity
from .faithfulness import Curve, deletion
from .focus import focus, quadrant_masks
from .irof import irof
from .localisation import energy_pointing
from .randomisation import random_logit
from .ranking import localisation_auc, relevance_rank_accuracy, top_k_intersection
from .road import road
from .robustness import avg_sensitivity, local_lipschitz_estimate
from .sanity import model_randomization
from .specs import Case, MetricSpec
from .stability import relative_input_stability, relative_output_stability, relative_representation_stability

Row = dict[str, float | Curve]


# -- faithfulness ---------------------------------------------------------------------------------------
@dataclass
class DeletionControls(MetricSpec):
    """Deletion AUC with the least relevant pixels first and in random order, the controls of ``deletion_auc``."""

    step: int | None = None
    substrate: float | str = 0.0
    random_state: int = 0
    name = "deletion_controls"
    columns = ("deletion_lerf_auc", "deletion_random_auc")
    group = "faithfulness"
    guide = ("Deletion AUC removing the least relevant pixels first (higher is better) and in random order "
             "(the reference deletion_auc should fall below).")

    def __call__(self, case: Case) -> Row:
        kw = {"step": self.step, "substrate": self.substrate, "random_state": self.random_state, "progress": False}
        return {"deletion_lerf_auc": deletion(case.adapter, case.x, case.explanation, case.target, order="lerf", **kw),
                "deletion_random_auc": deletion(case.adapter, case.x, case.explanation, case.target, order="random",
                                                **kw)}


@dataclass
class Road(MetricSpec):
    """Area under the ROAD MoRF curve (noisy linear imputation of the most relevant pixels); lower is better."""

    noise: float = 0.01
    random_state: int = 0
    name = "road"
    columns = ("road_auc",)
    group = "faithfulness"
    guide = "Score left as the most relevant pixels are imputed from their neighbours (ROAD, area); lower is better."

    def __call__(self, case: Case) -> Row:
        curve = road(case.adapter, case.x, case.explanation, case.target, noise=self.noise,
                     random_state=self.random_state, progress=False)
        return {"road_auc": curve.auc}


@dataclass
class Irof(MetricSpec):
    """Area over the IROF curve (superpixels removed by mean relevance, score relative to f(x)); higher is better."""

    segmentation: str = "slic"
    baseline: float | str = "mean"
    name = "irof"
    columns = ("irof",)
    group = "faithfulness"
    guide = "Area over the relative score as superpixels are removed by mean relevance (IROF); higher is better."

    def __call__(self, case: Case) -> Row:
        curve = irof(case.adapter, case.x, case.explanation, case.target, segmentation=self.segmentation,
                     baseline=self.baseline, progress=False)
        return {"irof": curve.aoc}


@dataclass
class FaithfulnessCorrelation(MetricSpec):
    """Pearson correlation of subset attribution with the score drop when the subset is removed."""

    n_subsets: int = 100
    subset_size: int | None = None
    baseline: float | str = 0.0
    random_state: int = 0
    name = "faithfulness_correlation"
    columns = ("faithfulness_correlation",)
    group = "faithfulness"
    guide = "Correlation between the attribution of random pixel subsets and the score drop they cause; higher."

    def __call__(self, case: Case) -> Row:
        return {self.name: faithfulness_correlation(
            case.adapter, case.x, case.explanation, case.target, n_subsets=self.n_subsets,
            subset_size=self.subset_size, baseline=self.baseline, random_state=self.random_state, progress=False)}


@dataclass
class FaithfulnessEstimate(MetricSpec):
    """Pearson correlation of each group's attribution with the drop when that group alone is removed."""

    step: int | None = None
    baseline: float | str = 0.0
    name = "faithfulness_estimate"
    columns = ("faithfulness_estimate",)
    group = "faithfulness"
    guide = "Correlation between the attribution of each pixel group and the drop when it alone is removed; higher."

    def __call__(self, case: Case) -> Row:
        return {self.name: faithfulness_estimate(case.adapter, case.x, case.explanation, case.target, step=self.step,
                                                 baseline=self.baseline, progress=False)}


@dataclass
class Monotonicity(MetricSpec):
    """1 when adding pixels in increasing attribution never lowers the score, else 0."""

    step: int | None = None
    baseline: float | str = 0.0
    name = "monotonicity"
    columns = ("monotonicity",)
    group = "faithfulness"
    guide = "Share of images whose score never falls as pixels are added, least relevant first; higher is better."

    def __call__(self, case: Case) -> Row:
        return {self.name: float(monotonicity(case.adapter, case.x, case.explanation, case.target, step=self.step,
                                              baseline=self.baseline, progress=False))}


@dataclass
class Completeness(MetricSpec):
    """Relative gap between the map's sum and f(x) - f(baseline); 0 for maps that satisfy completeness."""

    baseline: float | str = 0.0
    name = "completeness"
    columns = ("completeness_gap",)
    group = "faithfulness"
    guide = ("(sum of the map - (f(x) - f(baseline))) / |f(x) - f(baseline)|; 0 for methods meant to be "
             "complete (IG, KernelSHAP), otherwise a scale check.")

    def __call__(self, case: Case) -> Row:
        res = completeness(case.adapter, case.x, case.explanation, case.target, baseline=self.baseline)
        return {"completeness_gap": res.gap / abs(res.change) if res.change != 0 else float("nan")}


# -- robustness -----------------------------------------------------------------------------------------
@dataclass
class _Noise(MetricSpec):
    n_samples: int = 5
    random_state: int = 0
    group = "robustness"


@dataclass
class AvgSensitivity(_Noise):
    """Mean relative change of the map under uniform noise of ``radius``; lower is better."""

    radius: float = 0.02
    name = "avg_sensitivity"
    columns = ("avg_sensitivity",)
    guide = "Mean relative change of the map when the input moves by tiny noise; lower is steadier."

    def __call__(self, case: Case) -> Row:
        return {self.name: avg_sensitivity(case.adapter, case.explainer, case.x, case.target, radius=self.radius,
                                           n_samples=self.n_samples, random_state=self.random_state,
                                           reference=case.explanation)}


@dataclass
class LocalLipschitz(_Noise):
    """Largest map change per unit of input change under Gaussian noise of ``std``; lower is better."""

    std: float = 0.1
    name = "local_lipschitz"
    columns = ("local_lipschitz",)
    guide = "Largest change of the map per unit of input change under Gaussian noise; lower is steadier."

    def __call__(self, case: Case) -> Row:
        return {self.name: local_lipschitz_estimate(case.adapter, case.explainer, case.x, case.target, std=self.std,
                                                    n_samples=self.n_samples, random_state=self.random_state,
                                                    reference=case.explanation)}


@dataclass
class RelativeInputStability(_Noise):
    """Largest relative map change per relative input change (Agarwal et al. 2022); lower is better."""

    radius: float = 0.02
    name = "relative_input_stability"
    columns = ("relative_input_stability",)
    guide = "Relative change of the map over relative change of the input, worst case (RIS); lower is steadier."

    def __call__(self, case: Case) -> Row:
        return {self.name: relative_input_stability(case.adapter, case.explainer, case.x, case.target,
                                                    radius=self.radius, n_samples=self.n_samples,
                                                    random_state=self.random_state, reference=case.explanation)}


@dataclass
class RelativeOutputStability(_Noise):
    """Largest relative map change per change of the model's output (Agarwal et al. 2022); lower is better."""

    radius: float = 0.02
    name = "relative_output_stability"
    columns = ("relative_output_stability",)
    guide = "Relative change of the map over change of the model's output, worst case (ROS); lower is steadier."

    def __call__(self, case: Case) -> Row:
        return {self.name: relative_output_stability(case.adapter, case.explainer, case.x, case.target,
                                                     radius=self.radius, n_samples=self.n_samples,
                                                     random_state=self.random_state, reference=case.explanation)}


@dataclass
class RelativeRepresentationStability(_Noise):
    """Largest relative map change per relative change of a layer's input (torch models); lower is better."""

    radius: float = 0.02
    layer: str | None = None
    name = "relative_representation_stability"
    columns = ("relative_representation_stability",)
    guide = ("Relative change of the map over relative change of the penultimate representation, worst case "
             "(RRS, torch models); lower is steadier.")

    def __call__(self, case: Case) -> Row:
        return {self.name: relative_representation_stability(
            case.adapter, case.explainer, case.x, case.target, layer=self.layer, radius=self.radius,
            n_samples=self.n_samples, random_state=self.random_state, reference=case.explanation)}


# -- randomisation --------------------------------------------------------------------------------------
@dataclass
class IndependentRandomization(MetricSpec):
    """Mean Spearman correlation over layers, each randomised alone (near 0 is better; torch models)."""

    absolute: bool = False
    random_state: int = 0
    name = "randomization_independent"
    columns = ("randomization_independent_spearman",)
    group = "randomisation"
    guide = ("Mean rank correlation with the maps of models with one layer randomised at a time; near 0: the map "
             "depends on every layer.")

    def __call__(self, case: Case) -> Row:
        result = model_randomization(case.adapter, case.explainer, case.x, case.target, absolute=self.absolute,
                                     cascade=False, random_state=self.random_state)
        return {"randomization_independent_spearman": float(np.nanmean(result.spearman))}


@dataclass
class RandomLogit(MetricSpec):
    """SSIM between the map of the class and the map of a random other class; lower is better."""

    random_state: int = 0
    name = "random_logit"
    columns = ("random_logit_ssim",)
    group = "randomisation"
    guide = "Similarity (SSIM) of the map with the map of a random other class; lower: the map explains the class."

    def __call__(self, case: Case) -> Row:
        return {"random_logit_ssim": random_logit(case.adapter, case.explainer, case.x, case.target,
                                                  random_state=self.random_state, reference=case.explanation)}


# -- complexity -----------------------------------------------------------------------------------------
@dataclass
class Sparseness(MetricSpec):
    """Gini index of the absolute map (higher is sparser)."""

    name = "sparseness"
    columns = ("sparseness",)
    group = "complexity"
    guide = "Gini index of |map|: 0 for a uniform map, near 1 when a few pixels hold everything; higher is sparser."

    def __call__(self, case: Case) -> Row:
        return {"sparseness": sparseness(case.explanation)}


@dataclass
class Complexity(MetricSpec):
    """Entropy of the absolute map's distribution, in nats (lower is simpler)."""

    name = "complexity"
    columns = ("complexity",)
    group = "complexity"
    guide = "Entropy of |map| as a distribution (nats, at most log of the pixel count); lower is simpler."

    def __call__(self, case: Case) -> Row:
        return {"complexity": complexity(case.explanation)}


# -- localisation ---------------------------------------------------------------------------------------
@dataclass
class _Mask(MetricSpec):
    needs_mask = True
    group = "localisation"


@dataclass
class WeightedEnergyPointing(_Mask):
    """Energy pointing times image size over object size (1 for a uniform map)."""

    name = "energy_pointing_weighted"
    columns = ("energy_pointing_weighted",)
    guide = "Share of positive attribution on the object over the object's share of the image; 1 is chance, higher."

    def __call__(self, case: Case) -> Row:
        return {self.name: energy_pointing(case.explanation, case.mask, weighted=True)}


@dataclass
class RelevanceRankAccuracy(_Mask):
    """Share of the |mask| highest pixels on the object."""

    name = "relevance_rank_accuracy"
    columns = ("relevance_rank_accuracy",)
    guide = "Share of the top-|object| pixels of the map that lie on the object; higher is better."

    def __call__(self, case: Case) -> Row:
        return {self.name: relevance_rank_accuracy(case.explanation, case.mask)}


@dataclass
class TopKIntersection(_Mask):
    """Share of the k highest pixels on the object (k: 2 % of the image by default)."""

    k: int | None = None
    name = "top_k_intersection"
    columns = ("top_k_intersection",)
    guide = "Share of the map's top 2 % pixels that lie on the object; higher is better."

    def __call__(self, case: Case) -> Row:
        return {self.name: top_k_intersection(case.explanation, case.mask, k=self.k)}


@dataclass
class LocalisationAUC(_Mask):
    """ROC AUC of the map separating object pixels from background."""

    name = "localisation_auc"
    columns = ("localisation_auc",)
    guide = "ROC AUC of the map as a detector of object pixels: 0.5 is chance, 1 perfect; higher is better."

    def __call__(self, case: Case) -> Row:
        return {self.name: localisation_auc(case.explanation, case.mask)}


@dataclass
class Focus(_Mask):
    """Focus on a mosaic: share of positive relevance on the quadrants of the class.

    Run :func:`~perturbx.compare.compare` on ``make_mosaics(...).images`` with
    ``ground_truth=mosaics.masks`` (the quadrants of the class); the quadrants are read
    back from the mask.
    """

    name = "focus"
    columns = ("focus",)
    in_groups = False
    guide = "On 2x2 mosaics, share of positive relevance on the two images of the class; 0.5 is chance, higher."

    def __call__(self, case: Case) -> Row:
        quads = quadrant_masks(case.mask.shape)
        return {"focus": focus(case.explanation, [bool(case.mask[q].all()) for q in quads])}


MORE_SPECS: tuple[type[MetricSpec], ...] = (
    DeletionControls, Road, Irof, FaithfulnessCorrelation, FaithfulnessEstimate, Monotonicity, Completeness,
    AvgSensitivity, LocalLipschitz, RelativeInputStability, RelativeOutputStability, RelativeRepresentationStability,
    IndependentRandomization, RandomLogit, Sparseness, Complexity, WeightedEnergyPointing, RelevanceRankAccuracy,
    TopKIntersection, LocalisationAUC, Focus)
