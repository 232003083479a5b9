"""Explain a model behind a real model server: MLServer speaking the Open Inference Protocol (KServe v2).

This script starts MLServer on 127.0.0.1 serving the demo CNN (exported to ONNX) and stops it
at the end. ``perturbx.adapters.Remote`` sends the perturbed images in requests of
``batch_size`` rows, ``concurrency`` of them at once, retries failed requests (5xx, timeouts,
dropped connections) with exponential backoff, and keeps every answer in an on-disk cache:

1. a first run asks the server for every row;
2. a second run (another adapter, same cache folder) is answered entirely from the cache;
3. after the server is stopped, the cached run still works, while a new image fails after
   the retries with an error that says what happened.

MLServer lives in its own virtual environment: ``bash tests/servers/setup_mlserver.sh`` makes it
(at ``$PERTURBX_MLSERVER_VENV``, default ``~/.cache/perturbx/venv-mlserver``); the server's start
and stop come from ``tests/servers/mlserver_process.py``. With your own server, only the
``Remote(url, model, ...)`` lines matter. Run: ``python examples/model_server.py [OUT_DIR]``.
"""
# requires: torch, onnxruntime, onnxscript, mlserver

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

import perturbx
from perturbx.adapters import ONNX, Remote, RemoteError
from perturbx.datasets import make_shapes
from perturbx.models import load_demo_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for tests/servers
from tests.servers.mlserver_process import MODEL_NAME, find_mlserver, serve_onnx


def export(net: torch.nn.Module, sample_shape: tuple[int, ...], path: Path) -> Path:
    """``net`` as an ONNX file with a dynamic batch axis."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(net, (torch.rand(2, *sample_shape),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True, external_data=False,
                      verbose=False)
    return path


def remote(url: str, cache: Path, **kwargs) -> Remote:
    return Remote(url, MODEL_NAME, batch_size=16, concurrency=4, timeout=30, retries=5, backoff=0.25,
                  cache_dir=cache, **kwargs)


def main(out: Path) -> None:
    if find_mlserver() is None:
        sys.exit("mlserver not found: run `bash tests/servers/setup_mlserver.sh` (or set PERTURBX_MLSERVER_VENV)")
    torch.set_num_threads(perturbx.dataset_runs.default_threads())
    out.mkdir(parents=True, exist_ok=True)
    images = make_shapes(2, random_state=11).images
    path = export(load_demo_model(), images[0].shape, out / "demo_cnn.onnx")
    cache = out / "remote-cache"
    rise = perturbx.RISE(n_masks=500, grid_size=7, random_state=0)

    start = time.perf_counter()
    with serve_onnx(path, out / "mlserver") as url:
        print(f"MLServer ready at {url} after {time.perf_counter() - start:.1f} s")
        first = remote(url, cache)
        e = rise.explain(first, images[0])
        print(f"first run:  {e!r}\n  rows sent {first.n_sent} in {first.n_requests} requests, "
              f"from the cache {first.n_cached}, retries {first.n_retries}")
        second = remote(url, cache)
        again = rise.explain(second, images[0])
        print(f"second run: rows sent {second.n_sent}, from the cache {second.n_cached}")
        assert second.n_sent == 0 and second.n_cached == e.n_queries

    local = rise.explain(ONNX(path), images[0])            # the same file run in this process
    print(f"server vs in-process ONNX: max map difference {np.abs(e.attributions - local.attributions).max():.1e}")
    assert np.allclose(e.attributions, local.attributions, atol=1e-5)
    assert np.allclose(again.attributions, e.attributions, atol=1e-5)

    offline = remote(url, cache)
    rise.explain(offline, images[0])                        # the server is gone: every row is in the cache
    print(f"server stopped, cached image: rows sent {offline.n_sent}, from the cache {offline.n_cached}")
    try:
        rise.explain(Remote(url, MODEL_NAME, retries=2, backoff=0.1), images[1])
    except RemoteError as err:                              # a new image needs the server: retried, then an error
        print(f"server stopped, new image: {type(err).__name__}: {str(err)[:160]}...")
    else:
        raise AssertionError("a stopped server cannot answer a new image")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
