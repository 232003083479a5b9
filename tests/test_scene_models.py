"""Tests of the scene models of perturbx.models: DemoDetector, DemoSegmenter, their caches, demo_embedding.

The quality tests use the trained models from the shared cache (``$PERTURBX_CACHE`` or
``~/.cache/perturbx``), training each once (about a minute of CPU) when it is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx.datasets import CLASS_NAMES, make_scenes  # noqa: E402

# classifier, detector and segmenter: the modules that define the loaders and look up the names the tests patch
from perturbx.models import (  # noqa: E402
    DETECTOR_RECIPE_VERSION,
    SCENE_TEST_SEED,
    SCENE_TRAIN_SEED,
    SEGMENTER_RECIPE_VERSION,
    DemoCNN,
    DemoDetector,
    DemoSegmenter,
    classifier,
    demo_embedding,
    detector,
    load_demo_detector,
    load_demo_segmenter,
    segmenter,
    train_demo_detector,
    train_demo_segmenter,
)

C = len(CLASS_NAMES)


@pytest.fixture(scope="session")
def trained_detector() -> DemoDetector:
    return load_demo_detector()


@pytest.fixture(scope="session")
def trained_segmenter() -> DemoSegmenter:
    return load_demo_segmenter()


@pytest.fixture(scope="module")
def held_out():
    return make_scenes(100, random_state=SCENE_TEST_SEED)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _seeded(cls, seed: int = 0):
    torch.manual_seed(seed)
    return cls().eval()


# --- detector: output layout and decoding -------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80)])
def test_detector_output_layout(height: int, width: int) -> None:
    net = _seeded(DemoDetector)
    x = torch.rand(5, 3, height, width)
    with torch.no_grad():
        out = net(x)
    assert out.shape == (5, 8, 4 + 1 + C)
    assert out.dtype == torch.float32
    boxes, obj, probs = out[..., :4], out[..., 4], out[..., 5:]
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= width).all()
    assert (boxes[..., 1] >= 0).all() and (boxes[..., 3] <= height).all()
    assert (boxes[..., 0] <= boxes[..., 2]).all() and (boxes[..., 1] <= boxes[..., 3]).all()
    assert ((obj >= 0) & (obj <= 1)).all()
    assert (obj[:, :-1] >= obj[:, 1:]).all()  # sorted by decreasing objectness
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 8))
    assert DemoDetector(n_classes=3, max_detections=5).eval()(x).shape == (5, 5, 4 + 1 + 3)


def test_decode_exact_values() -> None:
    """Hand-made maps on 4x6 cells of 4 px: NMS, top-K, boxes, objectness and class probabilities."""
    h, w = 4, 6
    maps = {"objectness": torch.full((1, 1, h, w), -10.0), "classes": torch.zeros(1, 2, h, w),
            "size": torch.zeros(1, 2, h, w), "offset": torch.zeros(1, 2, h, w)}
    maps["objectness"][0, 0, 1, 2] = 2.0  # peak
    maps["objectness"][0, 0, 1, 3] = 1.0  # its neighbour: suppressed
    maps["objectness"][0, 0, 3, 5] = 0.0  # a second peak, in the corner
    maps["classes"][0, 1, 1, 2] = math.log(3.0)  # probabilities (0.25, 0.75)
    maps["offset"][0, :, 1, 2] = torch.tensor([0.5, 0.25])
    maps["size"][0, :, 1, 2] = torch.tensor([math.log(2.0), 0.0])  # 8 x 4 px
    maps["offset"][0, :, 3, 5] = torch.tensor([0.75, 0.5])
    maps["size"][0, :, 3, 5] = math.log(3.0)  # 12 x 12 px, clipped by the image's edge
    out = detector.decode(maps, 4, 3)[0]
    # centre (10, 5), 8 x 4 px
    torch.testing.assert_close(out[0, :4], torch.tensor([6.0, 3.0, 14.0, 7.0]))
    torch.testing.assert_close(out[0, 4], torch.sigmoid(torch.tensor(2.0)))
    torch.testing.assert_close(out[0, 5:], torch.tensor([0.25, 0.75]))
    # centre (23, 14), 12 x 12 px, clipped to the 24 x 16 image
    torch.testing.assert_close(out[1, :4], torch.tensor([17.0, 8.0, 24.0, 16.0]))
    torch.testing.assert_close(out[1, 4], torch.tensor(0.5))
    # the neighbour (objectness 0.73) is suppressed: the third is a background peak
    torch.testing.assert_close(out[2, 4], torch.sigmoid(torch.tensor(-10.0)))
    with pytest.raises(ValueError, match=r"max_detections=25 needs at least 25 cells .* the input has 4x6"):
        detector.decode(maps, 4, 25)


def test_detector_is_deterministic_and_batch_independent() -> None:
    net = _seeded(DemoDetector)
    x = torch.rand(6, 3, 64, 64)
    with torch.no_grad():
        a, b, one = net(x), net(x), net(x[2:3])
    assert torch.equal(a, b)
    torch.testing.assert_close(one[0], a[2], rtol=1e-4, atol=1e-4)


def test_detector_is_differentiable_to_the_input() -> None:
    net = _seeded(DemoDetector)
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    out = net(x)
    for part in (out[..., :4], out[..., 4], out[..., 5]):
        (grad,) = torch.autograd.grad(part.sum(), x, retain_graph=True)
        assert torch.isfinite(grad).all()
        assert grad.abs().sum() > 0


def test_detector_input_errors() -> None:
    net = _seeded(DemoDetector)
    with pytest.raises(ValueError, match=r"DemoDetector expects images of shape \(N, 3, H, W\); got shape \(3, 64"):
        net(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match=r"divisible by 4; got \(62, 64\)"):
        net(torch.rand(1, 3, 62, 64))
    with pytest.raises(ValueError, match=r"max_detections=8 needs at least 8 cells"):
        net(torch.rand(1, 3, 8, 8))


# --- detector: trained quality ------------------------------------------------------------------


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _precision_recall(detections: np.ndarray, scenes) -> tuple[float, float]:
    """Brute force: objectness >= 0.5, greedy by objectness, IoU >= 0.5 with an unmatched object of the class."""
    tp = n_det = n_obj = 0
    for det, boxes, labels in zip(detections, scenes.boxes, scenes.labels, strict=True):
        kept = det[det[:, 4] >= 0.5]
        n_det, n_obj = n_det + len(kept), n_obj + len(boxes)
        used: set[int] = set()
        for d in kept[np.argsort(-kept[:, 4])]:
            options = [(_iou(d[:4], boxes[j]), j) for j in range(len(boxes))
                       if j not in used and labels[j] == d[5:].argmax()]
            options = [o for o in options if o[0] >= 0.5]
            if options:
                used.add(max(options)[1])
                tp += 1
    return tp / n_det, tp / n_obj


def test_detector_precision_and_recall(trained_detector: DemoDetector, held_out) -> None:
    with torch.no_grad():
        det = trained_detector(torch.from_numpy(held_out.images)).numpy()
    precision, recall = _precision_recall(det, held_out)
    assert precision >= 0.9, precision
    assert recall >= 0.9, recall
    # the library's matcher agrees with the brute force one
    counts = np.sum([detector.match_detections(d, b, lab)
                     for d, b, lab in zip(det, held_out.boxes, held_out.labels, strict=True)], axis=0)
    assert (counts[0] / counts[1], counts[0] / counts[2]) == pytest.approx((precision, recall))
    assert trained_detector.demo_precision >= 0.9 and trained_detector.demo_recall >= 0.9


def test_detector_boxes_are_tight(trained_detector: DemoDetector, held_out) -> None:
    """Matched boxes of confident detections lie within a few pixels of the mask hulls."""
    with torch.no_grad():
        det = trained_detector(torch.from_numpy(held_out.images[:40])).numpy()
    errors = []
    for d, boxes in zip(det, held_out.boxes[:40], strict=True):
        for box in d[d[:, 4] >= 0.5, :4]:
            errors.append(np.abs(boxes - box).max(axis=1).min())
    assert np.median(errors) <= 1.5, np.median(errors)


# --- segmenter ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 64), (48, 80)])
def test_segmenter_output_layout(height: int, width: int) -> None:
    net = _seeded(DemoSegmenter)
    with torch.no_grad():
        out = net(torch.rand(3, 3, height, width))
    assert out.shape == (3, 1 + C, height, width)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert DemoSegmenter(n_classes=2).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_segmenter_is_deterministic_batch_independent_and_differentiable() -> None:
    net = _seeded(DemoSegmenter)
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        a, b, one = net(x), net(x), net(x[1:2])
    assert torch.equal(a, b)
    torch.testing.assert_close(one[0], a[1], rtol=1e-4, atol=1e-4)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x)[:, 2].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_segmenter_input_errors() -> None:
    net = _seeded(DemoSegmenter)
    with pytest.raises(ValueError, match=r"DemoSegmenter expects images of shape \(N, 3, H, W\); got shape \(1, 1,"):
        net(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"DemoSegmenter expects a height and width divisible by 4; got \(64, 66\)"):
        net(torch.rand(1, 3, 64, 66))


def test_segmenter_iou_and_pixel_accuracy(trained_segmenter: DemoSegmenter, held_out) -> None:
    with torch.no_grad():
        pred = trained_segmenter(torch.from_numpy(held_out.images)).argmax(dim=1).numpy()
    truth = held_out.segmentation
    ious = []
    for label in range(1 + C):
        inter = np.sum((pred == label) & (truth == label))
        union = np.sum((pred == label) | (truth == label))
        ious.append(inter / union)
    assert min(ious[1:]) >= 0.8, ious  # every shape class
    assert ious[0] >= 0.95, ious  # background
    assert np.mean(pred == truth) >= 0.97
    scores = trained_segmenter.demo_scores
    assert scores["mean_iou"] >= 0.8 and scores["pixel_accuracy"] >= 0.97
    assert min(scores[f"iou_{name}"] for name in CLASS_NAMES) >= 0.8


def test_confusion_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    pred, truth = rng.integers(0, 5, (3, 8, 8)), rng.integers(0, 5, (3, 8, 8))
    expected = np.array([[np.sum((truth == i) & (pred == j)) for j in range(5)] for i in range(5)])
    np.testing.assert_array_equal(segmenter.confusion(pred, truth, 5), expected)


# --- training -----------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [train_demo_detector, train_demo_segmenter])
def test_training_is_deterministic_and_leaves_global_rng_alone(train) -> None:
    state = torch.get_rng_state()
    a, scores_a = train(n_train=24, epochs=1, random_state=3)
    b, scores_b = train(n_train=24, epochs=1, random_state=3)
    assert torch.equal(state, torch.get_rng_state())
    assert _same_weights(a, b)
    assert {k: v for k, v in scores_a.items() if k != "seconds"} == {
        k: v for k, v in scores_b.items() if k != "seconds"}
    assert not a.training
    c, _ = train(n_train=24, epochs=1, random_state=4)
    assert not _same_weights(a, c)


@pytest.mark.parametrize("train", [train_demo_detector, train_demo_segmenter])
def test_training_validates(train) -> None:
    with pytest.raises(ValueError, match=r"n_train and epochs must be >= 1; got n_train=0, epochs=1"):
        train(n_train=0, epochs=1)
    with pytest.raises(ValueError, match=r"got n_train=5, epochs=0"):
        train(n_train=5, epochs=0)


def test_scene_seeds_differ() -> None:
    assert SCENE_TRAIN_SEED != SCENE_TEST_SEED


# --- caches -------------------------------------------------------------------------------------

_KINDS = {
    "detector": (detector, "train_demo_detector", load_demo_detector, "demo_detector", DETECTOR_RECIPE_VERSION,
                 "DETECTOR_RECIPE_VERSION"),
    "segmenter": (segmenter, "train_demo_segmenter", load_demo_segmenter, "demo_segmenter",
                  SEGMENTER_RECIPE_VERSION, "SEGMENTER_RECIPE_VERSION"),
}


def _fake_train(kind: str, quality: float):
    """A stand-in trainer that returns an untrained model at once, with made-up scores."""
    calls = []

    def train(**kwargs):
        calls.append(kwargs)
        seed = round(100 * quality) + len(calls)  # different weights for each quality and call
        if kind == "detector":
            return _seeded(DemoDetector, seed), {"precision": quality, "recall": quality, "seconds": 0.0}
        return _seeded(DemoSegmenter, seed), {"pixel_accuracy": quality, "mean_iou": quality, "seconds": 0.0}

    train.calls = calls
    return train


def _quality(kind: str, net: torch.nn.Module) -> float:
    return net.demo_precision if kind == "detector" else net.demo_scores["mean_iou"]


def _no_train(**kwargs):
    raise AssertionError("the loader retrained instead of reading the cache")


@pytest.mark.parametrize("kind", list(_KINDS))
def test_cache_round_trip(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, train_name, load, stem, version, _ = _KINDS[kind]
    fake = _fake_train(kind, 0.25)
    monkeypatch.setattr(module, train_name, fake)
    first = load(cache_dir=tmp_path)
    path = tmp_path / f"{stem}_v{version}.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary files left
    blob = torch.load(path, weights_only=True)
    assert blob["version"] == version and blob["n_classes"] == C
    assert _quality(kind, first) == 0.25
    monkeypatch.setattr(module, train_name, _no_train)
    second = load(cache_dir=tmp_path)
    assert second is not first and _same_weights(first, second)
    assert not second.training and _quality(kind, second) == 0.25
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))
    fake2 = _fake_train(kind, 0.75)
    monkeypatch.setattr(module, train_name, fake2)
    third = load(cache_dir=tmp_path, retrain=True)
    assert len(fake2.calls) == 1 and _quality(kind, third) == 0.75
    assert not _same_weights(first, load(cache_dir=tmp_path))


@pytest.mark.parametrize("kind", list(_KINDS))
def test_unusable_cache_is_rebuilt(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, train_name, load, stem, version, version_name = _KINDS[kind]
    path = tmp_path / f"{stem}_v{version}.pt"
    path.write_bytes(b"not a torch file")
    fake = _fake_train(kind, 0.5)
    monkeypatch.setattr(module, train_name, fake)
    with pytest.warns(RuntimeWarning, match="unusable cache file"):
        load(cache_dir=tmp_path)
    assert len(fake.calls) == 1
    assert torch.load(path, weights_only=True)["version"] == version
    monkeypatch.setattr(module, version_name, version + "-changed")  # another recipe: another file
    load(cache_dir=tmp_path)
    assert len(fake.calls) == 2
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("kind", list(_KINDS))
def test_cache_dir_from_environment(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module, train_name, load, stem, version, _ = _KINDS[kind]
    monkeypatch.setenv("PERTURBX_CACHE", str(tmp_path / "env_cache"))
    monkeypatch.setattr(module, train_name, _fake_train(kind, 0.5))
    load()
    assert (tmp_path / "env_cache" / f"{stem}_v{version}.pt").is_file()


# --- demo_embedding and the package -------------------------------------------------------------


def test_demo_embedding_is_the_pooled_feature_vector() -> None:
    net = _seeded(DemoCNN)
    emb = demo_embedding(net)
    x = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        features = emb(x)
        assert features.shape == (5, 64)
        assert torch.equal(net.classifier[-1](features), net(x))
        # the global max pooling of the trunk's map, by hand
        assert torch.equal(features, net.features(x).amax(dim=(2, 3)))
    assert emb.features is net.features  # shared, not copied
    assert not emb.training


def test_demo_embedding_default_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _seeded(DemoCNN)
    monkeypatch.setattr(classifier, "load_demo_model", lambda: net)
    assert demo_embedding().features is net.features
    with pytest.raises(TypeError, match=r"model must be a DemoCNN .*; got DemoDetector"):
        demo_embedding(DemoDetector())


def test_old_module_names_are_importable() -> None:
    from perturbx import models

    for name in ["DemoCNN", "load_demo_model", "resnet18_shaped", "train_demo_model", "DEMO_TEST_SEED",
                 "DEMO_TRAIN_SEED", "DEMO_RECIPE_VERSION", "_cache_path", "_default_cache_dir", "_accuracy",
                 "_background_cutout", "_BasicBlock", "_ResNet18Shaped", "_N_TEST"]:
        assert hasattr(models, name), name
    assert models._cache_path("/x") == Path("/x") / f"demo_cnn_v{models.DEMO_RECIPE_VERSION}.pt"
