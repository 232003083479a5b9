"""explain_many: the explanations of explain() on each sample, with the model batches shared."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Adapter, Callable

SEG = np.arange(16).reshape(4, 4).repeat(4, axis=0).repeat(4, axis=1)
TARGETS = [0, 1, [2, 3], None, 1]


class CountingCallable(Callable):
    """Records the number of rows of every model call."""

    def __init__(self, fn, **kw) -> None:
        super().__init__(fn, **kw)
        self.calls: list[int] = []

    def _forward(self, batch):
        self.calls.append(len(batch))
        return super()._forward(batch)


@pytest.fixture
def model(rng):
    w = rng.normal(size=(4, 3, 16, 16))
    return lambda b: np.tanh(np.asarray(b, np.float64).reshape(len(b), -1) @ w.reshape(4, -1).T / 20)


@pytest.fixture
def images(rng):
    return rng.random((5, 3, 16, 16), dtype=np.float32)


def explainers():
    return {
        "occlusion": perturbx.Occlusion(window=4, stride=4),
        "rise": perturbx.RISE(n_masks=150, grid_size=4, random_state=3),
        "rise-regression": perturbx.RISE(n_masks=300, grid_size=4, control_variate="regression", random_state=3),
        "rise-stopping": perturbx.RISE(n_masks=3000, grid_size=4, tolerance=0.2, random_state=3),
        "lime": perturbx.LIME(n_samples=50, segmentation=SEG, random_state=1),
        "kernelshap": perturbx.KernelSHAP(n_samples=60, segmentation=SEG, random_state=2),
        "shapley": perturbx.ShapleySampling(n_samples=64, segmentation=SEG, random_state=2),
        "c2f": perturbx.CoarseToFineOcclusion(window=(4, 4), stride=(2, 2)),
        "meaningful": perturbx.MeaningfulPerturbation(steps=3, random_state=0),
    }


@pytest.mark.parametrize("name", list(explainers()))
def test_explain_many_equals_explain_on_each_sample(name, model, images):
    """Targets differ per sample; batch_size 48 splits samples across model calls."""
    explainer = explainers()[name]
    with warnings.catch_warnings():  # meaningful's masks may not move in 3 steps; not what is tested here
        warnings.simplefilter("ignore", RuntimeWarning)
        many = explainer.explain_many(Callable(model, batch_size=48), images, targets=TARGETS)
        for x, t, e in zip(images, TARGETS, many, strict=True):
            one = explainer.explain(Callable(model, batch_size=48), x, t)
            # equal up to float rounding: the model scores x in a batch of 5 instead of 1
            np.testing.assert_allclose(e.attributions, one.attributions, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(e.scores, one.scores, rtol=1e-14)
            assert e.n_queries == one.n_queries and e.targets.tolist() == one.targets.tolist()


def test_samples_share_full_model_batches(model, images):
    """Occlusion with 16 windows a sample: alone, 17-row calls; together, every call full but the last."""
    counting = CountingCallable(model, batch_size=64)
    many = perturbx.Occlusion(window=4, stride=4).explain_many(counting, np.repeat(images, 4, axis=0))
    assert sum(counting.calls) == sum(e.n_queries for e in many) == 20 * 17
    assert counting.calls[0] == 20                                  # every reference query in one call
    assert all(c == 64 for c in counting.calls[1:-1])               # then full batches of perturbations
    alone = CountingCallable(model, batch_size=64)
    perturbx.Occlusion(window=4, stride=4).explain(alone, images[0])
    assert alone.calls == [1, 16]


def test_gradient_methods_and_targets_of_other_kinds(rng):
    torch = pytest.importorskip("torch")
    from perturbx import gradients
    from perturbx.adapters import Torch
    from perturbx.targets import Region

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh()).eval()
    xs = rng.random((3, 3, 12, 12), dtype=np.float32)
    mask = np.zeros((12, 12), bool)
    mask[3:8, 4:9] = True
    targets = [Region(mask, c) for c in (0, 1, 3)]
    for explainer in (gradients.Saliency(), perturbx.RISE(n_masks=120, grid_size=3, random_state=0)):
        many = explainer.explain_many(Torch(net, batch_size=50), xs, targets)
        for x, t, e in zip(xs, targets, many, strict=True):
            np.testing.assert_allclose(e.attributions, explainer.explain(Torch(net, batch_size=50), x, t).attributions,
                                       rtol=1e-5, atol=1e-7)


def test_memory_does_not_grow_with_the_number_of_samples(rng):
    w = rng.normal(size=(2, 3, 32, 32))
    f = lambda b: np.asarray(b, np.float64).reshape(len(b), -1) @ w.reshape(2, -1).T  # noqa: E731
    rise = perturbx.RISE(n_masks=2000, random_state=0)

    def peak(n: int) -> int:
        xs = rng.random((n, 3, 32, 32), dtype=np.float32)
        tracemalloc.start()
        out = rise.explain_many(Callable(f, batch_size=64), xs, [0] * n)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(out) == n
        return top

    results_per_sample = 3 * 32 * 32 * 4 + 32 * 32 * 8 * 2   # the input kept, the map and the run's estimate
    small, large = peak(2), peak(10)
    assert large - small < 8 * results_per_sample + 4 * 2 ** 20, (small, large)


def test_a_generator_seed_explains_in_order_as_successive_calls(model, images):
    a = perturbx.RISE(n_masks=100, grid_size=4, random_state=np.random.default_rng(7)).explain_many(
        Callable(model), images[:3])
    rng = np.random.default_rng(7)
    b = [perturbx.RISE(n_masks=100, grid_size=4, random_state=rng).explain(Callable(model), x) for x in images[:3]]
    for e, f in zip(a, b, strict=True):
        np.testing.assert_array_equal(e.attributions, f.attributions)


def test_bad_arguments(model, images):
    rise = perturbx.RISE(n_masks=10)
    with pytest.raises(ValueError, match="one target per sample \\(5\\). Got 2"):
        rise.explain_many(Callable(model), images, targets=[0, 1])
    with pytest.raises(ValueError, match="'X' argument of explain_many is empty"):
        rise.explain_many(Callable(model), [])
    with pytest.raises(TypeError, match="'X' argument of explain_many must be an array"):
        rise.explain_many(Callable(model), 3)
    assert isinstance(Callable(model), Adapter)


def test_rendering_ahead_in_a_thread_gives_the_same_maps(model, images):
    """overlap_rendering (on for Remote): the next chunk is rendered in a background thread while the model
    scores this one; the maps are those of rendering in turn."""
    import threading

    seen = set()

    def recording(b):
        return model(b)

    class Ahead(Callable):
        overlap_rendering = True

    rise = perturbx.RISE(n_masks=300, grid_size=4, random_state=3)
    plain = rise.explain_many(Callable(recording, batch_size=32), images, TARGETS)
    from perturbx.renderers import BlendRenderer

    original = BlendRenderer.render

    def spy(self, masks):
        seen.add(threading.current_thread().name.split("_")[0])
        return original(self, masks)

    BlendRenderer.render = spy
    try:
        ahead = rise.explain_many(Ahead(recording, batch_size=32), images, TARGETS)
        stopping = perturbx.RISE(n_masks=3000, grid_size=4, tolerance=0.2, random_state=3)
        s_ahead = stopping.explain(Ahead(recording, batch_size=32), images[0], 1)
    finally:
        BlendRenderer.render = original
    for a, b in zip(plain, ahead, strict=True):
        np.testing.assert_array_equal(a.attributions, b.attributions)
    s_plain = stopping.explain(Callable(recording, batch_size=32), images[0], 1)
    np.testing.assert_array_equal(s_ahead.attributions, s_plain.attributions)
    assert s_ahead.n_queries == s_plain.n_queries
    assert "perturbx-render" in seen


class Deferred(Callable):
    """An asynchronous adapter: a call's scores are computed only when read, as a GPU queue answers later.
    Records the order of sends and reads."""

    asynchronous = True

    def __init__(self, fn, **kw) -> None:
        super().__init__(fn, **kw)
        self.events: list[tuple[str, int]] = []

    def submit_targets(self, batch, parts):
        batch = np.array(batch)  # the engine keeps the batch's memory until the read; checked below
        call = sum(1 for e in self.events if e[0] == "send")
        self.events.append(("send", call))

        def read():
            self.events.append(("read", call))
            return self.predict_targets(batch, parts)

        return read


@pytest.mark.parametrize("name", ["occlusion", "rise", "rise-regression", "rise-stopping", "lime", "kernelshap"])
def test_asynchronous_adapters_get_the_next_batch_before_a_read_and_the_same_maps(name, model, images):
    """An asynchronous adapter (Torch on a GPU) is sent batch k + 1 before batch k's scores are read; the maps
    and query counts are those of a plain adapter. With stopping there is no pipelining (a plan stops at
    the batch where it converged, as it would alone)."""
    explainer = explainers()[name]
    plain = explainer.explain_many(Callable(model, batch_size=16), images, targets=TARGETS)
    deferred = Deferred(model, batch_size=16)
    many = explainer.explain_many(deferred, images, targets=TARGETS)
    one = explainer.explain(Deferred(model, batch_size=16), images[0], TARGETS[0])
    for a, b in zip(plain, many, strict=True):
        np.testing.assert_allclose(b.attributions, a.attributions, rtol=1e-12, atol=1e-14)
        assert a.n_queries == b.n_queries
    np.testing.assert_allclose(one.attributions, plain[0].attributions, rtol=1e-12, atol=1e-14)
    sends = [i for i, (kind, _) in enumerate(deferred.events) if kind == "send"]
    reads = {call: i for i, (kind, call) in enumerate(deferred.events) if kind == "read"}
    assert len(sends) == len(reads) > 2
    overlapped = sum(1 for k in range(len(sends) - 1) if sends[k + 1] < reads[k])
    if name == "rise-stopping":
        assert overlapped == 0
    else:
        assert overlapped >= len(sends) - 2  # every call but the reference queries' and the last
