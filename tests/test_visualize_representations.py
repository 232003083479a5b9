"""Representations: layer activations, t-SNE/PCA embeddings and meta-SNE (perturbx.visualize.representations)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx import visualize as vz  # noqa: E402
from perturbx.adapters import Callable, Torch  # noqa: E402
from perturbx.datasets import CLASS_NAMES, make_shapes  # noqa: E402
from perturbx.models import DEMO_TEST_SEED, DemoCNN, load_demo_model  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module (the machine's cores are shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return make_shapes(120, random_state=DEMO_TEST_SEED)


@pytest.fixture(scope="module")
def net():
    return load_demo_model()


def test_layer_activations_equal_a_forward_through_the_trunk(net, data):
    images = data.images[:10]
    model = Torch(net, batch_size=4)
    with torch.no_grad():
        trunk = net.features[:9](torch.as_tensor(images)).numpy().astype(np.float64)
    np.testing.assert_allclose(vz.layer_activations(model, images, "features.8"), trunk.mean(axis=(2, 3)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vz.layer_activations(model, images, "features.8", pool="max"), trunk.max(axis=(2, 3)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vz.layer_activations(model, images, "features.8", pool="none"),
                               trunk.reshape(10, -1), rtol=1e-5, atol=1e-6)
    assert model.n_queries == 30
    scores = vz.layer_activations(Callable(lambda b: net(torch.as_tensor(b)).detach().numpy()), images)
    with torch.no_grad():
        np.testing.assert_allclose(scores, net(torch.as_tensor(images)).numpy(), rtol=1e-5)


def test_pca_embedding_is_an_isometry_of_planar_data():
    """Points on a 2-D plane in 10-D: PCA's 2-D embedding keeps every pairwise distance."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((10, 2)))[0]
    points = rng.standard_normal((30, 2)) @ basis.T + 3.0
    e = vz.embed(points, "pca", random_state=0)
    d = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(e), d(points), atol=1e-8)


def _nearest_neighbour_agreement(embedding: np.ndarray, labels: np.ndarray) -> float:
    d = np.linalg.norm(embedding[:, None] - embedding[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return float(np.mean(labels[np.argmin(d, axis=1)] == labels))


def test_tsne_of_the_trained_network_separates_the_classes(net, data):
    """The trained CNN's last layer, max-pooled as its head does, groups images by class; an untrained one does not."""
    trained = vz.representation(Torch(net), data.images, "features.12", data.labels, pool="max", random_state=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = DemoCNN().eval()
    random = vz.representation(Torch(untrained), data.images, "features.12", data.labels, pool="max", random_state=0)
    assert trained.embedding.shape == (120, 2) and trained.method == "tsne"
    agree = _nearest_neighbour_agreement(trained.embedding, data.labels)
    assert agree >= 0.9 and agree > _nearest_neighbour_agreement(random.embedding, data.labels) + 0.2
    png = vz.to_png(trained.figure(CLASS_NAMES))
    assert png[:4] == b"\x89PNG"


def test_meta_sne_is_invariant_to_channel_order_rotation_and_scale(net, data):
    images = data.images[:60]
    acts = vz.layer_activations(Torch(net), images, "features.12")
    rng = np.random.default_rng(0)
    rotation = np.linalg.qr(rng.standard_normal((acts.shape[1],) * 2))[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = DemoCNN().eval()
    reps = {"trained": acts, "permuted x3": 3.0 * acts[:, rng.permutation(acts.shape[1])],
            "rotated": acts @ rotation, "untrained": vz.layer_activations(Torch(other), images, "features.12"),
            "trained, features.5": vz.layer_activations(Torch(net), images, "features.5")}
    meta = vz.meta_sne(reps, random_state=0)
    assert meta.names == list(reps) and meta.embedding.shape == (5, 2)
    np.testing.assert_allclose(meta.distances[0, 1:3], 0.0, atol=1e-9)
    np.testing.assert_allclose(meta.distances, meta.distances.T)
    assert meta.distances[0, 3] > 0.1 and meta.distances[0, 4] > 0.05
    pair = vz.meta_sne({"a": acts, "b": reps["untrained"]})
    np.testing.assert_allclose(pair.embedding, [[0, 0], [pair.distances[0, 1], 0]])
    assert vz.to_png(meta.figure())[:4] == b"\x89PNG"


def test_representation_errors(net, data):
    acts = np.random.default_rng(0).random((10, 4))
    with pytest.raises(ValueError, match="'representations' parameter of meta_sne must map at least two"):
        vz.meta_sne({"only": acts})
    with pytest.raises(ValueError, match="same N >= 3 images for every network"):
        vz.meta_sne({"a": acts, "b": acts[:5]})
    with pytest.raises(ValueError, match="'method' parameter of embed must be one of"):
        vz.embed(acts, "umap")
    with pytest.raises(ValueError, match="'activations' parameter of embed must be a finite array"):
        vz.embed(acts[:2])
    with pytest.raises(ValueError, match="'labels' parameter of representation needs one label per image"):
        vz.representation(Torch(net), data.images[:5], "features.5", labels=[0, 1])
    with pytest.raises(ValueError, match="'layer' parameter of layer_activations names no submodule"):
        vz.layer_activations(Torch(net), data.images[:5], "features.99")
