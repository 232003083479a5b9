"""ONNX adapter: torch.onnx exports run by ONNX Runtime give the Torch adapter's explanations."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pytest

from perturbx import RISE, Occlusion
from perturbx.adapters import Torch
from perturbx.adapters.onnx_runtime import ONNX

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # torch.onnx.export's exporter

SMALL = (3, 20, 23)


def export(net, sample_shape, path, *, batch: int | None = None, dtype=None) -> str:
    """Export ``net`` with a dynamic batch axis (``batch=None``) or a fixed one; returns the path."""
    example = torch.rand(batch or 2, *sample_shape, dtype=dtype)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False, optimize=False)
    return str(path)


@pytest.fixture(scope="module")
def demo():
    """The demo CNN's architecture (weights as trained do not matter for equality) and an image."""
    models = pytest.importorskip("perturbx.models")
    datasets = pytest.importorskip("perturbx.datasets")
    torch.manual_seed(0)
    net = models.DemoCNN().eval()
    image = datasets.make_shapes(1, random_state=3).images[0]
    return net, image


@pytest.fixture(scope="module")
def small_files(small_cnn, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    return {"dynamic": export(small_cnn, SMALL, root / "dyn.onnx"),
            1: export(small_cnn, SMALL, root / "b1.onnx", batch=1),
            3: export(small_cnn, SMALL, root / "b3.onnx", batch=3)}


class RecordingSession:
    """Wraps an InferenceSession and records the batch size of every run."""

    def __init__(self, session) -> None:
        self.session, self.sizes = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, outputs, feeds):
        self.sizes.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)


def test_demo_cnn_through_onnx_equals_the_torch_adapter(demo, tmp_path):
    net, image = demo
    onnx_model = ONNX(export(net, image.shape, tmp_path / "demo.onnx"), batch_size=32)
    torch_model = Torch(net, batch_size=32)
    assert onnx_model.sample_shape == image.shape and onnx_model.fixed_batch is None
    for explainer in (RISE(n_masks=32, grid_size=5, random_state=0), Occlusion(window=32, stride=16)):
        got, want = explainer.explain(onnx_model, image), explainer.explain(torch_model, image)
        assert got.n_queries == want.n_queries and np.array_equal(got.targets, want.targets)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.attributions, want.attributions, rtol=1e-4, atol=1e-5)


def test_dynamic_batch_runs_whole_chunks(small_cnn, small_files):
    x = np.random.default_rng(0).random((37, *SMALL), dtype=np.float32)
    want = small_cnn(torch.from_numpy(x)).detach().numpy()
    rec = RecordingSession(ort.InferenceSession(small_files["dynamic"], providers=["CPUExecutionProvider"]))
    model = ONNX(rec, batch_size=16)
    np.testing.assert_allclose(model.predict(x), want, rtol=1e-5, atol=1e-5)
    assert rec.sizes == [16, 16, 5] and model.n_queries == 37


