"""RISE: the reference mask recipe, the closed-form expected saliency, seeds, targets, memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from skimage.transform import resize

import perturbx
from perturbx import engine
from perturbx.adapters import Callable
from perturbx.backend import NUMPY
from perturbx.samplers import RandomGridSampler

from .conftest import linear_model


def reference_mask(grid: np.ndarray, shift: tuple[int, int], spatial: tuple[int, int]) -> np.ndarray:
    """One mask exactly as the RISE authors' code makes it (skimage resize, then crop)."""
    (h, w), (gh, gw) = spatial, grid.shape
    cy, cx = int(np.ceil(h / gh)), int(np.ceil(w / gw))
    up = resize(grid.astype(float), ((gh + 1) * cy, (gw + 1) * cx), order=1, mode="reflect", anti_aliasing=False)
    return up[shift[0]:shift[0] + h, shift[1]:shift[1] + w]


def test_masks_match_reference_recipe():
    sampler = RandomGridSampler((37, 50), 40, (7, 5), 0.5, np.random.default_rng(0))
    for chunk in sampler.chunks(16):
        masks = chunk.materialize(NUMPY, np.float64)
        for grid, shift, mask in zip(chunk.grids, chunk.shifts, masks, strict=True):
            np.testing.assert_allclose(mask, reference_mask(grid, shift, (37, 50)), atol=1e-12)


def expected_rise_for_region_mean(x: np.ndarray, region: np.ndarray, grid: int, p: float) -> np.ndarray:
    """Closed-form E[f(x*M) M(u)] / p for f = mean of x*M over ``region`` (baseline 0).

    With cells g_k ~ Bernoulli(p) i.i.d. and M(u) = sum_k w_k(u) g_k for a given shift
    (weights summing to 1), E[M(u) M(v)] = p^2 + p (1 - p) sum_k w_k(u) w_k(v), averaged
    over the uniformly drawn shifts. The weights come from skimage, independently of perturbx.
    """
    h, w = x.shape
    cell = int(np.ceil(h / grid))
    second_moment = np.zeros((h * w, h * w))
    shifts = [(dy, dx) for dy in range(cell) for dx in range(cell)]
    for shift in shifts:
        weights = np.stack([reference_mask(np.eye(grid * grid)[k].reshape(grid, grid), shift, (h, w)).ravel()
                            for k in range(grid * grid)])  # (K, H*W)
        second_moment += p * p + p * (1 - p) * weights.T @ weights
    second_moment /= len(shifts)
    a = (x * region).ravel() / region.sum()
    return (second_moment @ a / p).reshape(h, w)


def test_converges_to_closed_form():
    rng = np.random.default_rng(0)
    x = rng.random((12, 12))
    region = np.zeros((12, 12))
    region[2:7, 5:11] = 1
    exact = expected_rise_for_region_mean(x, region, grid=3, p=0.4)
    f = linear_model((region / region.sum())[None])  # the model sees x*M: its score is the region's mean
    errors = []
    for n in (1000, 40000):
        e = perturbx.RISE(n_masks=n, grid_size=3, p_keep=0.4, random_state=1).explain(
            Callable(f, input_layout="HW", batch_size=500), x.astype(np.float32), target=0)
        errors.append(np.abs(e.attributions - exact).max() / np.ptp(exact))
    assert errors[1] < 0.03
    assert errors[1] < errors[0] / 2  # Monte-Carlo error shrinks (~1/sqrt(n))


def test_same_seed_same_map_any_batch_size(rng):
    f = linear_model(rng.normal(size=(3, 3, 16, 16)))
    x = rng.random((3, 16, 16)).astype(np.float32)
    a = perturbx.RISE(n_masks=300, random_state=7).explain(Callable(f, batch_size=64), x, target=1)
    b = perturbx.RISE(n_masks=300, random_state=7).explain(Callable(f, batch_size=37), x, target=1)
    c = perturbx.RISE(n_masks=300, random_state=8).explain(Callable(f, batch_size=64), x, target=1)
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-6)
    assert not np.allclose(a.attributions, c.attributions)
    assert a.n_queries == 301


def test_multi_target_equals_single_targets(rng):
    f = linear_model(rng.normal(size=(4, 3, 16, 16)))
    x = rng.random((3, 16, 16)).astype(np.float32)
    rise = perturbx.RISE(n_masks=200, grid_size=4, random_state=3)
    multi = rise.explain(f, x, target=[2, 0])
    assert multi.attributions.shape == (2, 16, 16)
    assert multi.n_queries == 201  # several targets share the same queries
    for i, t in enumerate([2, 0]):
        np.testing.assert_allclose(multi.attributions[i], rise.explain(f, x, target=t).attributions, rtol=1e-5)


def test_torch_backend_equals_numpy(small_cnn, rng):
    torch = pytest.importorskip("torch")
    from perturbx.adapters import Torch

    x = rng.random((3, 20, 23), dtype=np.float32)
    via_torch = perturbx.RISE(n_masks=256, random_state=0).explain(Torch(small_cnn, batch_size=32), x, target=1)

    def numpy_fn(batch):
        with torch.no_grad():
            return small_cnn(torch.as_tensor(batch)).numpy()

    via_numpy = perturbx.RISE(n_masks=256, random_state=0).explain(Callable(numpy_fn, batch_size=32), x, target=1)
    np.testing.assert_allclose(via_torch.attributions, via_numpy.attributions, rtol=1e-4, atol=1e-5)


def test_memory_does_not_grow_with_n_masks(rng):
    f = linear_model(rng.normal(size=(2, 3, 64, 64)))
    x = rng.random((3, 64, 64)).astype(np.float32)
    peaks = []
    for n in (1000, 8000):
        tracemalloc.start()
        perturbx.RISE(n_masks=n, random_state=0).explain(Callable(f, batch_size=50), x, target=0)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    one_batch = 50 * x.nbytes
    assert peaks[1] < peaks[0] + one_batch  # 8x the masks, not even one more batch of memory
    # one rendered chunk (at most engine.RENDER_BYTES) and its masks, plus the model's float64 copy of
    # one batch; all 8000 masks would be 160 batches
    assert peaks[1] < 2 * engine.RENDER_BYTES + 4 * one_batch, (peaks, one_batch)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_masks": 0}, "'n_masks' parameter of RISE must be an int >= 1. Got 0"),
    ({"n_masks": -5}, "'n_masks' parameter of RISE"),
    ({"n_masks": 10.5}, "'n_masks' parameter of RISE"),
    ({"p_keep": 0.0}, r"'p_keep' parameter of RISE must be a real number in \(0.0, 1.0\]"),
    ({"p_keep": 1.5}, "'p_keep'"),
    ({"grid_size": (0, 3)}, "'grid_size'"),
    ({"random_state": -1}, "random_state"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        perturbx.RISE(**kwargs)
