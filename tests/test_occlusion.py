"""Occlusion: agreement with Captum, layouts, targets and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable, Torch

from .conftest import linear_model

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")


def captum_occlusion(net, x, window, stride, target, baseline):
    occ = captum_attr.Occlusion(net)
    out = occ.attribute(torch.as_tensor(x)[None], sliding_window_shapes=window, strides=stride,
                        target=target, baselines=baseline)
    return out[0].numpy()


@pytest.mark.parametrize(("window", "stride"), [((4, 4), (2, 2)),      # divides 20, not 23
                                                 ((5, 6), (3, 4)),      # divides neither
                                                 ((20, 23), (1, 1))])   # one window: whole image
def test_equals_captum_spatial_window(small_cnn, rng, window, stride):
    x = rng.random((3, 20, 23), dtype=np.float32)
    ours = perturbx.Occlusion(window, stride).explain(Torch(small_cnn, batch_size=7), x, target=2)
    ref = captum_occlusion(small_cnn, x, (3, *window), (1, *stride), 2, 0.0)
    np.testing.assert_allclose(ours.attributions, ref[0], atol=1e-5)
    np.testing.assert_allclose(ref[1], ref[0], atol=1e-6)  # a full-depth window is the same in every channel


def test_equals_captum_multichannel_window(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    ours = perturbx.Occlusion((2, 5, 5), (1, 3, 4)).explain(Torch(small_cnn), x, target=[0, 4])
    for i, t in enumerate([0, 4]):
        ref = captum_occlusion(small_cnn, x, (2, 5, 5), (1, 3, 4), t, 0.0)
        np.testing.assert_allclose(ours.channel_attributions[i], ref, atol=1e-5)
        np.testing.assert_allclose(ours.attributions[i], ref.sum(0), atol=1e-5)


def test_equals_captum_with_array_baseline(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    base = rng.random((3, 20, 23), dtype=np.float32)
    ours = perturbx.Occlusion((6, 6), (3, 3), baseline=base).explain(Torch(small_cnn), x, target=1)
    ref = captum_occlusion(small_cnn, x, (3, 6, 6), (1, 3, 3), 1, torch.as_tensor(base)[None])
    np.testing.assert_allclose(ours.attributions, ref[0], atol=1e-5)


def test_linear_model_exact(rng):
    """For a linear model, a window's drop is the weighted sum of (x - baseline) inside it."""
    w = rng.normal(size=(2, 1, 6, 6))
    x = rng.random((1, 6, 6)).astype(np.float32)
    e = perturbx.Occlusion((2, 2), (2, 2)).explain(Callable(linear_model(w)), x, target=1)
    contrib = (w[1, 0] * x[0]).reshape(3, 2, 3, 2).sum(axis=(1, 3))  # disjoint windows: drop per block
    np.testing.assert_allclose(e.attributions, np.kron(contrib, np.ones((2, 2))), atol=1e-5)
    assert e.n_queries == 1 + 9


def test_layouts_agree(rng):
    w = rng.normal(size=(3, 3, 12, 10))
    x = rng.random((3, 12, 10)).astype(np.float32)
    chw = perturbx.Occlusion((4, 3), (2, 2)).explain(Callable(linear_model(w)), x, target=[0, 2])
    w_hwc = np.moveaxis(w, 1, -1)
    hwc = perturbx.Occlusion((4, 3), (2, 2)).explain(
        Callable(linear_model(w_hwc), input_layout="HWC"), np.moveaxis(x, 0, -1), target=[0, 2])
    np.testing.assert_allclose(chw.attributions, hwc.attributions, atol=1e-5)
    gray = perturbx.Occlusion((4, 3), (2, 2)).explain(
        Callable(linear_model(w[:, 0]), input_layout="HW"), x[0], target=1)
    single = perturbx.Occlusion((4, 3), (2, 2)).explain(Callable(linear_model(w[:, :1])), x[:1], target=1)
    np.testing.assert_allclose(gray.attributions, single.attributions, atol=1e-5)


def test_multi_target_equals_single_targets(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    occ = perturbx.Occlusion((5, 5), (4, 4))
    multi = occ.explain(Torch(small_cnn), x, target=[3, 0, 3])
    assert multi.attributions.shape == (3, 20, 23)
    for i, t in enumerate([3, 0, 3]):
        np.testing.assert_allclose(multi.attributions[i], occ.explain(small_cnn, x, target=t).attributions,
                                   atol=1e-6)
    top = occ.explain(small_cnn, x)
    assert top.targets.tolist() == [int(np.argmax(small_cnn(torch.as_tensor(x)[None]).detach().numpy()))]


def test_window_larger_than_image(rng):
    f = linear_model(rng.normal(size=(2, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"window \(16, 16\) is larger than the sample along its height"):
        perturbx.Occlusion().explain(f, rng.random((3, 8, 8)), target=0)


def test_stride_larger_than_window(rng):
    f = linear_model(rng.normal(size=(2, 3, 16, 16)))
    with pytest.raises(ValueError, match="stride .* is larger than the window"):
        perturbx.Occlusion((4, 4), (5, 5)).explain(f, rng.random((3, 16, 16)), target=0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"window": 0}, "'window' parameter of Occlusion must be a positive int"),
    ({"window": (4, 4, 4, 4)}, "'window' parameter"),
    ({"window": (4, 4), "stride": (1, 1, 1)}, "'stride' parameter"),
    ({"baseline": "median"}, "'baseline' parameter of Occlusion must be"),
    ({"max_queries": 1}, "'max_queries' parameter of Occlusion must be an int >= 2"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        perturbx.Occlusion(**kwargs)


@pytest.mark.parametrize("shape, window, stride", [((13, 17), (4, 5), (3, 2)), ((3, 9, 11), (2, 3, 4), (1, 2, 3))])
def test_windows_folded_from_positions_equal_folding_their_masks(rng, shape, window, stride):
    """ScoreDrop reads a window chunk's positions, not its masks: the same map as from the masks."""
    from perturbx.backend import NUMPY
    from perturbx.estimators import ScoreDrop
    from perturbx.samplers import SlidingWindowSampler

    class Masks:  # the same masks, as a chunk of no known kind
        def __init__(self, chunk):
            self.chunk, self.size = chunk, chunk.size

    sampler = SlidingWindowSampler(shape, window, stride)
    reference = np.array([1.5, -0.25])
    by_position, by_mask = ScoreDrop(NUMPY, reference), ScoreDrop(NUMPY, reference)
    for chunk in sampler.chunks(7):
        masks = chunk.materialize(NUMPY, np.float32)
        scores = rng.normal(size=(chunk.size, 2))
        by_position.update(chunk, masks, scores)
        by_mask.update(Masks(chunk), masks, scores)
    expected = by_mask.finalize()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(by_position.finalize(), expected, rtol=1e-5, atol=1e-6)
