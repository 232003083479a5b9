"""Detectors, segmenters and embedding models explained through their targets, on the built-in scenes.

The built-in detector and segmenter (perturbx.models, trained once and cached) and the demo CNN's
embedding; held-out images the models never saw. Thresholds leave a margin under what was measured
(closing notes and benchmarks/RESULTS.md have the figures).
"""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
from perturbx.targets import Region, Similarity

torch = pytest.importorskip("torch")
models = pytest.importorskip("perturbx.models")
from perturbx.adapters import Torch  # noqa: E402
from perturbx.datasets import make_scenes, make_shapes  # noqa: E402

N_IMAGES = 20


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(N_IMAGES, random_state=models.SCENE_TEST_SEED + 1)


def peak(a: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.argmax(a), a.shape)
    return int(y), int(x)


def test_drise_of_the_builtin_detector_peaks_in_each_detection(scenes):
    detector = Torch(models.load_demo_detector(), batch_size=128)
    hits, pairs = [], []
    for x in scenes.images:
        e = perturbx.DRISE(n_masks=1000, grid_size=8, min_score=0.25, random_state=0).explain(detector, x)
        for a, (x1, y1, x2, y2) in zip(e.attributions, e.target.boxes, strict=True):
            y, xx = peak(a)
            hits.append(x1 <= xx < x2 and y1 <= y < y2)
        if e.target.n_outputs >= 2:
            pairs.append(e)
    assert len(hits) >= N_IMAGES and np.mean(hits) >= 0.9, (sum(hits), len(hits))
    assert len(pairs) >= 5
    for e in pairs:  # two objects: two different maps, each peaking in its own box
        a, b = e.attributions[:2]
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.5
        assert peak(a) != peak(b)


def test_region_maps_of_the_builtin_segmenter_peak_on_the_object(scenes):
    segmenter = Torch(models.load_demo_segmenter(), batch_size=128)
    hits = []
    for x, masks, labels in zip(scenes.images, scenes.object_masks, scenes.labels, strict=True):
        target = Region(masks[0], 1 + int(labels[0]))          # why is this object labelled as its class
        e = perturbx.Occlusion(window=8, stride=4).explain(segmenter, x, target=target)   # (RISE too: 29/30)
        hits.append(bool(masks[0][peak(e.attributions)]))
    assert np.mean(hits) >= 0.9, hits


def _crop_around(mask: np.ndarray, size: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """Top-left corner of a random ``size`` crop that holds the whole object."""
    ys, xs = np.nonzero(mask)
    lo_y, hi_y = max(0, ys.max() + 1 - size), min(ys.min(), mask.shape[0] - size)
    lo_x, hi_x = max(0, xs.max() + 1 - size), min(xs.min(), mask.shape[1] - size)
    if lo_y > hi_y or lo_x > hi_x:
        return None
    return int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))


def test_similarity_of_two_crops_of_one_object_peaks_on_the_object():
    embedding = models.demo_embedding()
    data = make_shapes(40, random_state=models.DEMO_TEST_SEED)
    rng, hits = np.random.default_rng(0), []
    for x, mask in zip(data.images, data.masks, strict=True):
        a, b = _crop_around(mask, 48, rng), _crop_around(mask, 48, rng)
        if a is None or b is None:
            continue
        crop_a, mask_a = x[:, a[0]:a[0] + 48, a[1]:a[1] + 48], mask[a[0]:a[0] + 48, a[1]:a[1] + 48]
        with torch.no_grad():
            reference = embedding(torch.as_tensor(x[None, :, b[0]:b[0] + 48, b[1]:b[1] + 48]))[0].numpy()
        e = perturbx.RISE(n_masks=1000, grid_size=6, random_state=0).explain(
            Torch(embedding, batch_size=128), crop_a, target=Similarity(reference))
        hits.append(bool(mask_a[peak(e.attributions)]))
        if len(hits) == N_IMAGES:
            break
    assert len(hits) == N_IMAGES and np.mean(hits) >= 0.85, hits
