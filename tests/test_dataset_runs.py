"""Dataset runs: atomic results, resume after SIGKILL, joblib (loky) and Dask backends, lazy results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from perturbx import RISE, Occlusion
from perturbx.adapters import Callable
from perturbx.dataset_runs import DatasetResults, WorkerModel, explain_dataset, read_index

from .servers import dataset_job

REPO = Path(__file__).resolve().parents[1]


def index_ids(out: Path) -> list[str]:
    """Ids of every parseable index line, repeats kept."""
    ids = []
    for line in (out / "index.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            ids.append(json.loads(line)["id"])
    return ids


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> DatasetResults:
    """The uninterrupted run, in this process, one image at a time."""
    return explain_dataset(*dataset_job.job(), out=tmp_path_factory.mktemp("reference"))


def test_uninterrupted_run_equals_explaining_each_image(reference, tmp_path):
    explainer, model, images = dataset_job.job()
    assert reference.complete and len(reference) == len(images)
    for i in (0, 5, 11):
        e = explainer.explain(model, images[i])
        got = reference[i]
        # images are explained 8 at a time (explain_many): equal up to the rounding of scoring x in a batch
        np.testing.assert_allclose(got.attributions, e.attributions, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(got.targets, e.targets)
        np.testing.assert_allclose(got.scores, e.scores, rtol=1e-13)
        assert got.n_queries == e.n_queries and got.method == "RISE"
    assert reference.attributions().shape == (len(images), 12, 12)
    assert not list((reference.root / "items").glob(".*.tmp"))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_run_killed_with_sigkill_resumes_every_image_exactly_once(reference, tmp_path, n_jobs):
    out = tmp_path / "run"
    env = {**os.environ, "PERTURBX_TEST_SLEEP": "0.08", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.dataset_job", str(out), str(n_jobs)],
                            cwd=REPO, env=env, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "index.jsonl").exists() and len(index_ids(out)) >= 3:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    before = {f.name: (f.stat().st_ino, f.stat().st_mtime_ns) for f in (out / "items").glob("*.npz")}
    assert 3 <= len(before) < dataset_job.N_IMAGES, "the kill should land part-way"

    resumed = explain_dataset(*dataset_job.job(), out=out, n_jobs=n_jobs)

    ids = index_ids(out)
    assert sorted(ids) == sorted(set(ids)) == sorted(reference.ids)  # each image recorded exactly once
    for name, stamp in before.items():  # finished before the kill: not redone
        f = out / "items" / name
        assert (f.stat().st_ino, f.stat().st_mtime_ns) == stamp
    np.testing.assert_allclose(resumed.attributions(), reference.attributions(), rtol=1e-12, atol=1e-14)
    assert not list((out / "items").glob(".*.tmp"))


def test_a_second_run_does_nothing_and_a_torn_index_line_or_unindexed_file_is_recovered(reference, tmp_path):
    out = tmp_path / "run"
    explainer, model, images = dataset_job.job()
    explain_dataset(explainer, model, images[:4], out=out)
    lines = (out / "index.jsonl").read_text().splitlines()
    # as if killed after writing image 3's file but while appending its index line
    (out / "index.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    spy = Callable(dataset_job.linear_scores, batch_size=16)
    res = explain_dataset(explainer, spy, images[:4], out=out)
    assert spy.n_queries == 0
    assert sorted(index_ids(out)) == sorted(res.ids) and res.complete
    np.testing.assert_allclose(res.attributions(), reference.attributions()[:4], rtol=1e-12, atol=1e-14)


def test_dask_backend_on_a_local_cluster_equals_the_local_run(reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    explainer, model, images = dataset_job.job()
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster, distributed.Client(cluster):
        res = explain_dataset(explainer, model, images, out=tmp_path / "dask", n_jobs=2, backend="dask")
    assert res.ids == reference.ids
    np.testing.assert_allclose(res.attributions(), reference.attributions(), rtol=1e-12, atol=1e-14)


def test_ray_backend_equals_the_local_run_and_resumes(reference, tmp_path):
    """Ray's joblib backend returns lists only: results come back (and are written) a round at a time."""
    ray = pytest.importorskip("ray")
    from ray.util.joblib import register_ray

    explainer, model, images = dataset_job.job()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        register_ray()
        first = explain_dataset(explainer, model, images[:5], out=tmp_path / "ray", n_jobs=2, backend="ray",
                                images_per_task=2)
        assert first.complete and len(first) == 5
        res = explain_dataset(explainer, model, images, out=tmp_path / "ray", n_jobs=2, backend="ray",
                              images_per_task=2)  # resumes: the first five are not explained again
    finally:
        ray.shutdown()
    assert res.ids == reference.ids and sorted(index_ids(tmp_path / "ray")) == sorted(res.ids)
    np.testing.assert_allclose(res.attributions(), reference.attributions(), rtol=1e-12, atol=1e-14)


