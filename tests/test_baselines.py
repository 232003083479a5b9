"""Baselines: each kind yields the documented replacement, in every layout."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import perturbx
from perturbx._utils import Layout
from perturbx.adapters import Callable
from perturbx.baselines import Blur, Noise, resolve_baseline

from .conftest import linear_model


@pytest.mark.parametrize("layout", ["CHW", "HWC", "HW"])
def test_kinds(layout, rng):
    lay = Layout(layout)
    shape = {"CHW": (3, 10, 12), "HWC": (10, 12, 3), "HW": (10, 12)}[layout]
    x = rng.random(shape).astype(np.float32)
    chw = lay.to_chw_array(x)
    np.testing.assert_allclose(resolve_baseline(0.25, x, lay, rng), 0.25)
    mean = lay.to_chw_array(resolve_baseline("mean", x, lay, rng))
    np.testing.assert_allclose(mean, np.broadcast_to(chw.mean(axis=(1, 2), keepdims=True), chw.shape), rtol=1e-6)
    blur = lay.to_chw_array(resolve_baseline(Blur(sigma=2.0), x, lay, rng))
    np.testing.assert_allclose(blur, np.stack([gaussian_filter(c.astype(np.float64), 2.0) for c in chw]), atol=1e-6)
    a = resolve_baseline("noise", x, lay, np.random.default_rng(5))
    b = resolve_baseline(Noise(), x, lay, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # seeded
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_allclose(resolve_baseline(np.ones(shape), x, lay, rng), 1.0)
    np.testing.assert_allclose(resolve_baseline(lambda s: s[::-1] * 0 + 2, x, lay, rng), 2.0)


def test_bad_baselines(rng):
    x = rng.random((3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"baseline has shape \(3, 8, 9\) but the sample has shape \(3, 8, 8\)"):
        resolve_baseline(np.zeros((3, 8, 9)), x, Layout("CHW"), rng)
    with pytest.raises(ValueError, match="baseline contains NaN"):
        resolve_baseline(np.full((3, 8, 8), np.nan), x, Layout("CHW"), rng)
    with pytest.raises(ValueError, match="must be finite"):
        perturbx.RISE(baseline=float("inf"))
    with pytest.raises(TypeError, match="'baseline' parameter of RISE"):
        perturbx.RISE(baseline=True)


def test_occlusion_with_mean_baseline_is_occlusion_towards_the_mean(rng):
    w = rng.normal(size=(2, 3, 8, 8))
    x = rng.random((3, 8, 8)).astype(np.float32)
    f = Callable(linear_model(w))
    by_name = perturbx.Occlusion((4, 4), (4, 4), baseline="mean").explain(f, x, target=1)
    by_array = perturbx.Occlusion((4, 4), (4, 4), baseline=np.broadcast_to(
        x.mean(axis=(1, 2), keepdims=True), x.shape).copy()).explain(f, x, target=1)
    np.testing.assert_allclose(by_name.attributions, by_array.attributions, atol=1e-6)
    # linear model: the drop of a window is sum over it of w * (x - mean)
    delta = (w[1] * (x - x.mean(axis=(1, 2), keepdims=True))).sum(0)
    np.testing.assert_allclose(by_name.attributions[:4, :4], delta[:4, :4].sum(), atol=1e-5)
