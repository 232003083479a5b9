"""Adapters and boundary validation: every bad input gets a named, actionable error."""

from __future__ import annotations

import math
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


# -- layout mistakes, raw pixels, the model failing on the first query (issue 15, section 1) ------------------
@pytest.mark.parametrize("method", [perturbx.RISE(n_masks=8, random_state=0),
                                    perturbx.LIME(n_samples=16, segmentation="grid", random_state=0)])
def test_channels_last_image_given_to_a_chw_adapter_is_refused(method, rng):
    calls = []
    model = Callable(lambda b: calls.append(len(b)) or good(b))
    with pytest.raises(ValueError, match=r"x has shape \(24, 24, 3\), which looks like input_layout='HWC' "
                                         r"\(3 channels of 24x24 pixels\), but the adapter's input_layout is 'CHW'"
                                         r".*24 channels of 24x3.*np.moveaxis\(x, -1, 0\).*sample_shape=\(24, 24, 3\)"):
        method.explain(model, rng.random((24, 24, 3)))
    assert calls == []  # refused before the model was asked anything


@pytest.mark.parametrize("shape", [(3, 32, 40), (1, 28, 28), (4, 8, 8)])
def test_channels_first_image_given_to_an_hwc_adapter_is_refused(shape, rng):
    with pytest.raises(ValueError, match=rf"x has shape \({shape[0]}, {shape[1]}, {shape[2]}\), which looks like "
                                         rf"input_layout='CHW'.*input_layout is 'HWC'.*np.moveaxis\(x, 0, -1\)"):
        perturbx.RISE(n_masks=8).explain(Callable(good, input_layout="HWC"), rng.random(shape))


@pytest.mark.parametrize(("shape", "layout"), [((3, 24, 24), "CHW"), ((24, 24, 3), "HWC"), ((24, 24), "HW"),
                                               ((16, 6, 4), "CHW"), ((6, 24, 24), "CHW"), ((4, 5, 7), "HWC")])
def test_shapes_that_fit_their_layout_are_taken(shape, layout, rng):
    e = perturbx.RISE(n_masks=8, random_state=0).explain(Callable(good, input_layout=layout), rng.random(shape), 0)
    assert e.attributions.shape == Callable(good, input_layout=layout).layout.spatial_shape(shape)


def test_many_channels_are_declared_with_sample_shape(rng):
    """A model that really takes 24 channels of 24 x 3 pixels says so; the map is then (24, 3)."""
    w = rng.normal(size=(2, 24, 24, 3))
    model = Callable(linear_model(w), input_layout="CHW", sample_shape=(24, 24, 3))
    x = rng.random((24, 24, 3))
    e = perturbx.Occlusion(window=(1, 1), stride=(1, 1)).explain(model, x, target=1)
    assert e.attributions.shape == (24, 3)
    np.testing.assert_allclose(e.attributions, (w[1] * x).sum(axis=0), rtol=1e-5, atol=1e-5)  # a pixel's drop


def test_declared_shape_mismatch_says_when_x_is_transposed(rng):
    with pytest.raises(ValueError, match=r"x has shape \(8, 8, 3\) but the model expects samples of shape "
                                         r"\(3, 8, 8\).*looks channels-last: pass np.moveaxis\(x, -1, 0\)"):
        perturbx.RISE(n_masks=4).explain(Callable(good, sample_shape=(3, 8, 8)), rng.random((8, 8, 3)), target=0)
    with pytest.raises(ValueError, match=r"expects samples of shape \(8, 8, 3\).*looks channels-first"):
        perturbx.RISE(n_masks=4).explain(Callable(good, input_layout="HWC", sample_shape=(8, 8, 3)),
                                         rng.random((3, 8, 8)), target=0)


@pytest.mark.parametrize(("owner", "make"), [
    ("Callable", lambda shape: Callable(good, sample_shape=shape)),
    ("Remote", lambda shape: perturbx.adapters.Remote("http://127.0.0.1:9", "m", sample_shape=shape)),
    ("SKLearn", lambda shape: SKLearn(_ProbaOnly(), sample_shape=shape, input_layout="CHW")),
])
@pytest.mark.parametrize(("shape", "match"), [
    ((3, 0, 8), r"'sample_shape' parameter of {owner} must be a tuple of positive ints.*Got \(3, 0, 8\)"),
    ("3x8x8", r"'sample_shape' parameter of {owner} must be a tuple of positive ints.*Got '3x8x8'"),
    ((8, 8), r"'sample_shape' parameter of {owner} must have 3 axes for input_layout='CHW'. Got \(8, 8\)"),
])
def test_bad_sample_shapes_name_the_parameter(owner, make, shape, match):
    with pytest.raises(ValueError, match=match.format(owner=owner)):
        make(shape)


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535)])
def test_raw_pixels_are_refused_not_rescaled(dtype, top, rng):
    x = rng.integers(0, top, size=(3, 8, 8)).astype(dtype)
    with pytest.raises(TypeError, match=rf"x has dtype {np.dtype(dtype).name} \(raw pixel values 0..{top}\); "
                                        rf"perturbx refuses it rather than convert it.*x.astype\(np.float32\) / {top}"):
        perturbx.RISE(n_masks=4).explain(good, x, target=0)
    e = perturbx.RISE(n_masks=4, random_state=0).explain(good, x.astype(np.float32) / top, target=0)
    assert e.input.dtype == np.float32 and e.input.max() <= 1.0
    ints = perturbx.RISE(n_masks=4, random_state=0).explain(good, x.astype(np.int64), target=0)
    np.testing.assert_array_equal(ints.input, x.astype(np.float32))  # signed ints are converted as they are


