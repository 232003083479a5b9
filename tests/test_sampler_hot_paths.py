"""Samplers' hot paths made faster for issue 16 give exactly what the plain formulations give.

Window masks are fused (``1 - prod inside``), KernelSHAP's allocation reads a table computed once per
sampler; each is checked against a brute-force or the former per-call computation on identical inputs.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

from perturbx.backend import NUMPY, TorchBackend
from perturbx.samplers import SlidingWindowSampler
from perturbx.samplers.coalitions import SegmentMap, ShapleyKernelSampler, SizeGroup, _allocate


def backends():
    out = [NUMPY]
    with contextlib.suppress(ImportError):  # torch is a dev dependency
        out.append(TorchBackend("cpu"))
    return out


def window_masks_by_hand(shape, window, stride) -> np.ndarray:
    """Every window position's keep-mask, one loop per window, zeroing the (border-cropped) window."""
    starts = [np.arange(math.ceil((n - w) / s) + 1) * s for n, w, s in zip(shape, window, stride, strict=True)]
    out = []
    for pos in np.stack([g.ravel() for g in np.meshgrid(*starts, indexing="ij")], axis=1):
        m = np.ones(shape)
        m[tuple(slice(p, p + w) for p, w in zip(pos, window, strict=True))] = 0.0
        out.append(m)
    return np.stack(out)


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("shape", "window", "stride"), [
    ((20, 17), (4, 5), (3, 2)), ((3, 12, 10), (1, 4, 4), (1, 3, 4)), ((3, 8, 8), (2, 3, 3), (1, 2, 2)),
    ((60, 64), (16, 16), (8, 8))])
def test_window_masks_equal_the_brute_force(backend, dtype, shape, window, stride):
    sampler = SlidingWindowSampler(shape, window, stride)
    chunks = [backend.to_numpy(c.materialize(backend, dtype)) for c in sampler.chunks(100)]
    got = np.concatenate(chunks)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, window_masks_by_hand(shape, window, stride))
    _check_written_into_given_memory(list(sampler.chunks(100)), backend, dtype, chunks)


def _check_written_into_given_memory(chunks, backend, dtype, expected) -> None:
    """``materialize(out=)`` (the engine's pooled memory) gives the same masks, in that memory."""
    for chunk, want in zip(chunks, expected, strict=True):
        out = backend.zeros((chunk.size + 3, *chunk.mask_shape), dtype)[:chunk.size]  # a pooled buffer's head
        got = chunk.materialize(backend, dtype, out=out)
        assert got is out or backend.to_numpy(got).__array_interface__["data"] == \
            backend.to_numpy(out).__array_interface__["data"]
        np.testing.assert_array_equal(backend.to_numpy(out), want)


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rise_masks_written_into_given_memory_equal_fresh_ones(backend, dtype):
    from perturbx.samplers.random_grid import RandomGridSampler

    sampler = RandomGridSampler((21, 30), 50, (4, 5), 0.5, np.random.default_rng(0))
    chunks = list(sampler.chunks(16))
    fresh = [backend.to_numpy(c.materialize(backend, dtype)) for c in chunks]
    for c, f in zip(chunks, fresh, strict=True):
        assert f.shape == (c.size, 21, 30) and ((f >= 0) & (f <= 1 + 1e-6)).all()
    _check_written_into_given_memory(chunks, backend, dtype, fresh)


def allocation_per_call(sampler: ShapleyKernelSampler, groups: list[SizeGroup], budget: int) -> np.ndarray:
    """The former ``_allocation``: every share, sum and cap computed again in each call."""
    m = sampler.segmap.n_segments
    n_pairs = np.zeros(len(groups), dtype=np.int64)
    first = 0
    for i, group in enumerate(groups):
        share = budget * sampler._share(group) / sum(sampler._share(g) for g in groups[i:])
        if share < group.n_coalitions - 1e-9:
            break
        n_pairs[i] = group.n_coalitions // 2
        budget -= group.n_coalitions
        first = i + 1
    if first < len(groups):
        rest = groups[first:]
        caps = np.array([math.comb(m, g.s) // (1 if g.paired else 2) for g in rest])
        shares = np.array([sampler._share(g) for g in rest])
        n_pairs[first:] = _allocate(budget // 2, shares, np.minimum(caps, budget // 2 + 1))
    return n_pairs


@pytest.mark.parametrize("sampling", ["stratified", "leverage-stratified"])
@pytest.mark.parametrize("m", [3, 8, 13, 50, 70])
def test_kernel_shap_allocation_equals_the_per_call_computation(sampling, m):
    segments = np.arange(m).reshape(1, m)
    sampler = ShapleyKernelSampler(SegmentMap(segments), 200, np.random.default_rng(0), sampling=sampling)
    groups = [SizeGroup(s, m) for s in range(1, m // 2 + 1)]
    for budget in [0, 1, 2, 7, 2 * m, 2 * m + 1, 97, 500, 1998, 5000, 10 ** 5]:
        np.testing.assert_array_equal(sampler._allocation(groups, budget), allocation_per_call(sampler, groups, budget))


def _segment_maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    blocks = (np.arange(48)[:, None] // 16) * 4 + np.arange(64)[None] // 16  # 16-px runs: repeated run by run
    speckle = rng.integers(0, 9, size=(20, 30))  # runs of about one pixel: the per-pixel gather
    return {"blocks": blocks, "speckle": speckle, "one segment": np.zeros((6, 5), np.int64)}


@pytest.mark.parametrize("backend", backends(), ids=lambda b: b.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(_segment_maps()))
def test_superpixel_masks_equal_the_per_pixel_lookup(backend, dtype, name):
    segments = _segment_maps()[name]
    segmap = SegmentMap(segments)
    assert (segmap.runs is not None) == (name != "speckle")
    z = (np.random.default_rng(0).random((7, segmap.n_segments)) < 0.5).astype(np.uint8)
    masks = segmap.masks(z, backend, dtype)
    got = backend.to_numpy(masks) if backend.name == "torch" else masks
    assert got.dtype == dtype and got.shape == (7, *segments.shape)
    np.testing.assert_array_equal(got, z[:, segments].astype(dtype))
