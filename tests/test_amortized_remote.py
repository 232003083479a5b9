"""Amortized trained through a Remote adapter against a real MLServer equals the same training in-process.

The server is the suite's MLServer (tests/servers/setup_mlserver.sh) serving the demo CNN
exported to ONNX; the in-process model is the same ONNX file on ONNX Runtime. Both fits
use the same seed, settings and images, so they ask the same queries in the same batches.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import perturbx  # noqa: E402
from perturbx.adapters.remote import Remote  # noqa: E402

from .servers.mlserver_process import export_onnx, find_mlserver, require, serve_onnx  # noqa: E402

SETTINGS = {"n_images": 24, "coalitions": 8, "validation": 4, "validation_samples": 64, "epochs": 3, "patience": 3,
            "batch_size": 8, "width": 4, "depth": 3, "random_state": 3, "progress": False}
BATCH = 32


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """MLServer serving the (untrained, seeded) demo CNN as "demo-cnn"; yields (url, onnx path)."""
    require(find_mlserver())
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from perturbx.models import DemoCNN

    torch.manual_seed(0)
    net = DemoCNN().eval()
    root = tmp_path_factory.mktemp("amortized_mlserver")
    path = export_onnx(net, (3, 64, 64), root / "demo.onnx")
    with serve_onnx(path, root / "server") as url:
        yield url, path


def test_training_through_mlserver_gives_the_maps_of_training_in_process(served):
    from perturbx.adapters.onnx_runtime import ONNX

    url, path = served
    images = perturbx.datasets.make_shapes(SETTINGS["n_images"] + SETTINGS["validation"], random_state=4).images
    remote = Remote(url, "demo-cnn", batch_size=BATCH, concurrency=2)
    local = ONNX(path, batch_size=BATCH)
    over_http = perturbx.Amortized(4, **SETTINGS).fit(remote, images)
    in_process = perturbx.Amortized(4, **SETTINGS).fit(local, images)

    log = over_http.training_log_
    assert log["queries"] == in_process.training_log_["queries"] == remote.n_sent == local.n_queries
    assert log["queries"] == 1 + 4 * (2 + 64) + 24 * (2 + 8)  # identity, validation, training: no query lost
    assert over_http.identity_.model == "Remote" and in_process.identity_.model == "ONNX"
    held_out = perturbx.datasets.make_shapes(3, random_state=5).images
    for x in held_out:
        got, want = over_http.explain(remote, x, [0, 1, 2, 3]), in_process.explain(local, x, [0, 1, 2, 3])
        assert got.n_queries == 2
        # the same up to float32 rounding (measured: 5e-7 of the largest value; the server's ONNX Runtime is
        # another version, and its scores travel as JSON)
        scale = np.abs(want.segment_weights).max()
        np.testing.assert_allclose(got.segment_weights, want.segment_weights, rtol=0, atol=1e-5 * scale)
        np.testing.assert_allclose(got.attributions, want.attributions, rtol=0, atol=1e-5 * scale)
    # an explainer trained over HTTP explains the in-process model too (the identity is the model's, not the adapter's)
    np.testing.assert_allclose(over_http.explain(local, held_out[0]).attributions,
                               over_http.explain(remote, held_out[0]).attributions, rtol=0, atol=1e-6)
