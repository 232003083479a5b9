"""Tests of perturbx.datasets: the seeded synthetic shapes with object masks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from perturbx.datasets import CLASS_NAMES, ShapesDataset, make_shapes

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data() -> ShapesDataset:
    return make_shapes(400, random_state=123)


def test_shapes_dtypes_and_ranges(data: ShapesDataset) -> None:
    assert data.images.shape == (400, 3, 64, 64)
    assert data.images.dtype == np.float32
    assert data.labels.shape == (400,)
    assert data.labels.dtype == np.int64
    assert data.masks.shape == (400, 64, 64)
    assert data.masks.dtype == np.bool_
    assert np.isfinite(data.images).all()
    assert data.images.min() >= 0.0
    assert data.images.max() <= 1.0
    assert set(np.unique(data.labels)) <= set(range(len(CLASS_NAMES)))
    assert data.class_names == CLASS_NAMES == ("circle", "square", "triangle", "cross")
    assert isinstance(data.class_names, tuple)


@pytest.mark.parametrize("size", [32, 48, 100])
def test_size_parameter(size: int) -> None:
    d = make_shapes(5, size=size, random_state=0)
    assert d.images.shape == (5, 3, size, size)
    assert d.masks.shape == (5, size, size)
    # Object size scales with the image: 14-26 px at 64 -> roughly proportional.
    diam = np.sqrt(4 * d.masks.sum(axis=(1, 2)) / np.pi)
    assert (diam > 0.12 * size).all()
    assert (diam < 0.45 * size).all()


def test_len_and_getitem(data: ShapesDataset) -> None:
    assert len(data) == 400
    image, label, mask = data[7]
    np.testing.assert_array_equal(image, data.images[7])
    assert label == data.labels[7]
    np.testing.assert_array_equal(mask, data.masks[7])
    image, label, mask = data[-1]
    np.testing.assert_array_equal(image, data.images[399])
    assert image.shape == (3, 64, 64)
    assert mask.shape == (64, 64)


def test_frozen(data: ShapesDataset) -> None:
    with pytest.raises(AttributeError):
        data.labels = np.zeros(400, dtype=np.int64)  # type: ignore[misc]


def test_same_seed_identical_different_seed_different() -> None:
    a = make_shapes(20, random_state=5)
    b = make_shapes(20, random_state=5)
    c = make_shapes(20, random_state=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.masks, c.masks)


def test_generator_is_accepted_and_advanced() -> None:
    rng = np.random.default_rng(9)
    first = make_shapes(3, random_state=rng)
    second = make_shapes(3, random_state=rng)
    assert not np.array_equal(first.images, second.images)
    again = make_shapes(3, random_state=np.random.default_rng(9))
    np.testing.assert_array_equal(first.images, again.images)


def test_prefix_property() -> None:
    """A larger set drawn with the same seed starts with the smaller one."""
    small = make_shapes(10, random_state=42)
    big = make_shapes(25, random_state=42)
    np.testing.assert_array_equal(small.images, big.images[:10])
    np.testing.assert_array_equal(small.labels, big.labels[:10])
    np.testing.assert_array_equal(small.masks, big.masks[:10])


def test_class_balance(data: ShapesDataset) -> None:
    counts = np.bincount(data.labels, minlength=4)
    assert counts.sum() == 400
    # Expected 100 each; std of a count is ~8.7, so 60..140 is > 4.5 sigma.
    assert (counts >= 60).all(), counts
    assert (counts <= 140).all(), counts


def test_each_mask_is_one_object_inside_the_image(data: ShapesDataset) -> None:
    areas = data.masks.sum(axis=(1, 2))
    assert (areas > 0).all()
    for mask in data.masks:
        assert connected_components(mask, connectivity=2).max() == 1
        # Fully inside: nothing on the outermost pixel frame.
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
    # Roughly 14-26 px "diameter" at size 64 (triangles are a bit smaller in area).
    diam = np.sqrt(4 * areas / np.pi)
    assert diam.min() > 10
    assert diam.max() < 28


def test_object_is_a_flat_colour_that_stands_out(data: ShapesDataset) -> None:
    for image, mask in zip(data.images, data.masks, strict=True):
        obj = image[:, mask]  # (3, n_pixels)
        # The object is drawn in one flat colour ...
        assert obj.std(axis=1).max() < 1e-4
        # ... that clearly differs from the background right around it.
        ring = binary_dilation(mask, iterations=3) & ~mask
        contrast = np.linalg.norm(obj.mean(axis=1) - image[:, ring].mean(axis=1))
        assert contrast > 0.3


def test_background_is_cluttered(data: ShapesDataset) -> None:
    """Outside the object the image is not flat: gradient, texture and distractors."""
    for image, mask in zip(data.images[:50], data.masks[:50], strict=True):
        bg = image[:, ~mask]
        assert bg.std(axis=1).max() > 0.02
        # Distractors: some background pixels are far from the smooth background,
        # i.e. there are sharp local changes outside the object.
        dx = np.abs(np.diff(image, axis=2)).max(axis=0)
        far = ~binary_dilation(mask, iterations=2)[:, 1:]
        assert (dx[far] > 0.2).sum() > 0


def test_label_is_decided_by_the_mask_shape(data: ShapesDataset) -> None:
    """The class can be read off the object's geometry (and only its mask)."""
    for label, mask in zip(data.labels, data.masks, strict=True):
        props = regionprops(mask.astype(np.uint8))[0]
        rows, cols = np.nonzero(mask)
        radius = np.hypot(rows - props.centroid[0], cols - props.centroid[1]).max() + 0.5
        fill = mask.sum() / (np.pi * radius**2)  # circle ~0.9, square ~0.64, triangle ~0.41
        name = CLASS_NAMES[label]
        if name == "circle":
            assert fill > 0.8
        elif name == "triangle":
            assert fill < 0.52
        elif name == "square":
            assert 0.52 < fill < 0.8
            assert props.solidity > 0.85
        else:
            assert name == "cross"
            assert props.solidity < 0.82


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"n must be an integer >= 1; got 0"),
        ({"n": -3}, r"n must be an integer >= 1; got -3"),
        ({"n": 2.5}, r"n must be an integer >= 1; got 2\.5 of type float"),
        ({"n": True}, r"n must be an integer >= 1; got True of type bool"),
        ({"n": 2, "size": 31}, r"size must be an integer >= 32; got 31"),
        ({"n": 2, "size": "64"}, r"size must be an integer >= 32; got '64' of type str"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    n = kwargs.pop("n")
    with pytest.raises(ValueError, match=match):
        make_shapes(n, **kwargs)


# --- options: texture and object size --------------------------------------------------------------------------------

def test_default_options_give_todays_data() -> None:
    """Passing the defaults explicitly changes nothing (the digests of tests/test_scenes.py pin the defaults)."""
    a = make_shapes(15, random_state=4)
    b = make_shapes(15, texture="smooth", object_size=(14, 26), random_state=4)
    for x, y in [(a.images, b.images), (a.labels, b.labels), (a.masks, b.masks)]:
        np.testing.assert_array_equal(x, y)


def _high_frequency_energy(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean squared horizontal difference of neighbouring pixels off the object (and one pixel around it)."""
    diff = np.diff(images, axis=3) ** 2                                   # (n, 3, H, W - 1)
    off = ~binary_dilation(masks, iterations=1, structure=np.ones((1, 3, 3)))[:, :, 1:]
    return np.array([d[:, o].mean() for d, o in zip(diff, off, strict=True)])


def test_strong_texture_is_busier_and_keeps_the_task() -> None:
    smooth = make_shapes(40, random_state=8)
    strong = make_shapes(40, texture="strong", random_state=8)
    assert strong.images.dtype == np.float32 and strong.images.min() >= 0.0 and strong.images.max() <= 1.0
    energy_smooth, energy_strong = (_high_frequency_energy(d.images, d.masks) for d in (smooth, strong))
    assert np.median(energy_strong) > 5 * np.median(energy_smooth), (energy_strong, energy_smooth)
    for image, mask in zip(strong.images, strong.masks, strict=True):
        obj = image[:, mask]
        assert obj.std(axis=1).max() < 1e-4                              # still one flat colour
        ring = binary_dilation(mask, iterations=3) & ~mask
        assert np.linalg.norm(obj.mean(axis=1) - image[:, ring].mean(axis=1)) > 0.25


@pytest.mark.parametrize("size", [64, 96])
def test_object_size_sets_the_diameter_range(size: int) -> None:
    d = make_shapes(60, size=size, object_size=(8, 12), random_state=1)
    radius = []
    for mask in d.masks:   # the object's enclosing radius is between the drawn radius and 1.25 x it (triangle)
        rows, cols = np.nonzero(mask)
        props = regionprops(mask.astype(np.uint8))[0]
        radius.append(np.hypot(rows - props.centroid[0], cols - props.centroid[1]).max() + 0.5)
    scale = size / 64
    assert min(radius) > 0.85 * 4 * scale and max(radius) < 1.3 * 6 * scale + 1
    assert np.mean(d.masks.sum(axis=(1, 2))) < 0.4 * np.mean(make_shapes(60, size=size, random_state=1).masks.sum(
        axis=(1, 2)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"texture": "grainy"}, r"texture must be one of \('smooth', 'strong'\); got 'grainy'"),
        ({"texture": None}, r"texture must be one of .*; got None"),
        ({"object_size": 10}, r"object_size must be a pair \(lo, hi\) of real numbers with 4 <= lo <= hi <= 40"),
        ({"object_size": (12, 8)}, r"object_size must be .*; got \(12\.0, 8\.0\); give the smaller diameter first"),
        ({"object_size": (2, 8)}, r"object_size must be .*; got \(2\.0, 8\.0\)"),
        ({"object_size": (8, "12")}, r"object_size must be .* got \(8, '12'\)"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_shapes(2, **kwargs)


def test_numpy_integers_are_accepted() -> None:
    d = make_shapes(np.int64(2), size=np.int32(40), random_state=0)
    assert d.images.shape == (2, 3, 40, 40)


def test_does_not_import_torch() -> None:
    code = "import sys, perturbx.datasets as d; d.make_shapes(2, random_state=0); assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
