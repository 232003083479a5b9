"""Representations: a layer's activations over a data set, embedded in 2-D, and networks compared.

Olah (2015, "Visualizing Representations: Deep Learning and Human Beings"): embed what a
layer makes of each image of a data set (t-SNE or PCA, from scikit-learn) and colour the
points by class; compare networks by meta-SNE, i.e. embed each network's *distance
matrix* over the same images, so that two networks sit close when they arrange the data
the same way, whatever their layer widths or the order of their channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import pdist, squareform

from perturbx._utils import check_choice, check_random_state
from perturbx.adapters import Torch, as_adapter

from . import figures
from ._layers import capture, resolve
from ._optim import module_logits
from ._torch import torch

POOLS = ("mean", "max", "none")
METHODS = ("tsne", "pca")


def layer_activations(model: object, images: np.ndarray, layer: str | None = None, *,
                      pool: str = "mean") -> np.ndarray:
    """What ``layer`` makes of each image, one row per image.

    Parameters
    ----------
    model : Adapter, torch.nn.Module or callable
        Any adapter for ``layer=None`` (the model's scores are the representation); a
        ``perturbx.adapters.Torch`` model for a named layer.
    images : ndarray, shape (N, *sample_shape)
        In the adapter's layout.
    layer : str, optional
        A module name as in ``module.named_modules()``.
    pool : {"mean", "max", "none"}, default "mean"
        For a layer with a spatial map ``(N, C, h, w)``: average or maximum over positions
        (``(N, C)``), or keep every position (``"none"``: ``(N, C h w)``).

    Returns
    -------
    ndarray, shape (N, D), float64
        ``N`` model queries, in batches of the adapter's size.
    """
    adapter = as_adapter(model)
    pool = check_choice(pool, "pool", "layer_activations", POOLS)
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != adapter.layout.ndim + 1 or len(arr) == 0:
        raise ValueError(f"The 'images' parameter of layer_activations must be a non-empty batch (N, *sample_shape) "
                         f"in the adapter's layout {adapter.layout.name!r}. Got shape {arr.shape}.")
    if layer is None:
        return adapter.predict(arr)
    if not isinstance(adapter, Torch):
        raise TypeError(f"The 'layer' parameter of layer_activations needs a perturbx.adapters.Torch model (forward "
                        f"hooks); a {type(adapter).__name__} only returns scores. Pass layer=None to use them.")
    layers = resolve(adapter.module, [layer], "layer_activations")
    rows = []
    with torch.no_grad(), capture(layers) as recorder:
        for lo in range(0, len(arr), adapter.batch_size):
            module_logits(adapter, torch.as_tensor(arr[lo:lo + adapter.batch_size], device=adapter.device))
            act = recorder.take()[layer]
            if act.ndim == 4 and pool != "none":
                act = act.mean(dim=(2, 3)) if pool == "mean" else act.amax(dim=(2, 3))
            rows.append(act.flatten(1).double().cpu().numpy())
    return np.concatenate(rows)


def _seed(random_state: object, owner: str) -> int:
    """An int seed for scikit-learn from an int, a numpy Generator or None."""
    rng = check_random_state(random_state, owner=f"The 'random_state' parameter of {owner}")
    return int(rng.integers(2 ** 31 - 1))


def embed(activations: np.ndarray, method: str = "tsne", *, perplexity: float = 30.0,
          random_state: object = None) -> np.ndarray:
    """A 2-D embedding ``(N, 2)`` of activations ``(N, D)`` by t-SNE or PCA (scikit-learn).

    t-SNE (``sklearn.manifold.TSNE``, PCA initialisation) uses ``perplexity`` capped at
    ``(N - 1) / 3`` so that small sets work.
    """
    method = check_choice(method, "method", "embed", METHODS)
    a = np.asarray(activations, dtype=np.float64)
    if a.ndim != 2 or len(a) < 3 or not np.all(np.isfinite(a)):
        raise ValueError(f"The 'activations' parameter of embed must be a finite array (N, D) with N >= 3. "
                         f"Got shape {a.shape}.")
    seed = _seed(random_state, "embed")
    if method == "pca":
        from sklearn.decomposition import PCA

        out = PCA(n_components=min(2, a.shape[1]), random_state=seed).fit_transform(a)
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    from sklearn.manifold import TSNE

    perplexity = float(min(perplexity, (len(a) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(a)


@dataclass
class Representation:
    """A layer's representation of a data set, embedded in 2-D.

    Attributes
    ----------
    embedding : ndarray, shape (N, 2)
    labels : ndarray of int, shape (N,), or None
    layer : str or None
        None: the model's scores.
    method : {"tsne", "pca"}
    """

    embedding: np.ndarray
    labels: np.ndarray | None
    layer: str | None
    method: str

    def figure(self, names: Sequence[str] | None = None, *, title: str | None = None):
        """The points coloured by class (matplotlib Figure)."""
        text = title or f"{self.layer or 'scores'} ({self.method})"
        return figures.scatter(self.embedding, self.labels, names=names, title=text)

    plot = figure


def representation(model: object, images: np.ndarray, layer: str | None = None,
                          labels: np.ndarray | None = None, *, method: str = "tsne", pool: str = "mean",
                          random_state: object = None) -> Representation:
    """Embed ``layer``'s activations over ``images`` in 2-D; ``.figure(class_names)`` draws it.

    Returns
    -------
    Representation
    """
    acts = layer_activations(model, images, layer, pool=pool)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(acts),):
            raise ValueError(f"The 'labels' parameter of representation needs one label per image "
                             f"({len(acts)}). Got shape {labels.shape}.")
    return Representation(embed(acts, method, random_state=random_state), labels, layer, method)


def distance_profile(activations: np.ndarray) -> np.ndarray:
    """The pairwise Euclidean distances between the rows of ``activations`` ``(N, D)``, divided by their mean.

    Returns the condensed vector ``(N (N - 1) / 2,)`` (``scipy.spatial.distance.pdist``
    order). Dividing by the mean makes it invariant to the scale of the activations; it is
    invariant to any rotation or permutation of the feature axes by construction.
    """
    d = pdist(np.asarray(activations, dtype=np.float64))
    mean = d.mean()
    if not np.isfinite(mean) or mean == 0:
        raise ValueError("meta_sne needs representations whose images are not all identical (all distances are 0).")
    return d / mean


@dataclass
class MetaSNE:
    """Networks compared through their representations of the same images.

    Attributes
    ----------
    names : list of str
    distances : ndarray, shape (M, M)
        Root-mean-square difference of the networks' normalised distance matrices
        (:func:`distance_profile`): 0 for networks that arrange the images identically.
    embedding : ndarray, shape (M, 2)
        t-SNE of ``distances`` (precomputed metric); with two networks, a segment of
        their distance.
    """

    names: list[str]
    distances: np.ndarray
    embedding: np.ndarray

    def figure(self, *, title: str | None = None):
        """The networks as labelled points (matplotlib Figure)."""
        return figures.scatter(self.embedding, annotate=self.names, title=title or "meta-SNE")

    plot = figure


def meta_sne(representations: Mapping[str, np.ndarray], *, perplexity: float = 5.0,
             random_state: object = None) -> MetaSNE:
    """Meta-SNE (Olah 2015): embed networks by how they arrange the same images.

    Parameters
    ----------
    representations : mapping of str to ndarray (N, D_m)
        Each network's activations over the same ``N`` images (from
        :func:`layer_activations`; the widths ``D_m`` may differ).
    perplexity : float, default 5.0
        t-SNE perplexity over the networks (capped below their number).
    random_state : int, numpy Generator or None

    Returns
    -------
    MetaSNE
    """
    if not isinstance(representations, Mapping) or len(representations) < 2:
        raise ValueError(f"The 'representations' parameter of meta_sne must map at least two network names to "
                         f"their activations (N, D). Got {type(representations).__name__} with "
                         f"{len(representations) if isinstance(representations, Mapping) else 0} entries.")
    names = [str(k) for k in representations]
    arrays = [np.asarray(v, dtype=np.float64) for v in representations.values()]
    sizes = {a.shape[0] if a.ndim == 2 else -1 for a in arrays}
    if len(sizes) != 1 or -1 in sizes or sizes.pop() < 3:
        shapes = {k: np.shape(v) for k, v in representations.items()}
        raise ValueError(f"The 'representations' parameter of meta_sne must hold 2-D activations (N, D) of the same "
                         f"N >= 3 images for every network. Got shapes {shapes}.")
    profiles = np.stack([distance_profile(a) for a in arrays])
    distances = squareform(pdist(profiles)) / np.sqrt(profiles.shape[1])
    if len(names) == 2:
        embedding = np.array([[0.0, 0.0], [distances[0, 1], 0.0]])
    else:
        from sklearn.manifold import TSNE

        embedding = TSNE(n_components=2, metric="precomputed", init="random",
                         perplexity=float(min(perplexity, len(names) - 1.0 - 1e-6)),
                         random_state=_seed(random_state, "meta_sne")).fit_transform(distances)
    return MetaSNE(names, distances, embedding)
