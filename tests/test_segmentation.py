"""Superpixels: every source gives a 0..M-1 map of the sample's shape; lime's hide colour; errors."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx._utils import Layout
from perturbx.segmentation import (
    SLIC,
    Felzenszwalb,
    Grid,
    Quickshift,
    SegmentMean,
    check_segmentation,
    compute_segments,
    paint,
    relabel,
    segment_mean,
)

CHW = Layout("CHW")


@pytest.fixture(scope="module")
def image():
    """A (3, 40, 48) picture with four flat colour blocks and mild noise."""
    rng = np.random.default_rng(0)
    x = np.zeros((3, 40, 48))
    x[:, :20, :24] = np.array([0.9, 0.1, 0.1])[:, None, None]
    x[:, :20, 24:] = np.array([0.1, 0.8, 0.2])[:, None, None]
    x[:, 20:, :24] = np.array([0.1, 0.2, 0.9])[:, None, None]
    x[:, 20:, 24:] = np.array([0.9, 0.9, 0.2])[:, None, None]
    return np.clip(x + 0.03 * rng.standard_normal(x.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("spec", ["slic", "quickshift", "felzenszwalb", "grid", SLIC(n_segments=8),
                                  Quickshift(kernel_size=2), Felzenszwalb(scale=50), Grid((3, 5))])
def test_every_source_labels_each_pixel_0_to_m(image, spec):
    seg = compute_segments(check_segmentation(spec, "T"), image, CHW, "T")
    assert seg.shape == (40, 48) and seg.dtype == np.int64
    m = seg.max() + 1
    assert m >= 2 and set(np.unique(seg)) == set(range(m))


def test_superpixels_follow_colour_edges(image):
    seg = compute_segments(SLIC(n_segments=4, compactness=10), image, CHW, "T")
    # superpixels do not straddle the colour blocks: 97% of pixels share the block of most of their segment
    block = (np.arange(40)[:, None] >= 20) * 2 + (np.arange(48)[None, :] >= 24)
    majority = sum(np.bincount(block[seg == label]).max() for label in range(seg.max() + 1))
    assert majority >= 0.97 * seg.size


def test_grid_cells():
    seg = Grid((2, 3))(np.zeros((4, 6, 3)))
    np.testing.assert_array_equal(seg, [[0, 0, 1, 1, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5]] * 2)


def test_grid_finer_than_image_keeps_one_pixel_cells():
    seg = Grid((10, 10))(np.zeros((3, 4)))
    assert sorted(np.unique(seg)) == list(range(12))


def test_user_array_is_renumbered_in_label_order(image):
    raw = np.repeat(np.array([[7, -2, 40]]), 40, axis=0).repeat(16, axis=1)
    seg = compute_segments(raw, image, CHW, "T")
    np.testing.assert_array_equal(seg[0, [0, 16, 32]], [1, 0, 2])
    np.testing.assert_array_equal(relabel(seg), seg)


def test_callable_gets_channels_last_image_in_every_layout(image):
    seen = []

    def spy(img):
        seen.append(img.shape)
        return Grid((2, 2))(img)

    hwc = np.moveaxis(image, 0, -1)
    a = compute_segments(spy, image, CHW, "T")
    b = compute_segments(spy, hwc, Layout("HWC"), "T")
    c = compute_segments(spy, image[0], Layout("HW"), "T")
    assert seen == [(40, 48, 3), (40, 48, 3), (40, 48)]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_images_outside_unit_range_segment_like_rescaled(image):
    spec = SLIC(n_segments=12)
    np.testing.assert_array_equal(compute_segments(spec, image * 255 - 100, CHW, "T"),
                                  compute_segments(spec, (image - image.min()) / np.ptp(image), CHW, "T"))


def test_segment_mean_is_lime_hide_colour(image):
    seg = compute_segments("slic", image, CHW, "T")
    hwc = np.moveaxis(image, 0, -1).astype(np.float64)
    fudged = hwc.copy()
    for label in np.unique(seg):  # lime_image.explain_instance with hide_color=None
        fudged[seg == label] = (np.mean(hwc[seg == label][:, 0]), np.mean(hwc[seg == label][:, 1]),
                                np.mean(hwc[seg == label][:, 2]))
    np.testing.assert_allclose(np.moveaxis(segment_mean(image, seg), 0, -1), fudged, atol=1e-12)
    np.testing.assert_allclose(SegmentMean(seg, layout="HWC")(hwc), fudged, atol=1e-12)
    np.testing.assert_allclose(SegmentMean(seg)(image), segment_mean(image, seg), atol=1e-12)


def test_paint():
    seg = np.array([[0, 1], [1, 2]])
    np.testing.assert_array_equal(paint(np.array([[1.0, 2.0, 3.0]]), seg), [[[1, 2], [2, 3]]])


def test_errors(image):
    with pytest.raises(ValueError, match="one of"):
        check_segmentation("superpixels", "LIME")
    with pytest.raises(TypeError, match="'segmentation' parameter of LIME"):
        check_segmentation(3.5, "LIME")
    with pytest.raises(ValueError, match="integer segment map"):
        check_segmentation(np.zeros((40, 48)), "LIME")
    with pytest.raises(ValueError, match=r"shape \(40, 47\).*\(40, 48\)"):
        compute_segments(np.zeros((40, 47), dtype=int), image, CHW, "LIME")
    with pytest.raises(ValueError, match="single segment"):
        compute_segments(np.full((40, 48), 3), image, CHW, "LIME")
    with pytest.raises(ValueError, match="integer labels"):
        compute_segments(lambda img: img[:, :, 0], image, CHW, "LIME")
