"""Torch adapter options deployed models use: autocast, channels_last, torch.compile; each the same map."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import perturbx
import perturbx.gradients

torch = pytest.importorskip("torch")
from perturbx.adapters import Torch  # noqa: E402


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1, stride=2),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).random((3, 24, 24), dtype=np.float32)


def rise_map(adapter, x):
    return perturbx.RISE(n_masks=256, grid_size=4, random_state=0).explain(adapter, x, target=1).attributions


@pytest.mark.parametrize(("options", "rtol", "min_pearson"), [
    ({"channels_last": True}, 1e-5, None),
    ({"compile": True}, 1e-4, None),
    ({"autocast": "bfloat16"}, None, 0.98),     # bfloat16 keeps 8 bits of mantissa (measured: 0.987)
    ({"autocast": "float16"}, None, 0.999),
])
def test_options_give_the_same_map(net, x, options, rtol, min_pearson):
    plain = rise_map(Torch(net, batch_size=64), x)
    adapter = Torch(net, batch_size=64, **options)
    if options.get("autocast") == "float16" and not _cpu_float16_autocast():
        pytest.skip("this torch build has no float16 autocast on the CPU")
    other = rise_map(adapter, x)
    if rtol is not None:
        np.testing.assert_allclose(other, plain, rtol=rtol, atol=rtol * np.abs(plain).max())
    else:
        assert np.corrcoef(other.ravel(), plain.ravel())[0, 1] > min_pearson
        assert not np.array_equal(other, plain)  # the reduced precision did run


def _cpu_float16_autocast() -> bool:
    try:
        with torch.autocast(device_type="cpu", dtype=torch.float16):
            torch.nn.functional.linear(torch.ones(2, 2), torch.ones(2, 2))
        return True
    except RuntimeError:
        return False


def test_copies_compile_again_and_gradients_use_the_plain_module(net, x):
    adapter = Torch(net, compile=True)
    adapter._compiled_module()
    twin = copy.copy(adapter)                       # compare()'s per-thread copies
    assert adapter._compiled is not None and twin._compiled is None and twin.compile is True
    e = perturbx.gradients.Saliency().explain(Torch(net, autocast="bfloat16", channels_last=True), x, target=1)
    ref = perturbx.gradients.Saliency().explain(Torch(net), x, target=1)
    np.testing.assert_allclose(e.attributions, ref.attributions, rtol=1e-5, atol=1e-7)


def test_bad_options(net):
    with pytest.raises(ValueError, match="'autocast' parameter of Torch must be one of \\('bfloat16', 'float16'\\)"):
        Torch(net, autocast="int8")
    with pytest.raises(TypeError, match="'channels_last' parameter of Torch must be True or False"):
        Torch(net, channels_last="yes")
