"""Tests of the multi-object scenes of perturbx.datasets (make_scenes, SceneDataset, boxes)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, distance_transform_edt
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from perturbx.datasets import CLASS_NAMES, SceneDataset, make_scenes, make_shapes, mask_boxes

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenes() -> SceneDataset:
    return make_scenes(150, random_state=11)


def _hull(mask: np.ndarray) -> list[float]:
    """Brute-force box of a mask: first/last row and column holding a True pixel."""
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


# --- make_shapes is unchanged by the refactoring of the drawing helpers -------------------------

# sha256 over images, labels and masks bytes of make_shapes(n, size=size, random_state=seed), computed
# with the code before make_scenes was added (commit 564445c).
_SHAPES_DIGESTS = {
    (0, 12, 64): "42733ca255aba939c9ee6e98d036676bab93a2650a5f60247c3cb7682bd9f4e8",
    (7, 12, 64): "b0816c180989aa1132543e1710331db32ead6a0092cf523968873d0c558f941b",
    (123, 12, 64): "7c9396b15bfde87dd54dd0fc882cf24c681a46b4ade884c6b9262a372892fe55",
    (5, 6, 48): "a6778117c6fd4d85a15f1de1c92e8f3f1aa95194697aa3bdce794225bf30e029",
    (11, 4, 100): "60c012b1e3ed6f579e6c80ad011623628bac20b1d74c91a1d712a43885fd10e0",
}


@pytest.mark.parametrize(("seed", "n", "size"), list(_SHAPES_DIGESTS))
def test_make_shapes_is_bit_identical_to_before(seed: int, n: int, size: int) -> None:
    data = make_shapes(n, size=size, random_state=seed)
    digest = hashlib.sha256()
    for array in (data.images, data.labels, data.masks):
        digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == _SHAPES_DIGESTS[seed, n, size]


def test_shapes_boxes_are_mask_hulls() -> None:
    data = make_shapes(40, random_state=3)
    boxes = data.boxes
    assert boxes.shape == (40, 4)
    assert boxes.dtype == np.float32
    for box, mask in zip(boxes, data.masks, strict=True):
        assert box.tolist() == _hull(mask)


# --- mask_boxes ---------------------------------------------------------------------------------


def test_mask_boxes_exact_values() -> None:
    masks = np.zeros((3, 5, 7), dtype=bool)
    masks[0, 1:4, 2:6] = True  # rows 1-3, columns 2-5
    masks[1, 4, 6] = True  # the last pixel
    masks[2, 0, 0] = masks[2, 2, 3] = True  # two pixels: the hull spans both
    np.testing.assert_array_equal(mask_boxes(masks), [[2, 1, 6, 4], [6, 4, 7, 5], [0, 0, 4, 3]])
    assert mask_boxes(np.zeros((0, 5, 7), dtype=bool)).shape == (0, 4)


def test_mask_boxes_bad_input() -> None:
    with pytest.raises(ValueError, match=r"masks must have shape \(k, H, W\); got shape \(5, 7\)"):
        mask_boxes(np.ones((5, 7), dtype=bool))
    masks = np.ones((3, 4, 4), dtype=bool)
    masks[1] = False
    with pytest.raises(ValueError, match=r"masks must each have a True pixel; masks \[1\] are empty"):
        mask_boxes(masks)


# --- make_scenes: layout ------------------------------------------------------------------------


def test_scene_layout_and_dtypes(scenes: SceneDataset) -> None:
    n = 150
    assert len(scenes) == n
    assert scenes.images.shape == (n, 3, 64, 64)
    assert scenes.images.dtype == np.float32
    assert scenes.images.min() >= 0.0 and scenes.images.max() <= 1.0
    assert len(scenes.boxes) == len(scenes.labels) == len(scenes.object_masks) == n
    for boxes, labels, masks in zip(scenes.boxes, scenes.labels, scenes.object_masks, strict=True):
        k = len(labels)
        assert boxes.shape == (k, 4) and boxes.dtype == np.float32
        assert labels.shape == (k,) and labels.dtype == np.int64
        assert masks.shape == (k, 64, 64) and masks.dtype == np.bool_
        assert set(labels.tolist()) <= set(range(len(CLASS_NAMES)))
    assert scenes.class_names == CLASS_NAMES


def test_object_counts_cover_the_range(scenes: SceneDataset) -> None:
    counts = np.array([len(labels) for labels in scenes.labels])
    assert counts.min() >= 1 and counts.max() <= 3
    # 150 draws of a uniform 1..3: each count expected 50 times (sd ~5.8).
    assert (np.bincount(counts, minlength=4)[1:] >= 25).all()
    for k, (lo, hi) in [(2, (2, 2)), (3, (3, 3)), (1, (1, 2))]:
        counts = [len(labels) for labels in make_scenes(12, n_objects=(lo, hi), random_state=k).labels]
        assert lo <= min(counts) and max(counts) <= hi
    assert {len(labels) for labels in make_scenes(5, n_objects=2, random_state=0).labels} == {2}


def test_class_balance(scenes: SceneDataset) -> None:
    counts = np.bincount(np.concatenate(scenes.labels), minlength=4)
    expected = counts.sum() / 4  # about 75 per class
    assert (np.abs(counts - expected) < 0.45 * expected).all(), counts


def test_boxes_are_the_mask_hulls(scenes: SceneDataset) -> None:
    for boxes, masks in zip(scenes.boxes, scenes.object_masks, strict=True):
        for box, mask in zip(boxes, masks, strict=True):
            assert box.tolist() == _hull(mask)
            x1, y1, x2, y2 = box
            assert 0 < x1 < x2 < 64 and 0 < y1 < y2 < 64  # inside, off the outer pixel frame


def test_objects_are_single_and_apart(scenes: SceneDataset) -> None:
    """Each mask is one connected object; objects of a scene are more than 2 pixels apart."""
    for masks in scenes.object_masks:
        for mask in masks:
            assert connected_components(mask, connectivity=2).max() == 1
        for j, mask in enumerate(masks):
            others = masks[np.arange(len(masks)) != j].any(axis=0)
            if others.any():
                distance = distance_transform_edt(~others)  # distance of each pixel to the other objects
                assert distance[mask].min() > 2.0


def test_segmentation_label_map(scenes: SceneDataset) -> None:
    seg = scenes.segmentation
    assert seg.shape == (150, 64, 64)
    assert seg.dtype == np.int64
    for i in range(len(scenes)):
        expected = np.zeros((64, 64), dtype=np.int64)
        for label, mask in zip(scenes.labels[i], scenes.object_masks[i], strict=True):
            expected[mask] = label + 1
        np.testing.assert_array_equal(seg[i], expected)


def test_objects_are_flat_colours_that_stand_out(scenes: SceneDataset) -> None:
    for image, masks in zip(scenes.images, scenes.object_masks, strict=True):
        background = ~masks.any(axis=0)
        for mask in masks:
            obj = image[:, mask]
            assert obj.std(axis=1).max() < 1e-4
            ring = binary_dilation(mask, iterations=2) & background
            assert np.linalg.norm(obj.mean(axis=1) - image[:, ring].mean(axis=1)) > 0.3


def test_distractors_lie_off_the_objects(scenes: SceneDataset) -> None:
    """Outside the objects there are sharp local changes (distractors), never touching an object."""
    n_with_distractors = 0
    for image, masks in zip(scenes.images, scenes.object_masks, strict=True):
        dx = np.abs(np.diff(image, axis=2)).max(axis=0)  # (64, 63)
        far = ~binary_dilation(masks.any(axis=0), iterations=2)[:, 1:]
        n_with_distractors += int((dx[far] > 0.2).any())
    assert n_with_distractors >= 0.9 * len(scenes)


def test_label_is_decided_by_the_mask_shape(scenes: SceneDataset) -> None:
    """Each object's class can be read off its geometry, as in make_shapes."""
    for labels, masks in zip(scenes.labels, scenes.object_masks, strict=True):
        for label, mask in zip(labels, masks, strict=True):
            props = regionprops(mask.astype(np.uint8))[0]
            rows, cols = np.nonzero(mask)
            radius = np.hypot(rows - props.centroid[0], cols - props.centroid[1]).max() + 0.5
            fill = mask.sum() / (np.pi * radius**2)
            name = CLASS_NAMES[label]
            if name == "circle":
                assert fill > 0.8
            elif name == "triangle":
                assert fill < 0.52
            elif name == "square":
                assert 0.52 < fill < 0.8 and props.solidity > 0.85
            else:
                assert props.solidity < 0.82


