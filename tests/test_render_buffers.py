"""Rendering into reused memory (issue 16): BufferPool, BlendRenderer(out=) and the engine's use of them.

The engine renders each chunk into a pooled buffer and gives it back once the chunk is scored; the maps
must be exactly those of rendering into fresh memory, alone, across images (explain_many), with the
render-ahead thread, and with samples of several sizes.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import perturbx
import perturbx.renderers.buffers as buffers_module
from perturbx import engine
from perturbx._utils import Layout
from perturbx.adapters import Callable
from perturbx.backend import NUMPY, TorchBackend
from perturbx.renderers import BlendRenderer, BufferPool

SEG = np.arange(16).reshape(4, 4).repeat(4, axis=0).repeat(4, axis=1)


@pytest.fixture
def pool_everything(monkeypatch):
    """Pool batches of any size (the default pools only those of 1 MiB or more)."""
    monkeypatch.setattr(buffers_module, "MIN_POOLED_BYTES", 0)


@pytest.fixture
def model(rng):
    w = rng.normal(size=(3, 3, 16, 16))
    return lambda b: np.tanh(np.asarray(b, np.float64).reshape(len(b), -1) @ w.reshape(3, -1).T / 20)


class FreshRenderer:
    """BlendRenderer without ``out``: the engine cannot pool its batches (the reference)."""

    def __init__(self, inner: BlendRenderer) -> None:
        self.inner = inner
        self.sample_nbytes = inner.sample_nbytes

    def render(self, masks):
        return self.inner.render(masks)


def backends():
    out = [NUMPY]
    with contextlib.suppress(ImportError):  # torch is a dev dependency
        out.append(TorchBackend("cpu"))
    return out


# ---- BufferPool ---------------------------------------------------------------------------------------------


def test_pool_hands_back_a_returned_buffer_of_the_same_key_only():
    pool = BufferPool(min_bytes=0)
    a = pool.take(NUMPY, (4, 3, 8, 8), np.float32)
    assert a.shape == (4, 3, 8, 8) and a.dtype == np.float32
    b = pool.take(NUMPY, (4, 3, 8, 8), np.float32)
    assert b is not a  # a is still taken
    pool.give(NUMPY, a, np.float32)
    assert pool.take(NUMPY, (4, 3, 8, 8), np.float32) is a
    pool.give(NUMPY, b, np.float32)
    assert pool.take(NUMPY, (4, 3, 8, 8), np.float64) is not b  # another dtype
    assert pool.take(NUMPY, (5, 3, 8, 8), np.float32) is not b  # another shape
    assert pool.take(NUMPY, (4, 3, 8, 8), np.float32) is b
    assert pool.n_allocated == 4


def test_pool_keeps_at_most_max_free_and_never_small_batches():
    pool = BufferPool(max_free=2, min_bytes=0)
    taken = [pool.take(NUMPY, (2, 2), np.float32) for _ in range(3)]
    for t in taken:
        pool.give(NUMPY, t, np.float32)
    again = [pool.take(NUMPY, (2, 2), np.float32) for _ in range(3)]
    assert {id(a) for a in again[:2]} == {id(taken[1]), id(taken[2])}  # the oldest was dropped
    assert again[2] is not taken[0]
    small = BufferPool(min_bytes=1 << 20)
    x = small.take(NUMPY, (2, 2), np.float32)
    small.give(NUMPY, x, np.float32)
    assert small.take(NUMPY, (2, 2), np.float32) is not x


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
def test_pool_buffers_live_on_the_backend(backend):
    pool = BufferPool(min_bytes=0)
    buf = pool.take(backend, (3, 2, 2), np.float32)
    assert backend.to_numpy(buf).shape == (3, 2, 2)
    assert type(buf) is type(backend.zeros((1,), np.float32))


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
@pytest.mark.parametrize("huge", [0, 1 << 40])
def test_allocated_host_buffers_are_zeroed_writable_arrays_of_the_backend(backend, huge, monkeypatch):
    """Mapped memory (huge pages advised; ``huge=0`` maps even tiny buffers) or the backend's zeros."""
    monkeypatch.setattr(buffers_module, "HUGE_PAGE_BYTES", huge)
    for shape in [(3, 5, 4), (0, 3)]:
        buf = buffers_module.allocate(backend, shape, np.float32)
        assert type(buf) is type(backend.zeros((1,), np.float32))
        host = backend.to_numpy(buf)
        assert host.shape == shape and host.dtype == np.float32 and not host.any()
        buf[:] = 2.5
        assert (backend.to_numpy(buf) == 2.5).all()


# ---- BlendRenderer(out=) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
@pytest.mark.parametrize(("layout", "shape", "mask_shape"), [
    ("CHW", (3, 6, 5), (7, 6, 5)), ("CHW", (3, 6, 5), (7, 3, 6, 5)), ("HWC", (6, 5, 3), (7, 6, 5)),
    ("HWC", (6, 5, 3), (7, 3, 6, 5)), ("HW", (6, 5), (7, 6, 5))])