@pytest.mark.parametrize("fixed", [1, 3])
def test_a_model_with_a_fixed_batch_runs_that_many_rows_per_call(small_cnn, small_files, fixed):
    x = np.random.default_rng(1).random((8, *SMALL), dtype=np.float32)
    rec = RecordingSession(ort.InferenceSession(small_files[fixed], providers=["CPUExecutionProvider"]))
    model = ONNX(rec, batch_size=8)
    assert model.fixed_batch == fixed
    np.testing.assert_allclose(model.predict(x), small_cnn(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    assert set(rec.sizes) == {fixed} and len(rec.sizes) == -(-8 // fixed)
    rise = RISE(n_masks=20, grid_size=4, random_state=0)
    np.testing.assert_allclose(rise.explain(model, x[0]).attributions,
                               rise.explain(ONNX(small_files["dynamic"]), x[0]).attributions, rtol=1e-5, atol=1e-6)


def test_path_bytes_and_pickle_give_the_same_model(small_files):
    x = np.random.default_rng(2).random((4, *SMALL), dtype=np.float32)
    by_path = ONNX(small_files["dynamic"])
    with open(small_files["dynamic"], "rb") as f:
        by_bytes = ONNX(f.read())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    clone = pickle.loads(pickle.dumps(ONNX(small_files["dynamic"], session_options=options)))
    assert clone._session_options.intra_op_num_threads == 1
    want = by_path.predict(x)
    np.testing.assert_array_equal(by_bytes.predict(x), want)
    np.testing.assert_array_equal(clone.predict(x), want)
    assert "dyn.onnx" in repr(by_path) and "bytes" in repr(by_bytes)
    with pytest.raises(TypeError, match="InferenceSession cannot be pickled.*path"):
        pickle.dumps(ONNX(ort.InferenceSession(small_files["dynamic"], providers=["CPUExecutionProvider"])))


def test_channels_last_and_double_precision_models(tmp_path):
    torch.manual_seed(1)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    class ChannelsLast(torch.nn.Module):
        def forward(self, x):
            return conv(x.permute(0, 3, 1, 2))

    x = np.random.default_rng(3).random((5, 9, 11, 3))
    hwc = ONNX(export(ChannelsLast().eval(), (9, 11, 3), tmp_path / "hwc.onnx"), input_layout="HWC")
    assert hwc.sample_shape == (9, 11, 3) and hwc.dtype == np.float32
    with torch.no_grad():
        want = conv(torch.from_numpy(x).float().permute(0, 3, 1, 2)).numpy()
    np.testing.assert_allclose(hwc.predict(x), want, rtol=1e-5, atol=1e-6)

    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(99, 4)).double().eval()
    double = ONNX(export(linear, (9, 11), tmp_path / "f64.onnx", dtype=torch.float64), input_layout="HW")
    assert double.dtype == np.float64 and double.check_sample(x[0, ..., 0]).dtype == np.float64
    with torch.no_grad():
        want = linear(torch.from_numpy(x[..., 0])).numpy()
    np.testing.assert_allclose(double.predict(x[..., 0]), want, rtol=1e-12, atol=1e-12)


def test_errors_name_the_argument(small_files, tmp_path):
    with pytest.raises(ValueError, match="existing .onnx file.*nope.onnx"):
        ONNX(tmp_path / "nope.onnx")
    with pytest.raises(TypeError, match="'path_or_session' parameter of ONNX.*Got int"):
        ONNX(3)
    session = ort.InferenceSession(small_files["dynamic"], providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="'providers' parameter of ONNX applies when ONNX opens the model"):
        ONNX(session, providers=["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="'output_name' parameter of ONNX must be one of \\['logits'\\]"):
        ONNX(session, output_name="probs")
    with pytest.raises(ValueError, match="'input_name' parameter of ONNX must be one of \\['image'\\]"):
        ONNX(session, input_name="x")
    with pytest.raises(ValueError, match="4 axes.*input_layout='HW' needs 3"):
        ONNX(session, input_layout="HW")
    model = ONNX(session)
    with pytest.raises(ValueError, match=r"expects samples of shape \(3, 20, 23\)"):
        RISE(n_masks=4).explain(model, np.zeros((3, 20, 20), np.float32))


def test_missing_onnxruntime_names_the_extra(small_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pip install 'perturbx\[onnx\]'"):
        ONNX(small_files["dynamic"])


class TwoHeads(torch.nn.Module):
    """A segmenter-and-classifier: named outputs ``dense`` (n, 2, H, W) and ``logits`` (n, 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.head = torch.nn.Linear(2, 3)

    def forward(self, x):
        dense = torch.tanh(self.conv(x))
        return dense, self.head(dense.mean(dim=(2, 3)))


@pytest.mark.parametrize("batch", [None, 3])
def test_named_outputs_reach_the_target(tmp_path, batch):
    from perturbx.targets import Class, Region

    torch.manual_seed(2)
    net = TwoHeads().eval()
    example = torch.rand(batch or 2, *SMALL)
    dynamic = None if batch else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    path = tmp_path / "two.onnx"
    torch.onnx.export(net, (example,), str(path), input_names=["image"], output_names=["dense", "logits"],
                      dynamic_shapes=dynamic, dynamo=True, external_data=False, verbose=False, optimize=False)
    x = np.random.default_rng(0).random(SMALL, dtype=np.float32)
    model = ONNX(str(path), output_name="*", batch_size=8)
    raw = model.predict_raw(x[None])
    assert sorted(raw) == ["dense", "logits"] and raw["dense"].shape == (1, 2, 20, 23)
    mask = np.zeros(SMALL[1:], bool)
    mask[5:15, 4:12] = True
    rise = RISE(n_masks=40, grid_size=3, random_state=0)
    for target in (Region(mask, 1, output="dense"), Class(2, output="logits")):
        onnx_map = rise.explain(model, x, target=target).attributions
        torch_map = rise.explain(Torch(net, batch_size=8), x, target=_unnamed(target)).attributions
        np.testing.assert_allclose(onnx_map, torch_map, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"'output_name' parameter of ONNX must be one of \['dense', 'logits'\]"):
        ONNX(str(path), output_name=["dense", "boxes"])


def _unnamed(target):
    """The same target for the torch module, whose two outputs come as a tuple: named "0" and "1"."""
    from perturbx.targets import Class, Region

    if isinstance(target, Region):
        return Region(target.mask, target.channel[0], output="0")
    return Class(target.index[0], output="1")
