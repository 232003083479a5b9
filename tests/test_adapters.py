"""Adapters and boundary validation: every bad input gets a named, actionable error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable, SKLearn, Torch, as_adapter

from .conftest import linear_model


def good(batch):
    return np.stack([batch.mean(axis=tuple(range(1, batch.ndim))), -batch.std(axis=tuple(range(1, batch.ndim)))], 1)


@pytest.mark.parametrize(("fn", "error", "match"), [
    (lambda b: good(b)[:-1], ValueError, "returned 0 rows for a batch of 1 inputs"),
    (lambda b: good(b)[:, 0], ValueError, r"shape \(1,\) .* expected a 2-D array.*reshape it to \(n, 1\)"),
    (lambda b: np.full((len(b), 2), np.nan), ValueError, "returned 2 NaN or infinite scores"),
    (lambda b: np.zeros((len(b), 2, 2)), ValueError, "expected a 2-D array"),
    (lambda b: "spam", TypeError, "not an array of numbers"),
])
def test_bad_model_outputs(fn, error, match, rng):
    with pytest.raises(error, match=match):
        perturbx.Occlusion((2, 2), (2, 2)).explain(Callable(fn), rng.random((3, 8, 8)), target=0)


def test_nan_appearing_only_in_perturbed_batches(rng):
    def fn(batch):
        out = good(batch)
        out[batch.min(axis=(1, 2, 3)) == 0] = np.nan  # the model breaks on occluded input
        return out

    with pytest.raises(ValueError, match="NaN or infinite scores for a batch of 16 inputs"):
        perturbx.Occlusion((2, 2), (2, 2)).explain(Callable(fn), rng.random((3, 8, 8)) + 0.1, target=0)


@pytest.mark.parametrize(("x", "error", "match"), [
    (np.zeros((1, 3, 8, 8)), ValueError, r"layout 'CHW' with 3 axes. Got shape \(1, 3, 8, 8\).*pass x\[0\]"),
    (np.zeros((8, 8)), ValueError, "set input_layout on the adapter"),
    (np.full((3, 8, 8), np.nan), ValueError, "x contains 192 NaN or infinite values"),
    (np.array([["a"]]), TypeError, "numeric array"),
])
def test_bad_samples(x, error, match):
    with pytest.raises(error, match=match):
        perturbx.RISE(n_masks=4).explain(good, x, target=0)


def test_sample_shape_mismatch(rng):
    adapter = Callable(good, sample_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"x has shape \(3, 9, 8\) but the model expects samples of shape \(3, 8, 8\)"):
        perturbx.RISE(n_masks=4).explain(adapter, rng.random((3, 9, 8)), target=0)


@pytest.mark.parametrize(("target", "error", "match"), [
    (2, ValueError, r"target \[2\] is out of range: the model returns 2 classes"),
    (-1, ValueError, "out of range"),
    ([0, 5], ValueError, r"target \[5\] is out of range"),
    ("0", TypeError, "target must be None, an int or a sequence of ints"),
    ([], TypeError, "non-empty sequence"),
    (1.0, TypeError, "target must be"),
])
def test_bad_targets(target, error, match, rng):
    with pytest.raises(error, match=match):
        perturbx.RISE(n_masks=4).explain(good, rng.random((3, 8, 8)), target=target)


def test_bad_adapter_arguments():
    with pytest.raises(ValueError, match="'input_layout' parameter of the adapter must be one of"):
        Callable(good, input_layout="NCHW")
    with pytest.raises(ValueError, match="'batch_size' parameter of Callable must be an int >= 1. Got 0"):
        Callable(good, batch_size=0)
    with pytest.raises(TypeError, match="needs a callable"):
        Callable(42)
    with pytest.raises(TypeError, match="model must be a perturbx adapter, a torch.nn.Module or a callable"):
        as_adapter(42)


def test_callable_predict_batches_and_counts(spy, rng):
    adapter = spy(good, batch_size=7)
    out = adapter.predict(rng.random((20, 3, 4, 4)))
    assert out.shape == (20, 2) and adapter.batch_sizes == [7, 7, 6] and adapter.n_queries == 20


def test_engine_respects_batch_size_and_counts_queries(spy, rng):
    adapter = spy(linear_model(rng.normal(size=(2, 3, 16, 16))), batch_size=16)
    e = perturbx.RISE(n_masks=50, random_state=0).explain(adapter, rng.random((3, 16, 16)), target=0)
    assert adapter.batch_sizes == [1, 16, 16, 16, 2]
    assert e.n_queries == adapter.n_queries == 51


def test_query_budget(rng):
    f = linear_model(rng.normal(size=(2, 3, 16, 16)))
    with pytest.raises(perturbx.QueryBudgetError, match="needs 100 perturbed queries but only 49 are left"):
        perturbx.RISE(n_masks=100, max_queries=50).explain(f, rng.random((3, 16, 16)), target=0)
    e = perturbx.RISE(n_masks=49, max_queries=50).explain(f, rng.random((3, 16, 16)), target=0)
    assert e.n_queries == 50


def test_sklearn_adapter_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    clf = LogisticRegression(max_iter=2000).fit(digits.data / 16, digits.target)
    adapter = SKLearn(clf, sample_shape=(8, 8))
    x = (digits.images[0] / 16).astype(np.float32)
    e = perturbx.Occlusion((2, 2), (2, 2)).explain(adapter, x)
    assert e.targets.tolist() == [0] and e.attributions.shape == (8, 8)
    # disjoint windows: each pixel's attribution is its window's drop in probability, recomputed here
    occluded = x.copy()
    occluded[4:6, 2:4] = 0
    p = clf.predict_proba(np.stack([x, occluded]).reshape(2, -1))[:, 0]
    np.testing.assert_allclose(e.attributions[4:6, 2:4], p[0] - p[1], atol=1e-6)
    with pytest.raises(TypeError, match="looks like a scikit-learn estimator"):
        perturbx.Occlusion().explain(clf, x)
    with pytest.raises(ValueError, match="'method' parameter of SKLearn must be one of"):
        SKLearn(clf, sample_shape=(8, 8), method="spam")
    with pytest.raises(TypeError, match="has no method 'decision_function'"):
        SKLearn(_ProbaOnly(), sample_shape=(8, 8), method="decision_function")


class _ProbaOnly:
    def predict_proba(self, rows):
        return np.ones((len(rows), 2)) / 2


def test_torch_adapter_probs_and_layout(small_cnn, rng):
    torch = pytest.importorskip("torch")
    x = rng.random((3, 20, 23), dtype=np.float32)
    probs = Torch(small_cnn, output="probs").predict(x[None])
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-6)
    hwc_net = torch.nn.Sequential(_Permute(), small_cnn)
    a = perturbx.Occlusion((5, 5), (4, 4)).explain(Torch(hwc_net, input_layout="HWC"), np.moveaxis(x, 0, -1), 1)
    b = perturbx.Occlusion((5, 5), (4, 4)).explain(Torch(small_cnn), x, target=1)
    np.testing.assert_allclose(a.attributions, b.attributions, atol=1e-6)
    with pytest.raises(TypeError, match="needs a torch.nn.Module"):
        Torch(good)


class _Permute:
    def __new__(cls):
        import torch

        class Permute(torch.nn.Module):
            def forward(self, x):
                return x.permute(0, 3, 1, 2)

        return Permute()


def test_import_without_torch():
    """``import perturbx`` and a black-box explanation work when torch cannot be imported."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np, perturbx\n"
        "e = perturbx.RISE(n_masks=8, random_state=0).explain(lambda b: b.reshape(len(b), -1)[:, :3],"
        " np.ones((3, 8, 8)), target=0)\n"
        "assert e.attributions.shape == (8, 8)\n"
        "try:\n"
        "    perturbx.adapters.Torch(None)\n"
        "except ImportError as err:\n"
        "    assert \"pip install 'perturbx[torch]'\" in str(err)\n"
        "else:\n"
        "    raise SystemExit('no ImportError')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