def test_render_into_out_equals_fresh_render(backend, layout, shape, mask_shape, rng):
    x, base = rng.random(shape).astype(np.float32), rng.random(shape).astype(np.float32)
    masks = backend.asarray(rng.random(mask_shape), np.float32)
    r = BlendRenderer(x, base, Layout(layout), backend, np.float32)
    assert r.sample_shape == shape
    fresh = backend.to_numpy(r.render(masks))
    out = backend.zeros((7, *shape), np.float32) + 5.0  # stale contents are overwritten
    got = r.render(masks, out=out)
    assert got is out
    np.testing.assert_array_equal(backend.to_numpy(got), fresh)
    by_hand = base + backend.to_numpy(Layout(layout).expand_masks(masks)) * (x - base)
    np.testing.assert_allclose(fresh, by_hand, rtol=1e-6, atol=1e-6)  # torch fuses the multiply-add


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
def test_a_strided_baseline_still_renders_contiguous_batches(backend, rng):
    """A baseline stored channels-last (a superpixel mean) and viewed as CHW: the batch has the right values
    and is C-contiguous (the renderer keeps contiguous copies, so its reads are not strided)."""
    x = rng.random((3, 8, 6)).astype(np.float32)
    base = np.moveaxis(rng.random((8, 6, 3)).astype(np.float32), -1, 0)
    assert not base.flags.c_contiguous
    r = BlendRenderer(x, base, Layout("CHW"), backend, np.float32)
    masks = rng.random((4, 8, 6)).astype(np.float32)
    batch = r.render(backend.asarray(masks, np.float32))
    assert (batch.is_contiguous() if hasattr(batch, "is_contiguous") else batch.flags.c_contiguous)
    np.testing.assert_allclose(backend.to_numpy(batch), base + masks[:, None] * (x - base), rtol=1e-6, atol=1e-6)


# ---- the engine --------------------------------------------------------------------------------------------


def _plans(name: str, xs, adapter, fresh: bool):
    """Plans of ``name`` for each sample, with its renderer wrapped in FreshRenderer when ``fresh``."""
    explainer = {"occlusion": perturbx.Occlusion(window=4, stride=3),
                 "rise": perturbx.RISE(n_masks=100, grid_size=4, random_state=3),
                 "lime": perturbx.LIME(n_samples=60, segmentation=SEG, random_state=1),
                 "kernelshap": perturbx.KernelSHAP(n_samples=70, segmentation=SEG, random_state=2)}[name]
    requests = explainer._requests(adapter, list(xs), [1] * len(xs))
    contexts = [explainer._context(r) for r in requests]
    plans = [explainer._plan(c) for c in contexts]
    if fresh:
        for p in plans:
            p.renderer = FreshRenderer(p.renderer)
    return plans, [c.target for c in contexts]


@pytest.mark.parametrize("name", ["occlusion", "rise", "lime", "kernelshap"])
@pytest.mark.parametrize("overlap", [False, True])
def test_pooled_rendering_gives_the_maps_of_fresh_memory(name, overlap, model, rng, pool_everything):
    """Several samples packed into shared model calls (batch 48 splits chunks across calls), with and without
    the render-ahead thread: every map equals the one rendered into fresh memory."""
    xs = rng.random((3, 3, 16, 16), dtype=np.float32)

    class Ahead(Callable):
        overlap_rendering = overlap

    maps = {}
    for fresh in (False, True):
        adapter = Ahead(model, batch_size=48)
        plans, targets = _plans(name, xs, adapter, fresh)
        engine.run_many(plans, adapter, targets)
        maps[fresh] = [p.estimator.finalize() for p in plans]
    for a, b in zip(maps[False], maps[True], strict=True):
        np.testing.assert_array_equal(a, b)


def test_one_buffer_serves_every_chunk_of_a_run(model, rng, monkeypatch, pool_everything):
    """RISE's 300 masks in chunks of 32 rows: one pooled buffer for the batches and one for the masks, the
    shorter last chunk written into their heads."""
    pools = []

    class Recording(BufferPool):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            pools.append(self)

    monkeypatch.setattr(engine, "BufferPool", Recording)
    seen = []
    adapter = Callable(lambda b: (seen.append(len(b)), model(b))[1], batch_size=32)
    e = perturbx.RISE(n_masks=300, grid_size=4, random_state=0).explain(adapter, rng.random((3, 16, 16),
                                                                                         dtype=np.float32), 0)
    assert e.n_queries == 301 and len(seen) > 5
    assert len(pools) == 1 and pools[0].n_allocated == 2


def test_explain_many_with_samples_of_several_sizes(model, rng):
    """Samples of different shapes never share a model call (before, run_many concatenated them and failed)."""

    def fn(b):
        b = np.asarray(b, np.float64).reshape(len(b), 3, -1)
        return np.stack([b.mean(axis=(1, 2)), b[:, 0].std(axis=1), b[:, 2].max(axis=1)], axis=1)

    xs = [rng.random((3, 16, 16), dtype=np.float32), rng.random((3, 12, 20), dtype=np.float32),
          rng.random((3, 16, 16), dtype=np.float32)]
    for explainer in (perturbx.RISE(n_masks=90, grid_size=4, random_state=0), perturbx.Occlusion(window=4, stride=4)):
        calls: list[tuple[int, ...]] = []
        adapter = Callable(lambda b, calls=calls: (calls.append(tuple(b.shape[1:])), fn(b))[1], batch_size=40)
        many = explainer.explain_many(adapter, xs, [0, 1, 2])
        alone = [explainer.explain(Callable(fn, batch_size=40), x, t) for x, t in zip(xs, [0, 1, 2], strict=True)]
        for a, b in zip(many, alone, strict=True):
            assert a.attributions.shape == b.attributions.shape
            np.testing.assert_array_equal(a.attributions, b.attributions)
        assert set(calls) == {(3, 16, 16), (3, 12, 20)}
