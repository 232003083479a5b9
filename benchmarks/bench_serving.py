"""The explainer as a service (perturbx serve, issue 21): requests per minute and p50/p95 latency, in one run.

Starts, on 127.0.0.1, MLServer serving the trained demo CNN from ONNX (the predictor) and
``perturbx serve`` (MLServer with the perturbx runtime, from the venv made by
tests/servers/setup_mlserver.sh) pointed at it, then explains the same images with the same
RISE settings:

1. in-process: the client runs ``RISE(...).explain(Remote(predictor), x)`` itself, one image
   after the other (the peer: what a team does without an explainer service);
2. through the explainer service, one client sending one request after the other;
3. through the service, 8 and 32 clients at once (the runtime explains ``--slots`` at a time,
   the others wait in its queue);
4. a repeated request, answered from the service's response cache.

Every answer's map is checked against the in-process one (the same seed gives the same map).

    python benchmarks/bench_serving.py            # 32 images, RISE with 500 masks
    python benchmarks/bench_serving.py --quick    # 8 images, 100 masks: checks that it runs
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_demo(path: Path, n: int) -> tuple[str, np.ndarray]:
    """The trained demo CNN as ONNX (dynamic batch) and ``n`` held-out images."""
    import torch

    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model

    net = load_demo_model().eval()
    images = make_shapes(n, random_state=DEMO_TEST_SEED).images
    torch.onnx.export(net, (torch.from_numpy(images[:2]),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                      dynamo=True, external_data=False, verbose=False)
    return str(path), images


def stats(latencies: list[float], wall: float) -> dict:
    lat = np.asarray(latencies)
    return {"n": len(lat), "wall": wall, "per_min": 60.0 * len(lat) / wall, "p50": float(np.percentile(lat, 50)),
            "p95": float(np.percentile(lat, 95))}


def timed(fn, items, clients: int) -> tuple[dict, list]:
    """Run ``fn(item)`` for every item with ``clients`` threads; latency of each call and the wall time."""
    def one(item):
        start = time.perf_counter()
        out = fn(item)
        return time.perf_counter() - start, out

    start = time.perf_counter()
    if clients == 1:
        results = [one(item) for item in items]
    else:
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, items))
    wall = time.perf_counter() - start
    return stats([r[0] for r in results], wall), [r[1] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 images, 100 masks")
    parser.add_argument("--slots", type=int, default=2, help="explanations the runtime runs at once (max_concurrency)")
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1)  # numpy's BLAS: one thread here, as in the servers (OMP_NUM_THREADS=1)
    import perturbx
    from perturbx.adapters import Remote
    from perturbx.serving.client import post, read_response, request_body
    from tests.servers.explainer_process import serve_explainers
    from tests.servers.mlserver_process import serve_onnx

    n_images, n_masks = (8, 100) if args.quick else (32, 500)
    params = {"n_masks": n_masks, "grid_size": 7, "random_state": 0}
    model = {"url": None, "model": "demo-cnn", "batch_size": 32, "concurrency": 4, "sample_shape": [3, 64, 64]}
    with tempfile.TemporaryDirectory() as tmp:
        path, images = export_demo(Path(tmp) / "demo.onnx", n_images)
        with serve_onnx(path, Path(tmp) / "predictor") as predictor:
            model["url"] = predictor
            limits = {"max_concurrency": args.slots, "max_queue": 64, "deadline_s": 3600}
            configs = {"rise": {"method": "rise", "params": params, "model": model,
                                "limits": {**limits, "cache_size": 0}},
                       "rise-cached": {"method": "rise", "params": params, "model": model, "limits": limits}}
            with serve_explainers(configs, Path(tmp) / "explainer") as (url, _):
                rows, maps = run_all(args, perturbx, Remote, predictor, url, images, params, post, read_response,
                                     request_body)
    table = report(rows, args, n_images, n_masks, maps)
    print(table)
    if args.out:
        Path(args.out).write_text(table)


def run_all(args, perturbx, Remote, predictor, url, images, params, post, read_response, request_body):
    """Every scenario, in order; the table rows and whether every served map equals the in-process one."""
    client = Remote(predictor, "demo-cnn", batch_size=32, concurrency=4)  # one adapter: its connections are reused

    def in_process(x):
        return perturbx.RISE(**params).explain(client, x)

    def served(name):
        def call(x):
            status, answer = post(url, name, request_body(x, input_name="image"), timeout=3600)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {answer}")
            return read_response(answer)
        return call

    seq = images[: max(4, len(images) // 2)]
    served("rise")(images[-1])  # warm up both processes (imports, connections); not timed
    peer, explanations = timed(in_process, seq, 1)
    rows = [("in-process: RISE(...).explain(Remote(predictor), x), one after the other", peer)]
    want = [e.attributions for e in explanations] + [in_process(x).attributions for x in images[len(seq):]]
    same = True
    for label, clients, items in (("explainer service, 1 client, one request after the other", 1, seq),
                                  ("explainer service, 8 clients at once", 8, images),
                                  ("explainer service, 32 clients at once", 32, images)):
        result, answers = timed(served("rise"), items, clients)
        rows.append((label, result))
        same &= all(np.array_equal(a["attributions"][0, 0], w) for a, w in zip(answers, want, strict=False))
    served("rise-cached")(images[0])
    cached, answers = timed(served("rise-cached"), [images[0]] * 16, 1)
    assert all(a["parameters"]["cached"] for a in answers)
    rows.append(("explainer service, the same request again (response cache)", cached))
    return rows, same


def report(rows, args, n_images: int, n_masks: int, same: bool) -> str:
    import onnxruntime
    import torch

    lines = ["| scenario | requests | wall s | requests / min | p50 latency s | p95 latency s |",
             "|---|---|---|---|---|---|"]
    for label, r in rows:
        lines.append(f"| {label} | {r['n']} | {r['wall']:.1f} | {r['per_min']:.1f} | {r['p50']:.2f} | {r['p95']:.2f} |")
    head = (f"RISE {n_masks} masks, grid 7, random_state 0 ({n_masks + 1} predictor queries per image); "
            f"{n_images} demo images 3x64x64; Remote batch_size 32, concurrency 4; runtime slots {args.slots}.\n"
            f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__} (client).\n"
            f"Every served map equal to the in-process one: {'yes' if same else 'NO'}.\n\n")
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
