"""MeaningfulPerturbation on a confident classifier (issue 20): the textured CNN, true-class probability > 0.99.

The 30 held-out images are the first of ``textured_shapes(200)`` that the model classifies
correctly with a probability above 0.99 (its probability gradient vanishes there). Each
path (autograd, zeroth-order black box) runs 150 optimisation steps with the method's
defaults otherwise. Measured (one CPU thread): about 12 s for the autograd maps and 31 s
for the black-box maps; the textured model is trained on first use and cached
(:func:`perturbx.models.load_textured_model`).

Pointing: the peak of the map within the pointing game's tolerance of the object, 15 px of
a 224-px image (Zhang et al.) scaled to the 64-px images, 4.3 px; a flat peak counts the
share of its pixels that hit (``pointing_game``'s default). IoU: the map thresholded at
0.5 (half deleted) against the object's mask.

The mask grid is 14 x 14: these objects are about 13 px wide (4.5 % of the image), and the
paper's 28 x 28 grid, drawn for 224-px photographs, has 2.3-px cells here, fine enough to
outline an object's rim; 14 x 14 gives 4.6-px cells, a third of an object's width. With
28 x 28 the IoU is 0.29 (autograd) and 0.32 (black box); benchmarks/RESULTS.md.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx import MeaningfulPerturbation  # noqa: E402
from perturbx.adapters import Callable, Torch  # noqa: E402
from perturbx.metrics import pointing_game  # noqa: E402
from perturbx.models import load_textured_model, textured_shapes, train_textured_model  # noqa: E402

N_IMAGES = 30
STEPS = 150
MASK = 14
TOLERANCE = 15 * 64 / 224  # the pointing game's 15 px at 224 px, in pixels of these 64-px images


@pytest.fixture(scope="module")
def confident():
    """The textured CNN and its first 30 held-out images classified right with probability > 0.99."""
    net = load_textured_model()
    data = textured_shapes(200)
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(data.images)), dim=1).numpy()
    right = probs.argmax(1) == data.labels
    top = probs[np.arange(len(probs)), data.labels]
    idx = np.flatnonzero(right & (top > 0.99))[:N_IMAGES]
    assert len(idx) == N_IMAGES
    return net, data, idx


def numpy_probs(net):
    def probs(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(batch)), dim=1).numpy()
    return probs


def explain_all(confident, adapter, **kwargs) -> list:
    _, data, idx = confident
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a mask that never moved warns: fail on it
        for i in idx:
            out.append(MeaningfulPerturbation(steps=STEPS, mask_shape=MASK, random_state=0, **kwargs).explain(
                adapter, data.images[i], target=int(data.labels[i])))
    return out


def localisation(explanations, confident) -> tuple[np.ndarray, np.ndarray]:
    """Per image: pointing (share of the peak within TOLERANCE of the object) and IoU of the map > 0.5."""
    _, data, idx = confident
    pointing, iou = [], []
    for e, i in zip(explanations, idx, strict=True):
        a, m = e.attributions, data.masks[i]
        pointing.append(pointing_game(a, m, tolerance=TOLERANCE))
        iou.append(((a > 0.5) & m).sum() / ((a > 0.5) | m).sum())
    return np.array(pointing), np.array(iou)


@pytest.fixture(scope="module")
def autograd_maps(confident):
    return explain_all(confident, Torch(confident[0]))


@pytest.fixture(scope="module")
def black_box_maps(confident):
    return explain_all(confident, Callable(numpy_probs(confident[0]), batch_size=256))


@pytest.mark.parametrize("maps", ["autograd_maps", "black_box_maps"])
def test_no_constant_maps(maps, request):
    explanations = request.getfixturevalue(maps)
    assert all(bool(np.all(e.extras["moved"])) for e in explanations)
    assert min(float(np.ptp(e.attributions)) for e in explanations) > 0.5   # each map deletes something


@pytest.mark.parametrize("maps", ["autograd_maps", "black_box_maps"])
def test_peak_on_the_object(maps, request, confident):
    explanations = request.getfixturevalue(maps)
    assert {e.optimizer for e in explanations} == {maps.replace("_maps", "").replace("black_box", "zeroth_order")}
    pointing, _ = localisation(explanations, confident)
    assert pointing.mean() >= 0.9, pointing


@pytest.mark.parametrize("maps", ["autograd_maps", "black_box_maps"])
def test_mask_overlaps_the_object(maps, request, confident):
    _, iou = localisation(request.getfixturevalue(maps), confident)
    assert iou.mean() >= 0.3, iou


def test_stopping_at_chance_deletes_only_a_rim(autograd_maps, confident):
    """The previous objective stops paying once the class is at chance: exact gradients then delete less.

    Per image, the share of the object that the mask deletes is smaller than with the default
    objective, which goes on to the mirrored target (on average and on most images).
    """
    _, data, idx = confident
    rim = explain_all(confident, Torch(confident[0]), objective="log_odds_to_chance")

    def deleted(explanations):
        return np.array([((e.attributions > 0.5) & data.masks[i]).sum() / data.masks[i].sum()
                         for e, i in zip(explanations, idx, strict=True)])

    now, before = deleted(autograd_maps), deleted(rim)
    assert now.mean() > before.mean() + 0.1 and np.mean(now > before) >= 0.7, (now, before)


def test_the_papers_probability_objective_stays_put_and_says_so(confident):
    """The paper's objective (the probability) does not move on these images: constant maps, a warning."""
    net, data, idx = confident
    with pytest.warns(RuntimeWarning, match="stayed constant"):
        e = MeaningfulPerturbation(steps=20, objective="score").explain(
            Torch(net, output="probs"), data.images[idx[0]], target=int(data.labels[idx[0]]))
    assert not np.any(e.extras["moved"])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_train": 0}, "'n_train' parameter of train_textured_model must be an int >= 1. Got 0 instead"),
    ({"epochs": 2.5}, "'epochs' parameter of train_textured_model must be an int >= 1. Got 2.5 instead"),
])
def test_bad_training_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_textured_model(**kwargs)
