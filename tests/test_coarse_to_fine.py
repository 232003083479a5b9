"""Coarse-to-fine occlusion: equals plain occlusion when refined everywhere, refines only where it matters."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable, Torch
from perturbx.engine import QueryBudgetError
from perturbx.explainers.coarse_to_fine import CoarseToFineOcclusion, pyramid, select_pixels

from .conftest import SpyAdapter, linear_model

torch = pytest.importorskip("torch")


@pytest.mark.parametrize(("window", "stride", "factor", "n_levels"), [
    ((4, 4), (2, 2), 2, None),     # 3 levels on 20 x 23: strides divide 20 - 4, not 23 - 4
    ((5, 6), (3, 4), 2, None),     # divides neither axis at any level
    ((3, 3), (3, 3), 3, None),     # disjoint windows, factor 3
    ((2, 3), (1, 2), 2, 3),        # explicit number of levels
])
@pytest.mark.parametrize(("refine", "threshold"), [("all", 0.1), ("top", 1.0), ("range", 0.0)])
def test_forced_refinement_equals_occlusion(small_cnn, rng, window, stride, factor, n_levels, refine, threshold):
    x = rng.random((3, 20, 23), dtype=np.float32)  # ("range", 0.0) refines all but each map's minimum: ~everything
    model = Torch(small_cnn, batch_size=7)
    c2f = CoarseToFineOcclusion(window, stride, coarsen="window", factor=factor, n_levels=n_levels, refine=refine,
                                threshold=threshold)
    ours = c2f.explain(model, x, target=[0, 3, 4])
    ref = perturbx.Occlusion(window, stride).explain(model, x, target=[0, 3, 4])
    np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-6)
    levels = pyramid((20, 23), window, stride, factor, n_levels)
    assert len(ours.levels) == len(levels) >= 2
    assert [lv["n_windows"] for lv in ours.levels] == [lv["n_windows_full"] for lv in ours.levels]
    assert ours.n_queries == 1 + sum(int(np.prod(lv.grid_shape)) for lv in levels)
    assert (ours.level_map == len(levels) - 1).all()
    assert ours.levels[-1]["window"] == window and ours.levels[-1]["stride"] == stride


@pytest.mark.parametrize(("window", "stride", "factor", "n_levels"), [
    ((4, 4), (2, 2), 2, 3),        # 3 levels on 20 x 23: the last position is no multiple of the step
    ((5, 6), (3, 4), 2, None),
    ((3, 3), (1, 1), 3, None),     # factor 3: steps 9, 3, 1 over 18 x 21 positions
    ((2, 3), (1, 2), 2, 4),        # steps 8, 4, 2, 1 over 19 x 11 positions
])
@pytest.mark.parametrize(("refine", "threshold"), [("all", 0.1), ("top", 1.0), ("range", 0.0)])
def test_forced_refinement_by_stride_equals_occlusion(small_cnn, rng, window, stride, factor, n_levels, refine,
                                                      threshold):
    x = rng.random((3, 20, 23), dtype=np.float32)  # ("range", 0.0) refines every cell with a non-zero corner
    model = SpyAdapter(Torch(small_cnn), batch_size=7)
    c2f = CoarseToFineOcclusion(window, stride, factor=factor, n_levels=n_levels, refine=refine, threshold=threshold)
    ours = c2f.explain(model, x, target=[0, 3, 4])
    ref = perturbx.Occlusion(window, stride).explain(Torch(small_cnn), x, target=[0, 3, 4])
    np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-6)
    assert ours.queried.all() and len(ours.levels) >= 2
    assert ours.n_queries == ref.n_queries == 1 + sum(lv["n_windows"] for lv in ours.levels) == sum(model.batch_sizes)
    assert ours.levels[-1]["n_windows_full"] == ours.queried.size and ours.levels[-1]["stride"] == stride
    assert all(lv["window"] == window for lv in ours.levels)


@pytest.mark.parametrize("coarsen", ["stride", "window"])
def test_forced_refinement_single_target_and_channels_last(rng, coarsen):
    w = rng.normal(size=(3, 17, 15, 2))
    x = rng.random((17, 15, 2)).astype(np.float32)
    model = Callable(linear_model(w), input_layout="HWC", batch_size=5)
    ours = CoarseToFineOcclusion(3, 2, coarsen=coarsen, refine="all", baseline=0.5).explain(model, x, target=1)
    ref = perturbx.Occlusion(3, 2, baseline=0.5).explain(model, x, target=1)
    assert ours.attributions.shape == ref.attributions.shape == (17, 15)
    np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-6)


def local_model(region: tuple[slice, slice]):
    """Two classes whose scores depend only on the pixels in ``region`` (a (1, 64, 64) image)."""
    def fn(batch):
        patch = batch[:, 0, region[0], region[1]].reshape(len(batch), -1).astype(np.float64)
        return np.stack([patch.sum(1), (patch ** 2).sum(1) * 0.5], axis=1)
    return fn


@pytest.mark.parametrize(("refine", "threshold"), [("range", 0.1), ("range", 0.5), ("top", 0.25)])
def test_refinement_concentrates_on_the_region_that_matters(rng, refine, threshold):
    region = (slice(40, 48), slice(8, 16))
    x = (0.5 + 0.5 * rng.random((1, 64, 64))).astype(np.float32)
    model = SpyAdapter(local_model(region), batch_size=32)
    ours = CoarseToFineOcclusion((8, 8), (4, 4), coarsen="window", refine=refine, threshold=threshold).explain(
        model, x, target=[0, 1])
    ref = perturbx.Occlusion((8, 8), (4, 4)).explain(SpyAdapter(local_model(region)), x, target=[0, 1])
    finest = len(ours.levels) - 1
    assert [lv["window"] for lv in ours.levels] == [(32, 32), (16, 16), (8, 8)]
    assert (ours.level_map[region] == finest).all()
    np.testing.assert_allclose(ours.attributions[:, region[0], region[1]],
                               ref.attributions[:, region[0], region[1]], atol=1e-6)
    assert ref.n_queries == 1 + 15 * 15
    assert ours.n_queries == 1 + sum(lv["n_windows"] for lv in ours.levels) == sum(model.batch_sizes)
    assert ours.n_queries * 2.5 < ref.n_queries  # 76, 30 and 48 queries against 226
    refined = ours.level_map == finest
    assert refined.mean() < 0.15
    rows, cols = np.nonzero(refined)  # refined pixels lie within one coarse stride of the region
    assert rows.min() >= 40 - 16 and rows.max() < 48 + 16 and cols.min() >= 0 and cols.max() < 16 + 16


@pytest.mark.parametrize("fill", ["coarse", "zero"])
def test_fill_of_pixels_left_at_a_coarser_level(rng, fill):
    region = (slice(40, 48), slice(8, 16))
    x = rng.random((1, 64, 64)).astype(np.float32)
    model = Callable(local_model(region))
    scaled = CoarseToFineOcclusion((8, 8), (4, 4), coarsen="window").explain(model, x, target=[0, 1])
    other = CoarseToFineOcclusion((8, 8), (4, 4), coarsen="window", fill=fill).explain(model, x, target=[0, 1])
    np.testing.assert_array_equal(other.level_map, scaled.level_map)
    assert set(np.unique(scaled.level_map)) == {0, 1, 2}
    for k, area_ratio in enumerate([1 / 16, 1 / 4, 1.0]):
        at_k = scaled.level_map == k
        if fill == "coarse":
            np.testing.assert_allclose(scaled.attributions[:, at_k], other.attributions[:, at_k] * area_ratio)
        else:
            np.testing.assert_array_equal(other.attributions[:, at_k], scaled.attributions[:, at_k] * (k == 2))


def test_constant_model_stops_after_the_coarsest_level():
    model = Callable(lambda b: np.ones((len(b), 3)))
    x = np.zeros((1, 32, 32), np.float32)
    e = CoarseToFineOcclusion((4, 4), (2, 2), coarsen="window").explain(model, x, target=2)
    assert [lv["n_windows"] for lv in e.levels] == [9, 0, 0]
    assert e.n_queries == 1 + 9 and (e.level_map == 0).all() and (e.attributions == 0).all()
    e = CoarseToFineOcclusion((4, 4), (2, 2)).explain(model, x, target=2)  # positions 0, 2, ..., 14 per axis
    assert [lv["n_windows"] for lv in e.levels] == [64, 0]
    assert e.n_queries == 1 + 64 and (e.attributions == 0).all() and e.queried.sum() == 64


def test_local_evidence_by_stride_gives_plain_occlusion_for_a_third_of_the_queries(rng):
    region = (slice(40, 48), slice(8, 16))
    x = (0.5 + 0.5 * rng.random((1, 64, 64))).astype(np.float32)
    model = SpyAdapter(local_model(region), batch_size=32)
    ours = CoarseToFineOcclusion((8, 8), (4, 4)).explain(model, x, target=[0, 1])
    ref = perturbx.Occlusion((8, 8), (4, 4)).explain(SpyAdapter(local_model(region)), x, target=[0, 1])
    # positions every 8 px (windows tile the image), then every 4 px in the four cells around the one
    # window on the region: the 9 windows that touch it are queried, every other drop is 0 or interpolated from 0s
    assert [(lv["stride"], lv["n_windows"]) for lv in ours.levels] == [((8, 8), 64), ((4, 4), 16)]
    assert ours.n_queries == 1 + 80 == sum(model.batch_sizes) and ref.n_queries == 1 + 15 * 15
    np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-9)
    hidden = x.copy()
    hidden[:, 40:48, 8:16] = 0.0  # the window at grid position (10, 2) covers the region exactly
    fn = local_model(region)
    np.testing.assert_allclose(ours.window_drops[:, 10, 2], fn(x[None])[0] - fn(hidden[None])[0])
    assert ours.queried[9:12, 1:4].all() and ours.queried.sum() == 80


def test_never_more_queries_than_occlusion_when_nothing_is_local(small_cnn, rng):
    x = rng.random((3, 32, 32), dtype=np.float32)
    model = Torch(small_cnn)
    ref = perturbx.Occlusion(4, 2).explain(model, x, target=[0, 1])
    for threshold in (0.0, 0.05, 0.3):
        ours = CoarseToFineOcclusion(4, 2, threshold=threshold).explain(model, x, target=[0, 1])
        assert ours.n_queries <= ref.n_queries
        exact = ours.queried.all()
        assert exact == (ours.n_queries == ref.n_queries)
        if exact:
            np.testing.assert_allclose(ours.attributions, ref.attributions, atol=1e-6)


@pytest.mark.parametrize("coarsen", ["stride", "window"])
@pytest.mark.parametrize("max_queries", [11, 12, 20, 40, 80, 500])
def test_max_queries_is_never_exceeded(rng, max_queries, coarsen):
    region = (slice(40, 48), slice(8, 16))
    x = rng.random((1, 64, 64)).astype(np.float32)
    model = SpyAdapter(local_model(region), batch_size=8)
    free = CoarseToFineOcclusion((8, 8), (4, 4), coarsen=coarsen).explain(
        SpyAdapter(local_model(region), batch_size=8), x, target=[0, 1])
    if max_queries < free.levels[0]["n_windows"] + 1:
        return  # the coarsest level does not fit: see test_coarsest_level_over_budget_raises_before_querying
    e = CoarseToFineOcclusion((8, 8), (4, 4), coarsen=coarsen, max_queries=max_queries).explain(
        model, x, target=[0, 1])
    assert e.n_queries == sum(model.batch_sizes) <= max_queries
    assert e.budget_exhausted == (free.n_queries > max_queries)
    done = [lv["n_windows"] for lv in e.levels if lv["n_windows"]]
    assert done == [lv["n_windows"] for lv in free.levels][:len(done)]  # whole levels, in order
    if not e.budget_exhausted:
        np.testing.assert_array_equal(e.attributions, free.attributions)


def test_coarsest_level_over_budget_raises_before_querying(rng):
    model = SpyAdapter(lambda b: np.ones((len(b), 2)))
    with pytest.raises(QueryBudgetError, match="needs 9 perturbed queries but only 8"):
        CoarseToFineOcclusion((8, 8), (4, 4), coarsen="window", max_queries=9).explain(
            model, np.zeros((1, 64, 64), np.float32))
    with pytest.raises(QueryBudgetError, match="needs 64 perturbed queries but only 8"):
        CoarseToFineOcclusion((8, 8), (4, 4), max_queries=9).explain(model, np.zeros((1, 64, 64), np.float32))
    assert sum(model.batch_sizes) == 2  # only the reference queries


def test_pyramid_and_selection_rules():
    assert [lv.window for lv in pyramid((64, 64), (12, 12), (4, 4), 2, None)] == [(48, 48), (24, 24), (12, 12)]
    assert [lv.stride for lv in pyramid((64, 40), (8, 8), (4, 4), 2, None)] == [(16, 16), (8, 8), (4, 4)]
    assert len(pyramid((20, 23), (20, 23), (1, 1), 2, None)) == 1
    maps = np.array([[[0.0, 1.0, 4.0, 10.0]], [[3.0, 0.0, 0.0, 0.0]]])  # (T=2, H=1, W=4)
    candidates = np.array([[True, True, True, False]])
    # range 0.5 (HiPe's mid-range): target 0 > 5 -> pixel 3 (not a candidate); target 1 > 1.5 -> pixel 0
    np.testing.assert_array_equal(select_pixels(maps, candidates, "range", 0.5), [[True, False, False, False]])
    # range 0.1: target 0 > 1 -> pixel 2 (3 is no candidate); target 1 > 0.3 -> pixel 0
    np.testing.assert_array_equal(select_pixels(maps, candidates, "range", 0.1), [[True, False, True, False]])
    np.testing.assert_array_equal(select_pixels(maps[:1], candidates, "top", 0.5), [[False, True, True, False]])
    np.testing.assert_array_equal(select_pixels(maps, candidates, "all", 0.1), candidates)
    assert not select_pixels(np.ones((1, 2, 2)), np.ones((2, 2), bool), "range", 0.1).any()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window": (2, 4, 4)}, "'window' parameter of CoarseToFineOcclusion must be a positive int or a tuple of 2"),
    ({"stride": 0}, "'stride' parameter of CoarseToFineOcclusion"),
    ({"factor": 1}, "'factor' parameter of CoarseToFineOcclusion must be an int >= 2. Got 1"),
    ({"n_levels": 0}, "'n_levels' parameter of CoarseToFineOcclusion must be an int >= 1. Got 0"),
    ({"refine": "midrange"}, r"'refine' parameter of CoarseToFineOcclusion must be one of \('range', 'top', 'all'\)"),
    ({"refine": 0.5}, r"'refine' parameter .* Got 0.5 instead"),
    ({"threshold": 1.0}, r"'threshold' parameter .* real number in \[0.0, 1.0\). Got 1.0"),
    ({"threshold": -0.1}, r"'threshold' parameter .* real number in \[0.0, 1.0\). Got -0.1"),
    ({"refine": "top", "threshold": 0.0}, r"'threshold' parameter .* real number in \(0.0, 1.0\]. Got 0.0"),
    ({"threshold": True}, r"'threshold' parameter .* Got True"),
    ({"coarsen": "positions"}, r"'coarsen' parameter of CoarseToFineOcclusion must be one of \('stride', 'window'\)"),
    ({"fill": "none"}, r"'fill' parameter of CoarseToFineOcclusion must be one of \('scaled', 'coarse', 'zero'\)"),
    ({"max_queries": 1}, "'max_queries' parameter of CoarseToFineOcclusion must be an int >= 2"),
])
def test_bad_parameters_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoarseToFineOcclusion(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window": (4, 4), "stride": (5, 5)}, r"stride \(5, 5\) is larger than the window \(4, 4\)"),
    ({"window": (40, 8)}, r"window \(40, 8\) is larger than the image along its height \(40 > 32\)"),
    ({"window": (8, 8), "stride": (4, 4), "n_levels": 4, "coarsen": "window"},
     r"n_levels=4 and factor=2 needs a coarsest window \(64, 64\) larger than the image \(32, 32\)"),
])
def test_bad_geometry_raises_at_explain(kwargs, match):
    model = SpyAdapter(lambda b: np.ones((len(b), 2)))
    with pytest.raises(ValueError, match=match):
        CoarseToFineOcclusion(**kwargs).explain(model, np.zeros((1, 32, 32), np.float32))
    assert sum(model.batch_sizes) == 1


def test_node_grid_levels_interpolation_and_refinement(rng):
    from perturbx.samplers.window_nodes import NodeGrid, interpolation_matrix

    grid = NodeGrid.build((11, 6), 4, 2)
    assert grid.steps == (4, 2, 1)
    assert [list(a) for a in grid.nodes(0)] == [[0, 4, 8, 10], [0, 4, 5]]
    assert grid.cell_shape(0) == (3, 2) and grid.cell_shape(2) == (10, 5)
    np.testing.assert_allclose(interpolation_matrix(4, np.array([0, 3])) @ [1.0, 4.0], [1, 2, 3, 4])
    # drops bilinear within every level-0 cell are reproduced from the level-0 nodes alone
    y, x = np.mgrid[:11, :6].astype(float)
    bilinear = (2 + 0.5 * y - x + 0.25 * x * y)[None]
    np.testing.assert_allclose(grid.interpolate(bilinear, grid.node_mask(0)), bilinear)
    # queried positions keep their value; the rest interpolate the finest level queried around them
    drops = rng.normal(size=(2, 11, 6))
    queried = grid.node_mask(0) | grid.node_mask(1)
    est = grid.interpolate(drops, queried)
    np.testing.assert_array_equal(est[:, queried], drops[:, queried])
    np.testing.assert_allclose(est[:, 3, 1], (drops[:, 2, 0] + drops[:, 2, 2] + drops[:, 4, 0] + drops[:, 4, 2]) / 4)
    # refining cell (1, 0) of level 0 (rows 4..8, columns 0..4) queries the level-1 nodes in that box
    cells = np.zeros(grid.cell_shape(0), dtype=bool)
    cells[1, 0] = True
    positions, sub_cells = grid.refine(0, cells)
    assert {tuple(p) for p in np.argwhere(positions)} == {(r, c) for r in (4, 6, 8) for c in (0, 2, 4)}
    assert sub_cells.shape == grid.cell_shape(1) and np.argwhere(sub_cells).tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]
    score = grid.corner_scores(0, np.abs(drops))
    assert score.shape == (3, 2) and score[0, 0] == np.abs(drops[:, [0, 0, 4, 4], [0, 4, 0, 4]]).max()
