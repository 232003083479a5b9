"""The metrics of issue 22 on cases computed by hand, their batching, and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx import metrics as M  # noqa: N812
from perturbx.adapters import Callable
from perturbx.metrics import specs
from perturbx.metrics.road import noisy_linear_imputation

from .conftest import SpyAdapter, linear_model


def _linear(rng, shape=(1, 6, 6)):
    w = rng.normal(size=(2, *shape))
    return w, SpyAdapter(linear_model(w), batch_size=7)


# --- faithfulness -------------------------------------------------------------------------------------
def test_deletion_orders_by_hand(rng):
    w, model = _linear(rng)
    x = np.ones((1, 6, 6), np.float32)
    contrib = w[0, 0]  # what each pixel adds to class 0
    morf = M.deletion(model, x, contrib, 0, step=1, progress=False)
    lerf = M.deletion(model, x, contrib, 0, step=1, order="lerf", progress=False)
    order = np.argsort(contrib.ravel(), kind="stable")
    expected = contrib.sum() - np.concatenate([[0], np.cumsum(contrib.ravel()[order])])
    np.testing.assert_allclose(lerf.scores, expected, rtol=1e-5, atol=1e-5)
    assert morf.auc < M.deletion(model, x, contrib, 0, step=1, order="random", progress=False).auc < lerf.auc
    assert max(model.batch_sizes) <= 7  # batched through the adapter


def test_faithfulness_correlation_and_estimate_of_exact_maps_are_one(rng):
    w, model = _linear(rng)
    x = rng.random((1, 6, 6)).astype(np.float32)
    exact = w[0, 0] * x[0]
    assert M.faithfulness_correlation(model, x, exact, 0, n_subsets=30, subset_size=5) == pytest.approx(1.0)
    assert M.faithfulness_estimate(model, x, exact, 0, step=3) == pytest.approx(1.0)
    assert M.faithfulness_estimate(model, x, -exact, 0, step=3) == pytest.approx(-1.0)


def test_monotonicity_by_hand(rng):
    model = Callable(lambda b: b.reshape(len(b), -1).sum(1, keepdims=True) * np.ones((1, 2)))
    x = rng.random((1, 4, 4)).astype(np.float32)
    passed, curve = M.monotonicity(model, x, rng.normal(size=(4, 4)), 0, step=4, return_curve=True)
    assert passed and len(curve) == 4 and curve[-1] == pytest.approx(x.sum())
    neg = Callable(lambda b: -b.reshape(len(b), -1).sum(1, keepdims=True) * np.ones((1, 2)))
    assert not M.monotonicity(neg, x, rng.normal(size=(4, 4)), 0, step=4)


def test_imputation_fills_a_linear_ramp_exactly_and_adds_its_noise(rng):
    ramp = np.broadcast_to(np.arange(8.0), (1, 8, 8)) + np.arange(8.0)[:, None]  # harmonic: the mean of neighbours
    removed = np.zeros((8, 8), bool)
    removed[2:6, 3:5] = True
    np.testing.assert_allclose(noisy_linear_imputation(ramp, removed, 0.0), ramp, atol=1e-10)
    noisy = noisy_linear_imputation(ramp, np.ones((8, 8), bool) & ~np.eye(8, dtype=bool), 0.5, rng)
    assert np.std(noisy - noisy_linear_imputation(ramp, ~np.eye(8, dtype=bool), 0.0)) == pytest.approx(0.5, rel=0.3)


def test_road_removes_whole_pixels_and_reports_the_top_class(rng):
    w, model = _linear(rng, (3, 6, 6))
    x = rng.random((3, 6, 6)).astype(np.float32)
    curve = M.road(model, x, rng.normal(size=(6, 6)), 0, percentages=[0, 50, 100], noise=0.0)
    assert curve.scores[0] == pytest.approx(float((w[0] * x).sum()), rel=1e-5)
    assert curve.predicted is not None and curve.predicted.dtype == bool and curve.n_queries == 3


def test_irof_by_hand_on_two_segments():
    model = Callable(lambda b: np.stack([b.reshape(len(b), -1).sum(1), np.ones(len(b))], 1) + 1.0)
    x = np.ones((1, 2, 4), np.float32)
    segments = np.array([[0, 0, 1, 1]] * 2)
    a = np.array([[1.0, 1, 0, 0]] * 2)
    curve = M.irof(model, x, a, 0, segmentation=segments, baseline=0.0)
    np.testing.assert_allclose(curve.scores, [1.0, 5 / 9, 1 / 9])  # f = 1 + sum: 9, 5, 1
    assert curve.aoc == pytest.approx(1 - (0.5 * (1 + 5 / 9) / 2 + 0.5 * (5 / 9 + 1 / 9) / 2))


def test_sufficiency_by_hand():
    model = Callable(lambda b: np.stack([b[:, 0, 0, 0], -b[:, 0, 0, 0]], 1))
    xs = np.array([1, 1, -1, -1], np.float32).reshape(4, 1, 1, 1) * np.ones((4, 1, 2, 2), np.float32)
    maps = np.array([0.0, 0.1, 5.0, 5.1])[:, None, None] * np.ones((4, 2, 2))
    np.testing.assert_allclose(M.sufficiency(model, xs, maps, threshold=0.1, metric="euclidean"), [1, 1, 1, 1])
    maps2 = maps[[0, 2, 1, 3]]  # near maps now have different classes
    np.testing.assert_allclose(M.sufficiency(model, xs, maps2, threshold=0.1, metric="euclidean"), [0, 0, 0, 0])


def test_completeness_of_an_exact_map(rng):
    w, model = _linear(rng)
    x = rng.random((1, 6, 6)).astype(np.float32)
    assert M.completeness(model, x, w[0, 0] * x[0], 0).complete
    res = M.completeness(model, x, 2 * w[0, 0] * x[0], 0)
    assert not res.complete and res.gap == pytest.approx(res.change, rel=1e-5)


# --- robustness and randomisation --------------------------------------------------------------------------
class ScaleExplainer:
    def explain(self, model, x, target=None):
        return 3.0 * np.asarray(x, np.float64)[0]


def test_lipschitz_and_stability_of_a_linear_explainer(rng):
    _, model = _linear(rng)
    x = (rng.random((1, 6, 6)) + 0.5).astype(np.float32)
    assert M.local_lipschitz_estimate(model, ScaleExplainer(), x, 0, n_samples=3) == pytest.approx(3.0, rel=1e-5)
    assert M.relative_input_stability(model, ScaleExplainer(), x, 0, n_samples=3,
                                      keep_prediction=False) == pytest.approx(1.0, rel=1e-4)
    assert M.avg_sensitivity(model, ScaleExplainer(), x, 0, n_samples=3) <= M.max_sensitivity(
        model, ScaleExplainer(), x, 0, n_samples=3)


def test_representation_stability_needs_a_torch_model(rng, small_cnn):
    with pytest.raises(TypeError, match="'model' argument of relative_representation_stability must be a torch"):
        M.relative_representation_stability(Callable(lambda b: b.reshape(len(b), -1)), ScaleExplainer(),
                                            rng.random((1, 4, 4)))
    value = M.relative_representation_stability(small_cnn, ScaleExplainer(), rng.random((3, 20, 23)), 0,
                                                n_samples=2, keep_prediction=False)
    assert np.isfinite(value) and value > 0


def test_independent_randomization_changes_one_layer_at_a_time(rng, small_cnn):
    torch = pytest.importorskip("torch")
    from perturbx.gradients import Saliency

    before = {k: v.clone() for k, v in small_cnn.state_dict().items()}
    res = M.model_randomization(small_cnn, Saliency(), rng.random((3, 20, 23)).astype(np.float32), 0, cascade=False)
    assert not res.cascade and len(res.spearman) == 3 and np.all(np.abs(res.spearman) <= 1)
    assert all(torch.equal(before[k], v) for k, v in small_cnn.state_dict().items())  # the model is untouched


def test_random_logit_of_a_class_blind_map_is_one(rng):
    model = Callable(lambda b: b.reshape(len(b), -1)[:, :3])
    assert M.random_logit(model, ScaleExplainer(), rng.random((1, 8, 8)), 0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'other' argument of random_logit"):
        M.random_logit(model, ScaleExplainer(), rng.random((1, 8, 8)), 0, other=0)


# --- complexity and localisation --------------------------------------------------------------------------
def test_sparseness_and_complexity_by_hand():
    one = np.zeros((4, 4))
    one[1, 2] = -2.0
    assert M.sparseness(np.ones((4, 4))) == pytest.approx(0.0) and M.sparseness(one) == pytest.approx(15 / 16)
    assert M.complexity(one) == 0.0 and M.complexity(np.ones((4, 4))) == pytest.approx(np.log(16))
    assert np.isnan(M.sparseness(np.zeros((4, 4)))) and np.isnan(M.complexity(np.zeros((4, 4))))


def test_pointing_game_scores_tied_maxima_by_their_share():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    flat = np.zeros((8, 8))
    flat[0, 2:6] = 1.0  # a plateau half on the object
    assert M.pointing_game(flat, mask, tolerance=0) == 0.5
    assert M.pointing_game(flat, mask, tolerance=0, ties="first") == 1.0
    flat[0, 2:6], flat[0, 6:8] = 0.0, 1.0
    assert M.pointing_game(flat, mask, tolerance=0) == 0.0
    with pytest.raises(ValueError, match="'ties' argument of pointing_game"):
        M.pointing_game(flat, mask, ties="last")


def test_ranking_localisation_by_hand():
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    a = np.arange(16.0)[::-1].reshape(4, 4)  # the first row highest
    assert M.relevance_rank_accuracy(a, mask) == 1.0 and M.localisation_auc(a, mask) == 1.0
    assert M.top_k_intersection(a, mask, k=8) == 0.5
    assert M.top_k_intersection(a, mask, k=8, concept_influence=True) == 2.0
    assert M.localisation_auc(np.ones((4, 4)), mask) == 0.5
    for f in (M.relevance_rank_accuracy, M.top_k_intersection, M.localisation_auc):
        assert np.isnan(f(a, np.zeros((4, 4), bool)))
    assert np.isnan(M.energy_pointing(a, np.zeros((4, 4), bool)))
    with pytest.raises(ValueError, match="'k' argument of top_k_intersection"):
        M.top_k_intersection(a, mask, k=17)
    with pytest.raises(ValueError, match="'mask' argument of relevance_rank_accuracy has shape"):
        M.relevance_rank_accuracy(a, np.ones((4, 5), bool))


def test_focus_on_mosaics_of_the_built_in_data():
    from perturbx.datasets import make_shapes

    data = make_shapes(12, size=32, random_state=0)
    mos = M.make_mosaics(data.images, data.labels, 5, random_state=0)
    assert mos.images.shape == (5, 3, 64, 64) and mos.quadrants.sum(1).tolist() == [2] * 5
    for i in range(5):
        assert all(data.labels[mos.sources[i, q]] == mos.targets[i] for q in np.flatnonzero(mos.quadrants[i]))
        assert M.focus(mos.masks[i].astype(float), mos.quadrants[i]) == 1.0
        assert M.focus(np.ones((64, 64)), mos.quadrants[i]) == 0.5
    with pytest.raises(ValueError, match="'quadrants' argument of focus"):
        M.focus(np.ones((64, 64)), [True, False])


# --- specs ---------------------------------------------------------------------------------------------
def test_every_spec_has_a_group_a_guide_and_directions():
    for name, cls in specs.SPECS.items():
        assert cls.group in specs.GROUPS and cls.guide, name
        for column in cls().columns:
            assert column in specs.DIRECTIONS or column.startswith("pointing_game"), column
    names = [s.name for s in specs.resolve_metrics(["robustness", "lipschitz"], have_masks=False)]
    assert "avg_sensitivity" in names and names.count("local_lipschitz") == 1
    assert not any(s.needs_mask for s in specs.resolve_metrics("localisation", have_masks=False))
    with pytest.raises(ValueError, match="the groups"):
        specs.resolve_metrics(["nonsense"], have_masks=False)


def test_specs_score_a_case(rng):
    w, model = _linear(rng)
    x = rng.random((1, 6, 6)).astype(np.float32)
    mask = np.zeros((6, 6), bool)
    mask[:3] = True
    case = specs.Case(model, x, w[0, 0] * x[0], ScaleExplainer(), 0, mask)
    for spec in specs.resolve_metrics(["complexity", "localisation", "faithfulness_estimate", "completeness"],
                                      have_masks=True):
        row = spec(case)
        assert set(row) == set(spec.columns)