@pytest.mark.parametrize("size", [32, 48, 100])
def test_size_parameter(size: int) -> None:
    data = make_scenes(6, size=size, n_objects=3, random_state=1)
    assert data.images.shape == (6, 3, size, size)
    assert data.segmentation.shape == (6, size, size)
    for boxes, masks in zip(data.boxes, data.object_masks, strict=True):
        assert masks.shape == (3, size, size)
        assert (masks.sum(axis=0) <= 1).all()
        assert boxes.max() <= size
        diam = np.sqrt(4 * masks.sum(axis=(1, 2)) / np.pi)  # objects scale with the image
        assert (diam > 0.12 * size).all() and (diam < 0.45 * size).all()


def test_len_getitem_and_frozen(scenes: SceneDataset) -> None:
    image, boxes, labels, masks = scenes[4]
    np.testing.assert_array_equal(image, scenes.images[4])
    assert boxes is scenes.boxes[4] and labels is scenes.labels[4] and masks is scenes.object_masks[4]
    image, boxes, _, _ = scenes[-1]
    np.testing.assert_array_equal(image, scenes.images[149])
    assert boxes is scenes.boxes[149]
    with pytest.raises(AttributeError):
        scenes.images = np.zeros(1)  # type: ignore[misc]


# --- make_scenes: seeding -----------------------------------------------------------------------


