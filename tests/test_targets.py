"""The target stage: what each target computes, that every method explains every target, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx
import perturbx.targets as T  # noqa: N812
from perturbx.adapters import Callable
from perturbx.targets.detection import box_iou, parse_detections
from tests.servers.toy_models import TOY_BOXES, multi_head, toy_detector

INFO = T.BindInfo((16, 16), "the model")
SEG = np.arange(16).reshape(4, 4).repeat(4, axis=0).repeat(4, axis=1)   # 16 square superpixels of 4 x 4


@pytest.fixture
def head(rng):
    return multi_head(rng.normal(size=(4, 3, 16, 16)))


@pytest.fixture
def x16(rng):
    return rng.random((3, 16, 16), dtype=np.float32)


# -- what each target computes ----------------------------------------------------------------------------------
def test_class_and_its_shorthands(rng):
    out = rng.normal(size=(5, 6))
    top = int(np.argmax(out[0]))
    for spec, want, single in [(None, [top], True), (2, [2], True), ([4, 1], [4, 1], False),
                               (T.Class([0, 3]), [0, 3], False)]:
        bound, ref = T.bind(spec, out[:1], INFO)
        assert bound.labels.tolist() == want and bound.single is single
        np.testing.assert_array_equal(T.evaluate(bound, out, 5), out[:, want])
        np.testing.assert_array_equal(ref, out[0, want])
    assert T.bind(T.Class(1, output="p"), {"p": out[:1]}, INFO)[0].scores({"p": out}).tolist() == out[:, [1]].tolist()


def test_output_reads_any_entry(rng):
    out = rng.normal(size=(4, 2, 3))
    bound, _ = T.bind(T.Output((1, 2)), out[:1], INFO)
    np.testing.assert_array_equal(bound.scores(out)[:, 0], out[:, 1, 2])
    bound, _ = T.bind(T.Output([0, 5]), out[:1], INFO)
    np.testing.assert_array_equal(bound.scores(out), out.reshape(4, -1)[:, [0, 5]])
    assert not bound.single and bound.subset(1).labels.tolist() == [5]
    reg = rng.normal(size=(4,))
    bound, ref = T.bind(T.Output(), reg[:1], INFO)
    assert ref[0] == reg[0] and bound.single


def test_region_is_the_weighted_mean_of_a_channel(rng):
    dense = rng.normal(size=(3, 4, 5, 6))
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    bound, ref = T.bind(T.Region(mask, 2), dense[:1], INFO)
    np.testing.assert_allclose(bound.scores(dense)[:, 0], dense[:, 2][:, mask].mean(axis=1))
    assert ref[0] == pytest.approx(dense[0, 2][mask].mean())
    top = int(np.argmax(dense[0][:, mask].mean(axis=1)))
    assert T.bind(T.Region(mask), dense[:1], INFO)[0].labels.tolist() == [top]
    soft = np.exp(dense) / np.exp(dense).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(T.bind(T.Region(mask, 1, softmax=True), dense[:1], INFO)[0].scores(dense)[:, 0],
                               soft[:, 1][:, mask].mean(axis=1))
    last = np.moveaxis(dense, 1, -1)
    np.testing.assert_allclose(T.bind(T.Region(mask, 2, channel_axis=-1), last[:1], INFO)[0].scores(last),
                               bound.scores(dense))


def test_similarity_metrics(rng):
    emb = rng.normal(size=(5, 7))
    ref = rng.normal(size=(2, 7))
    cos = (emb @ ref.T) / np.linalg.norm(emb, axis=1)[:, None] / np.linalg.norm(ref, axis=1)[None]
    np.testing.assert_allclose(T.Similarity(ref).scores(emb), cos)
    np.testing.assert_allclose(T.Similarity(ref, "dot").scores(emb), emb @ ref.T)
    dist = np.sqrt(((emb[:, None] - ref[None]) ** 2).sum(-1))
    np.testing.assert_allclose(T.Similarity(ref, "euclidean").scores(emb), -dist)
    assert T.Similarity(ref[0]).single and not T.Similarity(ref).single


def test_detection_formats_parse_alike():
    boxes = np.array([[[0, 0, 10, 10], [5, 5, 15, 20], [0, 0, 0, 0]]], float)
    scores = np.array([[0.9, 0.6, 0.0]])
    labels = np.array([[2, 0, -1]])
    as_array = np.concatenate([boxes, scores[..., None], labels[..., None]], axis=-1)
    a = parse_detections(as_array, format="box_score_label")
    d = parse_detections({"boxes": boxes, "scores": scores, "labels": labels})
    li = parse_detections([{"boxes": boxes[0, :2], "scores": scores[0, :2], "labels": labels[0, :2]}])
    for p in (a, d):
        np.testing.assert_array_equal(p.boxes, boxes)
        np.testing.assert_array_equal(p.score, scores)
    assert a.valid.tolist() == [[True, True, False]]
    np.testing.assert_array_equal(li.boxes[0, :2], boxes[0, :2])
    assert li.valid.tolist() == [[True, True]]
    counted = parse_detections({"dets": boxes, "conf": scores, "labels": labels, "num_detections": np.array([1])},
                               keys={"boxes": "dets", "scores": "conf"})
    assert counted.valid.tolist() == [[True, False, False]]
    xywh = parse_detections({"boxes": np.array([[[1, 2, 3, 4]]], float), "scores": np.ones((1, 1))},
                            box_format="xywh")
    np.testing.assert_array_equal(xywh.boxes[0, 0], [1, 2, 4, 6])


def test_detection_similarity_is_drise_formula():
    """max_j IoU(L_t, L_j) * cos(P_t, P_j) * O_j, computed by hand for one perturbed image."""
    x_out = np.array([[[0, 0, 10, 10, 0.9, 0.8, 0.2], [20, 20, 30, 30, 0.7, 0.1, 0.9]]])
    bound, ref = T.bind(T.Detection(), x_out, T.BindInfo((32, 32)))
    assert bound.labels.tolist() == [0, 1] and ref[0] == pytest.approx(0.9)   # IoU 1, cos 1, O 0.9
    pert = np.array([[[0, 0, 10, 5, 0.5, 0.6, 0.4], [20, 20, 30, 30, 0.2, 0.8, 0.2], [0, 0, 0, 0, 0, 1, 0]]])
    cos = lambda p, q: np.dot(p, q) / np.linalg.norm(p) / np.linalg.norm(q)  # noqa: E731
    want0 = max(0.5 * cos([0.8, 0.2], [0.6, 0.4]) * 0.5,                     # IoU 0.5 with the half box
                0.0)
    want1 = 1.0 * cos([0.1, 0.9], [0.8, 0.2]) * 0.2
    np.testing.assert_allclose(bound.scores(pert)[0], [want0, want1])
    assert box_iou(np.array([0, 0, 10, 10.0]), np.array([[0, 0, 10, 5.0]]))[0] == pytest.approx(0.5)


def test_detection_of_a_given_box_takes_the_matching_class_vector():
    x_out = np.array([[[0, 0, 10, 10, 0.9, 0.8, 0.2], [20, 20, 30, 30, 0.7, 0.1, 0.9]]])
    bound, ref = T.bind(T.Detection([21, 19, 30, 31]), x_out, T.BindInfo((32, 32)))
    assert bound.single and bound.labels.tolist() == [1]
    iou = box_iou(np.array([20, 20, 30, 30.0]), np.array([[21, 19, 30, 31.0]]))[0]
    assert ref[0] == pytest.approx(iou * 0.7)
    unmatched, _ = T.bind(T.Detection([40, 40, 50, 50], label=0), x_out, T.BindInfo((64, 64)))
    assert unmatched.labels.tolist() == [0]            # no detection there: the one-hot class vector of label 0


def test_min_score_and_order_of_all_detections():
    x_out = {"boxes": np.array([[[0, 0, 4, 4], [5, 5, 9, 9], [1, 1, 3, 3]]], float),
             "scores": np.array([[0.3, 0.95, 0.6]]), "labels": np.array([[0, 1, 2]])}
    bound, ref = T.bind(T.Detection(), x_out, T.BindInfo((16, 16)))
    assert bound.labels.tolist() == [1, 2] and ref.tolist() == [0.95, 0.6]
    assert T.bind(T.Detection(min_score=0.2, max_detections=1), x_out, T.BindInfo((16, 16)))[0].n_outputs == 1


# -- every method explains every target --------------------------------------------------------------------
def _methods():
    return {
        "occlusion": perturbx.Occlusion(window=4, stride=4),
        "c2f": perturbx.CoarseToFineOcclusion(window=(4, 4), stride=(2, 2)),
        "rise": perturbx.RISE(n_masks=64, grid_size=4, random_state=0),
        "lime": perturbx.LIME(n_samples=40, segmentation=SEG, random_state=0),
        "kernelshap": perturbx.KernelSHAP(n_samples=64, segmentation=SEG, random_state=0),
        "shapley": perturbx.ShapleySampling(n_samples=64, segmentation=SEG, random_state=0),
        "meaningful": perturbx.MeaningfulPerturbation(steps=2, random_state=0),
        "extremal": perturbx.ExtremalPerturbation(areas=(0.2,), steps=2, random_state=0),
    }


TARGETS = {
    "class": lambda: T.Class(1, output="logits"),
    "output": lambda: T.Output([0, 3], output="logits"),
    "region": lambda: T.Region(np.pad(np.ones((4, 4), bool), 6), 1, output="dense"),
    "similarity": lambda: T.Similarity(np.linspace(-1, 1, 8), output="embedding"),
    "detection": lambda: T.Detection(min_score=-1.0),
    "function": lambda: T.Function(lambda out: out["logits"][:, :2] - out["scores"], name="margin"),
}


@pytest.mark.parametrize("method", list(_methods()))
@pytest.mark.parametrize("kind", list(TARGETS))
def test_every_method_explains_every_target(method, kind, head, x16):
    target = TARGETS[kind]()
    model = Callable(head, batch_size=32)
    e = _methods()[method].explain(model, x16, target=target)
    n = e.target.n_outputs
    assert e.attributions.shape == ((16, 16) if e.target.single else (n, 16, 16))
    assert np.all(np.isfinite(e.attributions)) and e.n_queries > 1
    np.testing.assert_allclose(e.scores, T.evaluate(e.target, head(x16[None]), 1)[0])
    assert len(e.target_names) == n and e.targets.shape == (n,)


def test_integer_targets_and_their_target_objects_give_identical_maps(rng, x16):
    w = rng.normal(size=(4, 3, 16, 16))
    model = lambda b: b.reshape(len(b), -1).astype(np.float64) @ w.reshape(4, -1).T  # noqa: E731
    for explainer in (perturbx.RISE(n_masks=96, grid_size=4, random_state=3), perturbx.Occlusion(window=4, stride=2),
                      perturbx.LIME(n_samples=50, segmentation=SEG, random_state=1)):
        by_int = explainer.explain(Callable(model), x16, target=[2, 0])
        by_obj = explainer.explain(Callable(model), x16, target=T.Class([2, 0]))
        by_fn = explainer.explain(Callable(model), x16, target=T.Function(lambda out: out[:, [2, 0]]))
        np.testing.assert_array_equal(by_int.attributions, by_obj.attributions)
        np.testing.assert_array_equal(by_int.attributions, by_fn.attributions)
        assert by_int.targets.tolist() == [2, 0]


def test_occlusion_of_a_region_target_is_exact_for_a_linear_dense_model(rng):
    """A dense output linear in x: occluding a window drops the region mean by a known amount."""
    w = rng.normal(size=(2, 3))
    model = lambda b: np.einsum("kc,nchw->nkhw", w, np.asarray(b, np.float64))  # noqa: E731
    x = rng.random((3, 8, 8), dtype=np.float32)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 1:4] = True
    e = perturbx.Occlusion(window=2, stride=2).explain(Callable(model), x, target=T.Region(mask, 1))
    contrib = np.einsum("c,chw->hw", w[1], x.astype(np.float64)) * mask / mask.sum()   # each pixel's share
    windows = contrib.reshape(4, 2, 4, 2).sum(axis=(1, 3))                             # drop of each window
    np.testing.assert_allclose(e.attributions, np.kron(windows, np.ones((2, 2))), atol=1e-6)  # one window a pixel


def test_drise_on_the_toy_detector_peaks_in_each_box(rng):
    x = rng.random((3, 32, 32), dtype=np.float32) * 0.5 + 0.25
    e = perturbx.DRISE(n_masks=600, grid_size=8, random_state=0, min_score=0.1).explain(
        Callable(toy_detector), x)
    assert e.attributions.shape == (2, 32, 32) and e.targets.tolist() == [0, 1]
    for t, (x1, y1, x2, y2) in enumerate(TOY_BOXES.astype(int)):
        y, xx = np.unravel_index(np.argmax(e.attributions[t]), (32, 32))
        assert x1 <= xx < x2 and y1 <= y < y2
    assert np.corrcoef(e.attributions[0].ravel(), e.attributions[1].ravel())[0, 1] < 0.5
    one = perturbx.RISE(n_masks=600, grid_size=8, p_keep=0.5, random_state=0).explain(
        Callable(toy_detector), x, target=T.Detection(TOY_BOXES[1], min_score=0.1))
    assert one.attributions.shape == (32, 32)


# -- gradient methods ------------------------------------------------------------------------------------
def test_gradients_of_differentiable_targets_equal_autograd():
    torch = pytest.importorskip("torch")
    import perturbx.gradients as G  # noqa: N812
    from perturbx.adapters import Torch

    torch.manual_seed(0)
    seg = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 3, 1)).eval()
    x = np.random.default_rng(0).random((3, 10, 10), dtype=np.float32)
    mask = np.zeros((10, 10), bool)
    mask[3:7, 2:6] = True
    e = G.Saliency(abs=False).explain(Torch(seg), x, target=T.Region(mask, 2))
    xt = torch.as_tensor(x)[None].requires_grad_(True)
    (grad,) = torch.autograd.grad(seg(xt)[0, 2][torch.as_tensor(mask)].mean(), xt)
    np.testing.assert_allclose(e.raw[0], grad[0].numpy(), rtol=1e-5, atol=1e-7)
    ref = np.ones(3 * 10 * 10)
    sim = G.InputXGradient().explain(Torch(torch.nn.Flatten()), x, target=T.Similarity(ref))
    assert sim.attributions.shape == (10, 10)
    with pytest.raises(TypeError, match="target=Detection.* not a differentiable"):
        G.Saliency().explain(Torch(seg), x, target=T.Detection([0, 0, 5, 5]))


def test_torch_targets_on_the_device_equal_the_numpy_ones(rng):
    torch = pytest.importorskip("torch")
    from perturbx.adapters import Torch

    torch.manual_seed(1)
    seg = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU()).eval()
    x = rng.random((3, 12, 12), dtype=np.float32)
    mask = np.zeros((12, 12), bool)
    mask[4:9, 4:9] = True

    def as_numpy(batch):
        with torch.no_grad():
            return seg(torch.as_tensor(batch)).numpy()

    rise = perturbx.RISE(n_masks=80, grid_size=4, random_state=0)
    on_device = rise.explain(Torch(seg), x, target=T.Region(mask, softmax=True))
    on_host = rise.explain(Callable(as_numpy), x, target=T.Region(mask, softmax=True))
    np.testing.assert_allclose(on_device.attributions, on_host.attributions, rtol=1e-5, atol=1e-7)


# -- bad input -------------------------------------------------------------------------------------------
def _classifier(b):
    return np.asarray(b).reshape(len(b), -1)[:, :10].astype(np.float64)


@pytest.mark.parametrize(("target", "error", "match"), [
    (T.Detection(), ValueError, r"target=Detection.*needs a detector's output.*\(1, 10\).*looks like a classifier"),
    (T.Region(np.ones((3, 3), bool)), ValueError, r"target=Region.*needs a dense output"),
    (T.Similarity(np.ones(4)), ValueError, r"target=Similarity.*10 values but the reference has 4"),
    (T.Function(lambda out: out[:, :2, None]), ValueError, r"target=Function.*returned shape \(1, 2, 1\).*expected"),
    (T.Function(lambda out: out[:, 0] * np.nan), ValueError, r"target=Function.*NaN or infinite"),
    (T.Output(12), ValueError, r"target=Output\(12\): index 12 is out of range"),
])
def test_targets_that_do_not_fit_the_output(target, error, match, rng):
    with pytest.raises(error, match=match):
        perturbx.RISE(n_masks=8).explain(_classifier, rng.random((3, 8, 8)), target=target)


def test_bad_boxes_masks_and_arguments(rng):
    det = lambda b: {"boxes": np.tile([[1.0, 1, 5, 5]], (len(b), 1, 1)), "scores": np.ones((len(b), 1))}  # noqa: E731
    x = rng.random((3, 8, 8))
    with pytest.raises(ValueError, match=r"target=Detection.*box \[20.0, 20.0, 30.0, 30.0\].*outside the 8 x 8 image"):
        perturbx.RISE(n_masks=8).explain(det, x, target=T.Detection([20, 20, 30, 30]))
    with pytest.raises(ValueError, match=r"target=Detection.*detects nothing with score >= 2.0"):
        perturbx.RISE(n_masks=8).explain(det, x, target=T.Detection(min_score=2.0))
    dense = lambda b: np.zeros((len(b), 2, 8, 8))  # noqa: E731
    with pytest.raises(ValueError, match=r"target=Region.*mask has shape \(4, 4\).*\(8, 8\)"):
        perturbx.RISE(n_masks=8).explain(dense, x, target=T.Region(np.ones((4, 4), bool)))
    with pytest.raises(ValueError, match="'box' of Detection must be 4 finite numbers"):
        T.Detection([1, 2, 3])
    with pytest.raises(ValueError, match="'mask' of Region must hold non-negative finite weights"):
        T.Region(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'metric' of Similarity must be one of"):
        T.Similarity(np.ones(3), "angle")
    with pytest.raises(TypeError, match=r"target must be None, an int or a sequence of ints.*Got dict"):
        perturbx.RISE(n_masks=8).explain(_classifier, x, target={"class": 1})


def test_a_wrong_sampler_estimator_pairing_fails_at_construction():
    from perturbx import engine
    from perturbx.estimators.kernel_shap import ShapleyRegression
    from perturbx.estimators.shapley_sampling import PermutationShapley
    from perturbx.renderers import BlendRenderer
    from perturbx.samplers import RandomGridSampler, SlidingWindowSampler
    from perturbx.samplers.coalitions import SegmentMap, UniformCoalitionSampler

    seg = np.arange(4).repeat(4).reshape(4, 4)
    renderer = BlendRenderer(np.zeros((1, 4, 4)), np.zeros((1, 4, 4)), perturbx._utils.Layout("CHW"),
                             perturbx.backend.NUMPY, np.float32)
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="ShapleyRegression reads WeightedCoalitionChunk.*UniformCoalitionSampler "
                                        "yields CoalitionChunk"):
        engine.Plan(UniformCoalitionSampler(SegmentMap(seg), 10, rng), renderer,
                    ShapleyRegression(seg, np.zeros(1), 4))
    with pytest.raises(TypeError, match="PermutationShapley reads PermutationChunk.*RandomGridSampler yields Grid"):
        engine.Plan(RandomGridSampler((4, 4), 4, (2, 2), 0.5, rng), renderer, PermutationShapley(seg, np.zeros(1)))
    with pytest.raises(TypeError, match="WindowDrops reads WindowChunk"):
        from perturbx.estimators.window_drops import WindowDrops
        engine.Plan(UniformCoalitionSampler(SegmentMap(seg), 10, rng), renderer, WindowDrops(np.zeros(1)))
    engine.Plan(SlidingWindowSampler((4, 4), (2, 2), (2, 2)), renderer, WindowDrops(np.zeros(1)))  # a right one
