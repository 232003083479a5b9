"""Remote (a local MLServer) and dataset runs: throughput, concurrency, cache, n_jobs, in one run.

Starts MLServer on 127.0.0.1 (from the venv made by tests/servers/setup_mlserver.sh) serving
the demo CNN exported to ONNX, then measures, on the same images and explainer:

1. images explained per minute through ``Remote`` with ``concurrency=1`` and ``8``, against the
   server as it is and against one that delays every answer by ``--latency-ms`` (a stand-in for
   the round trip to a server on another machine; here client and server share the CPU), and
   the same model in-process through ``ONNX``, the floor without HTTP;
2. the on-disk cache: a rerun of the same method, and a second method over the same images,
   with and without the cache warmed by the first;
3. ``explain_dataset`` throughput with ``n_jobs=1`` and ``2`` (loky processes), in-process ONNX.

    python benchmarks/bench_remote.py             # 16 images, RISE with 500 masks
    python benchmarks/bench_remote.py --quick     # 4 images, 100 masks: checks that it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_demo(path: Path) -> tuple[str, np.ndarray]:
    """The trained demo CNN as ONNX (dynamic batch) and held-out images."""
    import torch

    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model

    net = load_demo_model().eval()
    images = make_shapes(64, random_state=DEMO_TEST_SEED).images
    torch.onnx.export(net, (torch.from_numpy(images[:2]),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                      dynamo=True, external_data=False, verbose=False)
    return str(path), images


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def explain_all(explainer, model, images) -> list:
    return [explainer.explain(model, x) for x in images]


def per_minute(n: int, seconds: float) -> float:
    return 60.0 * n / seconds


def bench_concurrency(url, images, explainer, label: str = "") -> dict:
    from perturbx.adapters.remote import Remote

    rows = {}
    explain_all(explainer, Remote(url, "demo-cnn", batch_size=32, concurrency=8), images[:1])  # warm-up
    for c in (1, 8):
        model = Remote(url, "demo-cnn", batch_size=32, concurrency=c)
        seconds, _ = timed(lambda m=model: explain_all(explainer, m, images))
        rows[f"Remote concurrency={c}{label}"] = (seconds, model.n_sent)
    return rows


def bench_in_process(onnx_path, images, explainer) -> dict:
    from perturbx.adapters.onnx_runtime import ONNX

    local = ONNX(onnx_path, batch_size=256)
    explain_all(explainer, local, images[:1])  # warm-up
    before = local.n_queries
    seconds, _ = timed(lambda: explain_all(explainer, local, images))
    return {"ONNX in-process (no HTTP)": (seconds, local.n_queries - before)}


def bench_cache(url, images, first, second, cache_dir: Path) -> dict:
    from perturbx.adapters.remote import Remote

    def remote(cache):
        return Remote(url, "demo-cnn", batch_size=32, concurrency=8, cache_dir=cache)

    rows = {}
    for label, explainer, cache in ((f"{type(first).__name__}, cold cache", first, cache_dir),
                                    (f"{type(first).__name__} again, warm cache", first, cache_dir),
                                    (f"{type(second).__name__}, no cache", second, None),
                                    (f"{type(second).__name__}, cache warmed by {type(first).__name__}",
                                     second, cache_dir)):
        model = remote(cache)
        seconds, _ = timed(lambda m=model, e=explainer: explain_all(e, m, images))
        rows[label] = (seconds, model.n_sent, model.n_cached)
    return rows


def bench_dataset(onnx_path, images, explainer, out: Path) -> dict:
    import onnxruntime as ort

    from perturbx.adapters.onnx_runtime import ONNX
    from perturbx.dataset_runs import explain_dataset

    rows = {}
    for n_jobs, threads in ((1, 2), (1, 1), (2, 1)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = ONNX(onnx_path, batch_size=256, session_options=options)
        seconds, _ = timed(lambda m=model, j=n_jobs, t=threads: explain_dataset(explainer, m, images,
                                                                                out / f"j{j}t{t}", n_jobs=j))
        rows[f"explain_dataset n_jobs={n_jobs}, {threads} ORT thread(s) per process"] = (seconds,)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--masks", type=int, default=500)
    parser.add_argument("--latency-ms", type=float, default=50.0,
                        help="delay added to every answer in the second server, a stand-in for a network round trip")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_images, n_masks = (4, 100) if args.quick else (args.images, args.masks)

    from perturbx import RISE, Occlusion
    from tests.servers.mlserver_process import serve_onnx

    rise = RISE(n_masks=n_masks, grid_size=7, random_state=0)
    occlusion = Occlusion(window=16, stride=8)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        onnx_path, all_images = export_demo(root / "demo.onnx")
        images = all_images[:n_images]
        with serve_onnx(onnx_path, root / "server") as url:
            conc = bench_concurrency(url, images, rise)
            cache = bench_cache(url, images, rise, occlusion, root / "cache")
        with serve_onnx(onnx_path, root / "server-latency", latency_ms=args.latency_ms) as url:
            conc.update(bench_concurrency(url, images, rise, f", +{args.latency_ms:g} ms per request"))
        conc.update(bench_in_process(onnx_path, images, rise))
        data = bench_dataset(onnx_path, all_images[:2 * n_images], rise, root / "runs")

    print(f"\n{n_images} images of 3x64x64, demo CNN; RISE {n_masks} masks (+1 reference query each); "
          f"Occlusion 16x16 stride 8 (50 queries each)\n")
    print("| Remote: concurrency | seconds | images / min | rows sent | vs concurrency=1 |\n|---|---|---|---|---|")
    base = conc["Remote concurrency=1"][0]
    for label, (s, sent) in conc.items():
        print(f"| {label} | {s:.2f} | {per_minute(n_images, s):.1f} | {sent} | {base / s:.2f}x |")
    print("\n| cache | seconds | images / min | rows sent | rows from cache |\n|---|---|---|---|---|")
    for label, (s, sent, cached) in cache.items():
        print(f"| {label} | {s:.2f} | {per_minute(n_images, s):.1f} | {sent} | {cached} |")
    print(f"\n| dataset run ({2 * n_images} images, ONNX in-process) | seconds | images / min | vs n_jobs=1 |"
          f"\n|---|---|---|---|")
    base = next(iter(data.values()))[0]
    for label, (s,) in data.items():
        print(f"| {label} | {s:.2f} | {per_minute(2 * n_images, s):.1f} | {base / s:.2f}x |")


if __name__ == "__main__":
    main()