def _same(a: SceneDataset, b: SceneDataset) -> bool:
    return len(a) == len(b) and np.array_equal(a.images, b.images) and all(
        np.array_equal(x, y)
        for fa, fb in ((a.boxes, b.boxes), (a.labels, b.labels), (a.object_masks, b.object_masks))
        for x, y in zip(fa, fb, strict=True)
    )


def test_same_seed_identical_different_seed_different() -> None:
    assert _same(make_scenes(10, random_state=5), make_scenes(10, random_state=5))
    assert not np.array_equal(make_scenes(10, random_state=5).images, make_scenes(10, random_state=6).images)


def test_prefix_property() -> None:
    small = make_scenes(8, random_state=42)
    big = make_scenes(20, random_state=42)
    head = SceneDataset(images=big.images[:8], boxes=big.boxes[:8], labels=big.labels[:8],
                        object_masks=big.object_masks[:8])
    assert _same(small, head)


def test_generator_is_accepted_and_advanced() -> None:
    rng = np.random.default_rng(9)
    first = make_scenes(3, random_state=rng)
    second = make_scenes(3, random_state=rng)
    assert not np.array_equal(first.images, second.images)
    assert _same(first, make_scenes(3, random_state=np.random.default_rng(9)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, r"n must be an integer >= 1; got 0"),
        ({"n": 2.5}, r"n must be an integer >= 1; got 2\.5 of type float"),
        ({"size": 31}, r"size must be an integer >= 32; got 31"),
        ({"n_objects": (0, 2)}, r"n_objects must be a pair \(lo, hi\) of integers with 1 <= lo <= hi <= 3; "
                                r"got \(0, 2\)"),
        ({"n_objects": (3, 2)}, r"n_objects must be .*; got \(3, 2\); .*lower bound first"),
        ({"n_objects": (1, 4)}, r"n_objects must be .*hi <= 3; got \(1, 4\); ask for at least 1 and at most 3"),
        ({"n_objects": 5}, r"n_objects must be .*; got \(5, 5\)"),
        ({"n_objects": (1.0, 2)}, r"n_objects must be .*; got \(1\.0, 2\); pass e\.g\. n_objects=\(1, 3\)"),
        ({"n_objects": (1, 2, 3)}, r"n_objects must be a pair .*; got \(1, 2, 3\)"),
        ({"n_objects": "12"}, r"n_objects must be a pair .*; got '12'"),
        ({"n_objects": True}, r"n_objects must be a pair .*; got True"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    n = kwargs.pop("n", 2)
    with pytest.raises(ValueError, match=match):
        make_scenes(n, **kwargs)


def test_numpy_integers_are_accepted() -> None:
    data = make_scenes(np.int64(2), size=np.int32(40), n_objects=(np.int64(1), np.int8(2)), random_state=0)
    assert data.images.shape == (2, 3, 40, 40)


def test_does_not_import_torch() -> None:
    code = ("import sys, perturbx.datasets as d; d.make_scenes(2, random_state=0).segmentation; "
            "assert 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
