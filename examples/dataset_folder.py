"""Explain a folder of images with ``explain_dataset``: results on disk, a resume after a crash, a Dask cluster.

1. Writes 8 held-out synthetic images as PNG files into ``OUT_DIR/images/``.
2. Starts a run in a child process and kills it (SIGKILL, as a crash or a lost machine would)
   once a few images are done. Every finished image was already on disk (``items/*.npz`` plus a
   line in ``index.jsonl``).
3. Runs the same call again: it skips the finished images and explains only the rest.
4. Explains the folder again on a Dask ``LocalCluster`` (2 worker processes, 1 thread each):
   workers only compute, this process writes; the maps equal the ones of the single-process run.

Needs ``pip install 'perturbx[torch,dask]'``. Run: ``python examples/dataset_folder.py [OUT_DIR]``
(about 40 s on a 2-core CPU).
"""
# requires: torch, distributed, PIL

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import perturbx
from perturbx.adapters import Torch
from perturbx.datasets import make_shapes
from perturbx.models import load_demo_model

N_IMAGES = 8


def explainer() -> perturbx.RISE:
    return perturbx.RISE(n_masks=500, grid_size=7, random_state=0)  # an int seed: the same map on any worker


def make_model() -> Torch:
    """Built once in each worker process (``perturbx.WorkerModel``) rather than pickled with every task."""
    return Torch(load_demo_model(), batch_size=128, output="probs")


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(make_shapes(N_IMAGES, random_state=123).images):   # (3, 64, 64) in [0, 1]
        pixels = (np.moveaxis(image, 0, -1) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"shape_{i:02d}.png")


def run(images: Path, out: Path, model: Torch | None = None) -> perturbx.DatasetResults:
    """The call that is interrupted and repeated: the same arguments resume the same run."""
    return perturbx.explain_dataset(explainer(), make_model() if model is None else model, images, out)


def interrupted_run(images: Path, out: Path, after: int = 3) -> int:
    """Start :func:`run` in a child process and kill it once ``after`` images are done; returns how many were."""
    child = subprocess.Popen([sys.executable, __file__, "--child", str(images), str(out)])
    index = out / "index.jsonl"
    while child.poll() is None:
        if index.is_file() and len(index.read_text().splitlines()) >= after:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    child.wait()
    return len(perturbx.DatasetResults(out).done)


def main(root: Path) -> None:
    torch.set_num_threads(perturbx.dataset_runs.default_threads())
    images, out = root / "images", root / "runs" / "rise"
    write_images(images)

    done = interrupted_run(images, out)
    print(f"run killed after {done} of {N_IMAGES} images")
    model = make_model()
    res = run(images, out, model=model)                          # the same call again: resumes
    per_image = explainer().n_masks + 1
    print(f"resumed: {res!r}; this run explained {model.n_queries // per_image} images")
    assert res.complete and model.n_queries == (N_IMAGES - done) * per_image
    print(f"maps {res.attributions().shape}, first: {res[0]!r}")

    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"Dask: {len(client.scheduler_info()['workers'])} workers")
        start = time.perf_counter()
        on_dask = perturbx.explain_dataset(explainer(), perturbx.WorkerModel(make_model), images,
                                           root / "runs" / "rise-dask", backend="dask", n_jobs=2)
        print(f"Dask run: {on_dask!r} in {time.perf_counter() - start:.1f} s")
    gap = np.abs(on_dask.attributions() - res.attributions()).max()
    print(f"Dask maps vs single-process maps: max difference {gap:.1e}")
    assert gap < 1e-5


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        torch.set_num_threads(perturbx.dataset_runs.default_threads())
        run(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
