"""Issue 18's "must hold" list on the demo CNN (64-px synthetic shapes, 4 classes).

Each test states the property; settings are small (64 px, a few hundred steps) and seeded,
so the file runs in well under a minute on two cores. Queries and seconds of the same
runs at larger budgets are in benchmarks/results/visualize.md.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx import visualize as vz  # noqa: E402
from perturbx.adapters import Callable, Torch  # noqa: E402
from perturbx.datasets import make_shapes  # noqa: E402
from perturbx.models import DEMO_TEST_SEED, load_demo_model  # noqa: E402

SHAPE = (3, 64, 64)
CLASSES = np.arange(4)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module (the machine's cores are shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net():
    return load_demo_model()


@pytest.fixture(scope="module")
def class_models_fourier(net):
    """Fourier basis, standard transformations, log-probability objective (the defaults), 256 steps."""
    return vz.class_models(Torch(net), SHAPE, visualizer=vz.FeatureVisualization(steps=256, random_state=0))


def robustness(net, vis, seed=1):
    """Probability of each row's own class under 64 draws of the standard transformations, (classes, draws)."""
    probs = vz.transformed_probabilities(Torch(net), vis.images[:, 0], vz.Transforms.standard(64), n_draws=64,
                                         random_state=seed)
    return probs[CLASSES, :, CLASSES]


def test_fourier_class_models_are_confident_and_robust(net, class_models_fourier):
    vis = class_models_fourier
    own = vis.probabilities[CLASSES, 0, CLASSES]
    assert np.all(own >= 0.99), own
    with torch.no_grad():   # the reported probabilities are the model's on the returned images
        direct = torch.softmax(net(torch.as_tensor(vis.images[:, 0])), dim=1).numpy()[CLASSES, CLASSES]
    np.testing.assert_allclose(own, direct, rtol=1e-5)
    rob = robustness(net, vis)
    assert np.all(rob.mean(axis=1) >= 0.9), rob.mean(axis=1)


def test_pixel_class_models_reach_the_objective_but_are_not_robust(net, class_models_fourier):
    """Pixels, no regulariser, no transformations: at least the same objective, robust on fewer draws."""
    pixels = vz.class_models(Torch(net), SHAPE, visualizer=vz.FeatureVisualization(
        param=vz.Pixels(), transforms=None, steps=256, random_state=0))
    assert np.all(pixels.final_objective[:, 0] >= class_models_fourier.final_objective[:, 0])
    fail_pixels = (robustness(net, pixels) < 0.9).mean(axis=1)
    fail_fourier = (robustness(net, class_models_fourier) < 0.9).mean(axis=1)
    assert np.sum(fail_pixels > fail_fourier) >= 3, (fail_pixels, fail_fourier)


def test_preimage_of_a_middle_layer_from_noise(net):
    x = make_shapes(1, random_state=DEMO_TEST_SEED).images[0]
    with_tv = vz.PreImage("features.5", tv=1.0, steps=400, random_state=0).invert(Torch(net), x)
    without = vz.PreImage("features.5", tv=0.0, steps=400, random_state=0).invert(Torch(net), x)
    assert with_tv.relative_error <= 0.1
    assert with_tv.total_variation < without.total_variation
    assert with_tv.relative_error_history[0] > 0.5          # it did start from noise
    assert with_tv.n_queries == 400 + 2 and with_tv.image.shape == SHAPE


def test_preimage_alpha_norm_and_deep_image_prior(net):
    x = make_shapes(1, random_state=DEMO_TEST_SEED).images[0]
    plain = vz.PreImage("features.5", tv=0.0, steps=150, random_state=0).invert(Torch(net), x)
    bounded = vz.PreImage("features.5", tv=0.0, alpha_norm=50.0, steps=150, random_state=0).invert(Torch(net), x)
    ctx = vz.Context(torch.as_tensor(np.stack([plain.image, bounded.image])))
    norms = vz.AlphaNorm(6.0).value(ctx).numpy()
    assert norms[1] < norms[0]
    dip = vz.PreImage("features.5", tv=0.0, param=vz.DeepImagePrior(), steps=300, random_state=0).invert(
        Torch(net), x)
    assert dip.relative_error <= 0.1 and dip.total_variation < plain.total_variation


def test_black_box_class_models_through_a_numpy_function(net):
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    model = Callable(predict, batch_size=256)
    budget = 4 * (2 * 16 * 30) + 4                 # 30 steps of 16 antithetic pairs per class, then the final images
    vis = vz.class_models(model, SHAPE, CLASSES, visualizer=vz.FeatureVisualization(max_queries=budget, random_state=0))
    assert vis.optimizer == "zeroth_order" and vis.n_queries == model.n_queries <= budget
    assert vis.stopped_by_budget and vis.steps_done == 30 and vis.seconds > 0
    own = vis.probabilities[CLASSES, 0, CLASSES]
    assert np.all(own >= 0.9), own
    np.testing.assert_allclose(own, torch.softmax(torch.as_tensor(predict(vis.images[:, 0])), 1).numpy()[
        CLASSES, CLASSES], rtol=1e-5)


def _mean_correlation(images: np.ndarray) -> float:
    c = np.corrcoef(images.reshape(len(images), -1))
    return float(c[np.triu_indices(len(images), 1)].mean())


def test_diversity_makes_a_batch_differ(net):
    for cls in (0, 1):
        runs = {}
        for weight in (0.0, 5.0):
            obj = vz.ClassProbability(cls, log=True) + weight * vz.Diversity("features.2")
            runs[weight] = vz.FeatureVisualization(steps=128, n_images=4, random_state=0).visualize(Torch(net), obj,
                                                                                                    SHAPE)
        assert _mean_correlation(runs[5.0].images[0]) < _mean_correlation(runs[0.0].images[0])
        probs = runs[5.0].probabilities[0]  # (n_images, n_classes): every image still shows the class
        assert (probs.argmax(axis=1) == cls).all() and probs[:, cls].min() >= 0.5


def test_channel_visualisation_beats_every_data_image(net):
    """A channel's visualisation excites it more than any of 64 held-out images does.

    The channel is read before its ReLU (Lucid's "pre_relu" convention): after it, a start image
    that does not excite the channel has zero gradient and the optimiser cannot move (seen with a
    demo CNN trained on one thread).
    """
    images = make_shapes(64, random_state=DEMO_TEST_SEED).images
    acts = vz.layer_activations(Torch(net), images, "features.11")          # (64, 64) mean activations
    channel = int(np.argmax(acts.mean(axis=0)))
    vis = vz.channel_visualizations(Torch(net), "features.11", [channel], SHAPE,
                                    visualizer=vz.FeatureVisualization(steps=128, random_state=0))
    assert vis.final_objective[0, 0] > acts[:, channel].max()