def test_loky_processes_and_threads_equal_the_local_run(reference, tmp_path):
    explainer, model, images = dataset_job.job()
    loky = explain_dataset(explainer, model, images, out=tmp_path / "loky", n_jobs=2)
    threads = explain_dataset(explainer, model, images, out=tmp_path / "threads", n_jobs=2, backend="threading")
    np.testing.assert_allclose(loky.attributions(), reference.attributions(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(threads.attributions(), reference.attributions(), rtol=1e-12, atol=1e-14)


def test_worker_model_is_built_once_per_process(tmp_path):
    calls = []

    def factory():
        calls.append(1)
        return Callable(dataset_job.linear_scores, batch_size=16)

    explainer, _, images = dataset_job.job()
    res = explain_dataset(explainer, WorkerModel(factory), images[:3], out=tmp_path / "w")
    assert len(calls) == 1 and res.complete


def test_folder_and_list_of_paths(tmp_path):
    from skimage.io import imread, imsave

    rng = np.random.default_rng(3)
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    pixels = rng.integers(0, 256, size=(3, 10, 10, 3), dtype=np.uint8)
    imsave(folder / "a.png", pixels[0], check_contrast=False)
    imsave(folder / "sub" / "b.png", pixels[1], check_contrast=False)
    np.save(folder / "c.npy", np.moveaxis(pixels[2], -1, 0).astype(np.float32) / 255)
    (folder / "notes.txt").write_text("not an image")
    seen = []

    def model(batch):
        seen.append(batch[0].copy())
        return batch.reshape(len(batch), -1).sum(axis=1, keepdims=True)

    occl = Occlusion(window=5, stride=5)
    res = explain_dataset(occl, Callable(model), folder, out=tmp_path / "out")
    assert res.ids == ["a.png", "c.npy", "sub/b.png"]
    # the first row sent for each image is the image itself, read as CHW floats in [0, 1]
    np.testing.assert_allclose(seen[0], np.moveaxis(pixels[0], -1, 0) / 255, atol=1e-7)
    direct = occl.explain(Callable(model), np.moveaxis(pixels[1], -1, 0).astype(np.float32) / 255)
    np.testing.assert_allclose(res["sub/b.png"].attributions, direct.attributions, atol=1e-6)

    def read_chw(path: Path) -> np.ndarray:
        return np.load(path) if path.suffix == ".npy" else np.moveaxis(imread(path), -1, 0) / 255.0

    paths = [folder / "c.npy", folder / "a.png"]
    by_list = explain_dataset(occl, Callable(model), paths, out=tmp_path / "out2", loader=read_chw)
    assert by_list.ids == [str(p) for p in paths]
    np.testing.assert_allclose(by_list[0].attributions, res["c.npy"].attributions)
    np.testing.assert_allclose(by_list[1].attributions, res["a.png"].attributions, atol=1e-6)


def test_files_are_read_as_the_cli_reads_them(tmp_path):
    """One reader (perturbx.images): the same file types, arrays and errors as ``perturbx compare``."""
    from PIL import Image

    from perturbx.cli import CLIError
    from perturbx.cli import _read_image as cli_read
    from perturbx.images import read_image

    pixels = np.random.default_rng(5).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, p in zip(("a.gif", "b.webp", "c.jpeg", "d.png"), pixels, strict=True):
        Image.fromarray(p).save(folder / name)
    seen = []

    def model(batch):
        seen.extend(batch.copy())
        return batch.reshape(len(batch), -1).mean(axis=1, keepdims=True)

    res = explain_dataset(Occlusion(window=4, stride=4), Callable(model), folder, out=tmp_path / "out")
    assert res.ids == ["a.gif", "b.webp", "c.jpeg", "d.png"]
    for name in res.ids:  # each image itself is sent to the model once (its reference query)
        expected = read_image(folder / name)
        np.testing.assert_array_equal(cli_read(folder / name, None), expected)
        assert sum(np.array_equal(row, expected) for row in seen) == 1, name
    (folder / "e.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*e\.png") as caught:
        explain_dataset(Occlusion(window=4, stride=4), Callable(model), [folder / "e.png"], out=tmp_path / "o2")
    with pytest.raises(CLIError, match=r"cannot read image .*e\.png") as cli_caught:
        cli_read(folder / "e.png", None)
    assert str(caught.value) == str(cli_caught.value)


def test_labels_give_one_target_per_image(tmp_path):
    explainer, model, images = dataset_job.job()
    labels = [0, 1, 2, 1]
    res = explain_dataset(explainer, model, images[:4], out=tmp_path / "l", labels=labels)
    assert [int(e.targets[0]) for e in res] == labels
    np.testing.assert_allclose(res[3].attributions, explainer.explain(model, images[3], target=1).attributions,
                               rtol=1e-12, atol=1e-14)


def test_on_error_skip_records_failures_and_a_rerun_retries_them(tmp_path):
    explainer, _, images = dataset_job.job()
    bad = images.copy()
    bad[2, 0, 0, 0] = np.nan
    model = Callable(dataset_job.linear_scores, batch_size=16)
    res = explain_dataset(explainer, model, bad[:4], out=tmp_path / "e", on_error="skip")
    assert res.done == ["000000", "000001", "000003"] and "NaN" in res.errors["000002"]
    with pytest.raises(LookupError, match="000002.*not finished.*NaN"):
        res[2]
    with pytest.raises(ValueError, match="other pixels"):
        explain_dataset(explainer, model, images[[0, 3, 2, 3]], out=tmp_path / "e")
    with pytest.raises(ValueError, match="NaN"):
        explain_dataset(explainer, model, bad[:4], out=tmp_path / "e")
    fixed = bad[:4].copy()
    fixed[2] = images[2]
    res = explain_dataset(explainer, model, fixed, out=tmp_path / "e")
    assert res.complete and res.errors == {}


def test_another_configuration_in_the_same_folder_is_refused_unless_overwrite(tmp_path):
    explainer, model, images = dataset_job.job()
    explain_dataset(explainer, model, images[:2], out=tmp_path / "o")
    other = RISE(n_masks=16, grid_size=3, random_state=0)
    with pytest.raises(ValueError, match="another configuration.*overwrite=True"):
        explain_dataset(other, model, images[:2], out=tmp_path / "o")
    res = explain_dataset(other, model, images[:2], out=tmp_path / "o", overwrite=True)
    assert res.params["n_masks"] == 16 and res[0].n_queries == 17


def test_errors_name_the_argument(tmp_path):
    explainer, model, images = dataset_job.job()
    with pytest.raises(ValueError, match="random_state to be an int or None.*Generator"):
        explain_dataset(RISE(n_masks=8, random_state=np.random.default_rng(0)), model, images, out=tmp_path)
    with pytest.raises(TypeError, match="'explainer' parameter"):
        explain_dataset(object(), model, images, out=tmp_path)
    with pytest.raises(ValueError, match="'n_jobs' parameter of explain_dataset must be an int >= 1"):
        explain_dataset(explainer, model, images, out=tmp_path, n_jobs=0)
    with pytest.raises(ValueError, match="'on_error'"):
        explain_dataset(explainer, model, images, out=tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="at least 3 axes"):
        explain_dataset(explainer, model, images[0, 0], out=tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        explain_dataset(explainer, model, str(tmp_path / "nope"), out=tmp_path)
    with pytest.raises(ValueError, match="do not exist"):
        explain_dataset(explainer, model, [tmp_path / "nope.png"], out=tmp_path)
    with pytest.raises(ValueError, match="either target= .* or labels="):
        explain_dataset(explainer, model, images, out=tmp_path, target=0, labels=[0] * len(images))
    with pytest.raises(ValueError, match="one class index or perturbx.targets target per image"):
        explain_dataset(explainer, model, images, out=tmp_path, labels=[0, 1])
    with pytest.raises(ValueError, match="no dataset run"):
        DatasetResults(tmp_path / "empty")
    assert read_index(tmp_path / "empty") == {}


def test_one_target_object_per_image_and_images_per_task(tmp_path):
    """labels= takes targets (a Region per image here); one image per task gives the same maps as eight."""
    from perturbx.targets import Region

    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3))
    dense = lambda b: np.einsum("kc,nchw->nkhw", w, np.asarray(b, np.float64))  # noqa: E731
    images = rng.random((5, 3, 8, 8), dtype=np.float32)
    masks = [np.eye(8, dtype=bool) if i % 2 else ~np.eye(8, dtype=bool) for i in range(5)]
    regions = [Region(m, i % 2) for i, m in enumerate(masks)]
    explainer = RISE(n_masks=64, grid_size=2, random_state=0)
    eight = explain_dataset(explainer, Callable(dense), images, out=tmp_path / "a", labels=regions)
    one = explain_dataset(explainer, Callable(dense), images, out=tmp_path / "b", labels=regions, images_per_task=1)
    np.testing.assert_allclose(eight.attributions(), one.attributions(), rtol=1e-12, atol=1e-14)
    assert [int(e.targets[0]) for e in eight] == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="'images_per_task' parameter of explain_dataset must be an int >= 1"):
        explain_dataset(explainer, Callable(dense), images, out=tmp_path / "c", images_per_task=0)