def test_model_failure_on_the_reference_query_names_x(rng):
    def fails(batch):
        raise KeyError("no such channel")

    with pytest.raises(ValueError, match=r"The model failed on x of shape \(3, 8, 8\).*batch of 1.*batch_size=7.*"
                                         r"Callable with input_layout='CHW'.*The model said: KeyError: "
                                         r"'no such channel'") as info:
        perturbx.RISE(n_masks=4).explain(Callable(fails, batch_size=7), rng.random((3, 8, 8)), target=0)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match=r"The model failed on x.*The model said: TypeError") as info:
        perturbx.RISE(n_masks=4).explain(Callable(math.fsum), rng.random((3, 8, 8)), target=0)  # a model in C
    assert isinstance(info.value.__cause__, TypeError)


def test_torch_model_failure_on_the_reference_query_names_x_and_keeps_the_cause(small_cnn, rng):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"The model failed on x of shape \(2, 20, 23\).*batch_size=64.*Torch with "
                                         r"input_layout='CHW'.*RuntimeError: .*3 channels, but got 2") as info:
        perturbx.Occlusion((4, 4), (4, 4)).explain(Torch(small_cnn), rng.random((2, 20, 23)), target=0)
    assert isinstance(info.value.__cause__, RuntimeError) and not isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match=r"failed on x of shape \(2, 20, 23\).*which declares samples of shape "
                                         r"\(2, 20, 23\)") as info:
        perturbx.RISE(n_masks=4).explain(Torch(small_cnn, sample_shape=(2, 20, 23)), rng.random((2, 20, 23)))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_perturbx_own_errors_on_the_reference_query_pass_unchanged(rng):
    with pytest.raises(perturbx.adapters.RemoteError, match="failed 1 times.*giving up") as info:
        perturbx.RISE(n_masks=4).explain(perturbx.adapters.Remote("http://127.0.0.1:9", "m", retries=0),
                                         rng.random((3, 8, 8)), target=0)
    assert not isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="returned 0 rows for a batch of 1 inputs") as info:
        perturbx.RISE(n_masks=4).explain(lambda b: good(b)[:0], rng.random((3, 8, 8)), target=0)
    assert info.value.__cause__ is None


def test_torch_sample_shape_is_checked_before_the_module_runs(small_cnn, rng):
    pytest.importorskip("torch")
    adapter = Torch(small_cnn, sample_shape=(3, 20, 23))
    assert adapter.sample_shape == (3, 20, 23)
    with pytest.raises(ValueError, match=r"x has shape \(3, 20, 22\) but the model expects samples of shape "
                                         r"\(3, 20, 23\) \(layout 'CHW'\)"):
        perturbx.RISE(n_masks=4).explain(adapter, rng.random((3, 20, 22)), target=0)
    assert adapter.n_queries == 0
    with pytest.raises(ValueError, match=r"'sample_shape' parameter of Torch must have 3 axes.*Got \(20, 23\)"):
        Torch(small_cnn, sample_shape=(20, 23))
    hwc = Torch(torch_channels_last(small_cnn), input_layout="HWC", sample_shape=(20, 23, 3))
    x = rng.random((3, 20, 23), dtype=np.float32)
    np.testing.assert_allclose(hwc.predict(np.moveaxis(x, 0, -1)[None]), Torch(small_cnn).predict(x[None]),
                               rtol=1e-6)


def torch_channels_last(net):
    import torch

    return torch.nn.Sequential(_Permute(), net) if isinstance(net, torch.nn.Module) else net


def test_torch_device_that_is_not_there_is_a_value_error_naming_device(small_cnn):
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"'device' parameter of Torch must be a torch device such as 'cpu'.*"
                                         r"Got 'gpu0' instead"):
        Torch(small_cnn, device="gpu0")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        with pytest.raises(ValueError, match=r"'device' parameter of Torch is 'cuda', but PyTorch .* sees no CUDA "
                                             r"device here.*Pass device='cpu'"):
            Torch(small_cnn, device="cuda")
    else:
        with pytest.raises(ValueError, match=rf"'device' parameter of Torch is 'cuda:{count}', but PyTorch sees "
                                             rf"{count} CUDA device\(s\) here: use 'cuda:0' to 'cuda:{count - 1}'"):
            Torch(small_cnn, device=f"cuda:{count}")
    assert Torch(small_cnn, device="cpu").device.type == "cpu"


def test_onnx_model_declaring_channels_last_needs_input_layout_hwc(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    from perturbx.adapters import ONNX

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["scores"], axes=[1, 2], keepdims=0)], "hwc",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 16, 16, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])])
    path = tmp_path / "hwc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), path)
    with pytest.raises(ValueError, match=r"ONNX model's input 'image' takes samples of shape \(16, 16, 3\), which "
                                         r"looks like input_layout='HWC'.*ONNX\(..., input_layout='HWC'\)"):
        ONNX(path)
    model = ONNX(path, input_layout="HWC")
    x = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x[None])[0], x.mean(axis=(0, 1)), rtol=1e-5)
