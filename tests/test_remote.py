"""Remote adapter against a real MLServer process and against a local server that misbehaves."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import ssl
import subprocess
import sys

import numpy as np
import pytest

from perturbx import RISE, Occlusion, QueryBudgetError
from perturbx.adapters import Callable
from perturbx.adapters.remote import MalformedResponseError, Remote, RemoteError

from .servers.faulty_server import FaultyServer
from .servers.mlserver_process import export_onnx, find_mlserver, require, serve_onnx

SHAPE = (3, 8, 8)
TOKEN = "tok-3f9a1c77d2e84b6a"  # a fake secret that must never be printed


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(3, int(np.prod(SHAPE))))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).random(SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def local(weights) -> Callable:
    """The faulty server's model, in-process."""
    return Callable(lambda b: b.reshape(len(b), -1).astype(np.float64) @ weights.T, batch_size=16)


def same_chunks(model: Callable, remote: Remote) -> Callable:
    """``model`` fed the same chunks as ``remote`` (RISE's float32 sums depend on the chunking)."""
    return Callable(model.fn, batch_size=remote.batch_size)


@pytest.fixture(scope="module")
def server(weights):
    with FaultyServer(weights, slow_seconds=0.6) as srv:
        yield srv


def rise() -> RISE:
    return RISE(n_masks=48, grid_size=3, random_state=0)


# -- a real MLServer ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlserver(tmp_path_factory):
    """MLServer on 127.0.0.1 serving the demo CNN (exported to ONNX) as "demo-cnn"; yields (url, onnx path, image)."""
    require(find_mlserver())
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    models = pytest.importorskip("perturbx.models")
    datasets = pytest.importorskip("perturbx.datasets")
    torch.manual_seed(0)
    net = models.DemoCNN().eval()
    img = datasets.make_shapes(1, random_state=5).images[0]
    root = tmp_path_factory.mktemp("mlserver")
    path = export_onnx(net, img.shape, root / "demo.onnx")
    with serve_onnx(path, root / "server") as url:
        yield url, path, img


def test_explanations_through_mlserver_equal_the_model_in_process(mlserver):
    from perturbx.adapters.onnx_runtime import ONNX

    url, path, img = mlserver
    remote = Remote(url, "demo-cnn", batch_size=8, concurrency=4)
    in_process = ONNX(path, batch_size=32)
    for explainer in (RISE(n_masks=64, grid_size=5, random_state=0), Occlusion(window=16, stride=8)):
        got, want = explainer.explain(remote, img), explainer.explain(in_process, img)
        np.testing.assert_array_equal(got.targets, want.targets)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.attributions, want.attributions, rtol=0, atol=1e-6)
    assert remote.n_sent == remote.n_queries > 0 and remote.n_requests >= remote.n_sent / 8


def test_mlserver_with_a_cache_is_not_asked_again(mlserver, tmp_path):
    url, _, img = mlserver
    first = Remote(url, "demo-cnn", batch_size=16, concurrency=2, cache_dir=tmp_path)
    want = rise().explain(first, img)
    again = Remote(url, "demo-cnn", batch_size=8, concurrency=3, cache_dir=tmp_path)  # other batching, same rows
    got = rise().explain(again, img)
    assert again.n_sent == 0 and again.n_cached == want.n_queries
    np.testing.assert_allclose(got.attributions, want.attributions, rtol=1e-6)  # other chunks: float32 sums differ


# -- faults --------------------------------------------------------------------------------------------------
def test_faults_are_retried_and_the_result_equals_the_fault_free_one(server, local, image):
    flaky = Remote(server.url, "flaky", batch_size=4, concurrency=4, timeout=0.3, retries=4, backoff=0.01)
    got = rise().explain(flaky, image)
    want = rise().explain(same_chunks(local, flaky), image)
    np.testing.assert_allclose(got.attributions, want.attributions, rtol=1e-12, atol=0)
    assert set(server.failures) == {"503", "drop", "slow"}  # every kind of fault happened
    assert flaky.n_retries == sum(server.failures.values()) > 0
    assert flaky.n_requests == 1 + 48 // 4  # the reference row, then 48 masked rows in requests of 4


def test_slow_answers_within_the_timeout_complete(server, local, image):
    slow = Remote(server.url, "slowok", batch_size=8, concurrency=4, timeout=5)
    want = rise().explain(same_chunks(local, slow), image).attributions
    np.testing.assert_allclose(rise().explain(slow, image).attributions, want, rtol=1e-12)
    assert slow.n_retries == 0


def test_requests_run_concurrently(weights, image):
    with FaultyServer(weights, slow_seconds=2.0) as srv:  # "slowok" answers after 0.2 s
        Remote(srv.url, "slowok", batch_size=2, concurrency=4).predict(np.stack([image] * 8))
        assert srv.max_in_flight == 4
    with FaultyServer(weights, slow_seconds=0.5) as srv:
        Remote(srv.url, "slowok", batch_size=2, concurrency=1).predict(np.stack([image] * 6))
        assert srv.max_in_flight == 1


def test_giving_up_after_retries(server, image, caplog):
    never = Remote(server.url, "always503", batch_size=4, retries=2, backoff=0.0)
    with caplog.at_level(logging.WARNING, logger="perturbx.adapters.remote"), \
            pytest.raises(RemoteError, match="always503/infer failed 3 times.*HTTP 503.*Raise retries=") as info:
        never.predict(image[None])
    assert info.value.status == 503 and never.n_retries == 2
    assert caplog.text.count("retry") == 2


@pytest.mark.parametrize("name, match", [
    ("html", "body that is not JSON"),
    ("no-outputs", "field 'outputs' must be a non-empty list"),
    ("bad-shape", r"field 'outputs\[0\].shape' must be a list of non-negative ints. Got 'n by k'"),
    ("wrong-rows", r"outputs\[0\].shape=\[5, 3\] for a request of 4 rows"),
    ("short-data", r"11 values in outputs\[0\].data but outputs\[0\].shape=\[4, 3\] needs 12"),
    ("strings", r"field 'outputs\[0\].datatype' must be one of"),
    ("nan", "returned 12 NaN or infinite scores"),
])
def test_garbage_answers_give_a_clear_error_never_a_map(server, image, name, match):
    model = Remote(server.url, name, batch_size=4, concurrency=2, retries=0)
    with pytest.raises(ValueError, match=match) as info:
        model.predict(np.stack([image] * 4))
    assert isinstance(info.value, MalformedResponseError) == (name != "nan")
    with pytest.raises(ValueError, match=f"{name}/infer|NaN"):
        rise().explain(model, image)


def test_a_4xx_fails_at_once_with_the_reason(server, image):
    model = Remote(server.url, "no-such-model", retries=5)
    with pytest.raises(RemoteError, match="HTTP 404.*Model no-such-model not found.*check the url, the model name"):
        model.predict(image[None])
    assert model.n_retries == 0


# -- security ------------------------------------------------------------------------------------------------
def test_tokens_never_appear_in_errors_logs_or_repr(server, image, monkeypatch, caplog):
    monkeypatch.setenv("PERTURBX_TEST_TOKEN", TOKEN)
    adapters = [Remote(server.url, "echo-auth", token_env="PERTURBX_TEST_TOKEN", retries=1, backoff=0),
                Remote(server.url, "echo-auth", headers={"Authorization": f"Bearer {TOKEN}"}, retries=1, backoff=0),
                Remote(server.url, "echo-auth-500", token_env="PERTURBX_TEST_TOKEN", retries=2, backoff=0),
                Remote(server.url, "echo-auth-500", headers={"X-Api-Key": TOKEN}, retries=2, backoff=0)]
    messages = []
    with caplog.at_level(logging.DEBUG):
        for adapter in adapters:
            with pytest.raises(RemoteError) as info:
                adapter.predict(image[None])
            messages += [str(info.value), repr(info.value), repr(adapter)]
    assert "***" in messages[0] and "HTTP 401" in messages[0] and "HTTP 500" in messages[6]
    assert "retry 1/2" in caplog.text and "***" in caplog.text
    for text in [*messages, caplog.text]:
        assert TOKEN not in text
    assert TOKEN not in repr(pickle.dumps(adapters[0]))  # token_env: read from the environment, never stored


def test_bearer_token_from_the_environment_is_sent(weights, image, local, monkeypatch):
    monkeypatch.setenv("PERTURBX_TEST_TOKEN", TOKEN)
    with FaultyServer(weights, require_token=TOKEN) as srv:
        ok = Remote(srv.url, "ok", token_env="PERTURBX_TEST_TOKEN")
        np.testing.assert_allclose(ok.predict(image[None]), local.predict(image[None]), rtol=1e-12)
        with pytest.raises(RemoteError, match="HTTP 401.*check headers= or token_env="):
            Remote(srv.url, "ok", headers={"Authorization": "Bearer wrong-token-123"}).predict(image[None])
    monkeypatch.delenv("PERTURBX_TEST_TOKEN")
    with pytest.raises(ValueError, match="token_env='PERTURBX_TEST_TOKEN'.*not set"):
        Remote("http://127.0.0.1:9", "ok", token_env="PERTURBX_TEST_TOKEN")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (needs the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def test_tls_is_verified_by_default(weights, image, local, certificate):
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with FaultyServer(weights, tls=tls) as srv:
        assert srv.url.startswith("https://")
        strict = Remote(srv.url, "ok", retries=3)
        with pytest.raises(RemoteError, match="TLS certificate verification failed.*verify='/path/to/ca.pem'"):
            strict.predict(image[None])
        assert strict.n_retries == 0
        trusted = Remote(srv.url, "ok", verify=str(cert))
        np.testing.assert_allclose(trusted.predict(image[None]), local.predict(image[None]), rtol=1e-12)


# -- cache, budget, plain JSON -------------------------------------------------------------------------------
def test_cache_serves_a_rerun_and_shared_rows_of_a_second_method(server, image, tmp_path):
    first = Remote(server.url, "ok", batch_size=8, cache_dir=tmp_path)
    e1 = rise().explain(first, image)
    rows_before = server.rows_scored
    rerun = Remote(server.url, "ok", batch_size=5, concurrency=2, cache_dir=tmp_path)
    e2 = rise().explain(rerun, image)
    assert server.rows_scored == rows_before and rerun.n_sent == 0 and rerun.n_cached == e1.n_queries
    np.testing.assert_allclose(e1.attributions, e2.attributions, rtol=1e-6)  # other chunks: float32 sums differ
    second = Occlusion(window=4, stride=4)
    e3 = second.explain(rerun, image)  # shares the unperturbed input with RISE
    assert rerun.n_cached == e1.n_queries + 1 and rerun.n_sent == e3.n_queries - 1
    other_model = Remote(server.url, "slowok", cache_dir=tmp_path)
    other_model.predict(image[None])
    assert other_model.n_sent == 1  # the key covers the model name


def test_query_budget_counts_rows_sent(server, image, tmp_path):
    budget = Remote(server.url, "ok", batch_size=8, max_queries=30)
    with pytest.raises(QueryBudgetError, match="max_queries=30"):
        rise().explain(budget, image)  # 49 rows
    cached = Remote(server.url, "ok", cache_dir=tmp_path)
    rise().explain(cached, image)
    free = Remote(server.url, "ok", cache_dir=tmp_path, max_queries=1)
    rise().explain(free, image)  # all from the cache
    assert free.n_sent == 0


def test_plain_json_endpoints(server, image, local):
    want = rise().explain(local, image).attributions
    tf_style = Remote(f"{server.url}/json", protocol="json", batch_size=4, concurrency=4)
    np.testing.assert_allclose(rise().explain(tf_style, image).attributions, want, rtol=1e-12)
    custom = Remote(f"{server.url}/custom", protocol="json", batch_size=16, concurrency=1,
                    request=lambda batch: {"x": {"pixels": batch.tolist()}},
                    response=lambda answer: answer["result"]["probs"])
    np.testing.assert_allclose(rise().explain(custom, image).attributions, want, rtol=1e-12)
    wrong = Remote(f"{server.url}/custom", protocol="json", request=lambda b: {"x": {"pixels": b.tolist()}})
    with pytest.raises(MalformedResponseError, match="no field 'predictions'.*Pass response="):
        wrong.predict(image[None])
    broken = Remote(f"{server.url}/json", protocol="json", response=lambda a: a["scores"])
    with pytest.raises(MalformedResponseError, match="response= could not read the answer.*KeyError"):
        broken.predict(image[None])


def test_without_orjson_the_standard_library_writes_the_same_values(server, image, local, monkeypatch):
    from perturbx.adapters.remote import dumps

    rows = np.random.default_rng(4).random((3, *SHAPE), dtype=np.float32)
    fast = dumps({"data": rows.ravel()})
    monkeypatch.setitem(sys.modules, "orjson", None)
    slow = dumps({"data": rows.ravel()})
    for body in (fast, slow):
        np.testing.assert_array_equal(np.asarray(json.loads(body)["data"], dtype=np.float32), rows.ravel())
    plain = Remote(server.url, "ok", batch_size=4, concurrency=4)
    np.testing.assert_allclose(rise().explain(plain, image).attributions,
                               rise().explain(same_chunks(local, plain), image).attributions, rtol=1e-12)


def test_pickled_adapter_works_in_another_process_state(server, image, local):
    model = Remote(server.url, "ok", batch_size=2, concurrency=2)
    model.predict(np.stack([image] * 4))  # starts the thread pool
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_allclose(clone.predict(image[None]), local.predict(image[None]), rtol=1e-12)
    model.close()


def test_remote_in_a_parallel_dataset_run_with_a_shared_cache(server, local, tmp_path):
    from perturbx.dataset_runs import explain_dataset

    images = np.random.default_rng(6).random((4, *SHAPE), dtype=np.float32)
    remote = Remote(server.url, "ok", batch_size=4, concurrency=4, cache_dir=tmp_path / "cache")
    res = explain_dataset(rise(), remote, images, out=tmp_path / "run", n_jobs=2)  # loky processes
    want = [rise().explain(same_chunks(local, remote), x).attributions for x in images]
    np.testing.assert_allclose(res.attributions(), np.stack(want), rtol=1e-12)
    again = Remote(server.url, "ok", batch_size=4, concurrency=4, cache_dir=tmp_path / "cache")
    rise().explain(again, images[3])
    assert again.n_sent == 0  # the workers' answers are in the shared cache


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="'model' parameter of Remote must be the model's name"):
        Remote("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="'protocol' parameter of Remote must be one of"):
        Remote("http://127.0.0.1:9", "m", protocol="grpc")
    with pytest.raises(ValueError, match="'url' parameter of Remote must be an http:// or https:// URL"):
        Remote("ftp://127.0.0.1/x", "m")
    with pytest.raises(ValueError, match="must not carry credentials.*headers="):
        Remote(f"http://user:{TOKEN}@127.0.0.1:9", "m")
    try:
        Remote(f"http://user:{TOKEN}@127.0.0.1:9", "m")
    except ValueError as exc:
        assert TOKEN not in str(exc)
    with pytest.raises(ValueError, match="'request' and 'response' parameters of Remote are for protocol='json'"):
        Remote("http://127.0.0.1:9", "m", response=lambda a: a)
    with pytest.raises(ValueError, match="'batch_size' parameter of Remote must be an int >= 1"):
        Remote("http://127.0.0.1:9", "m", batch_size=0)
    with pytest.raises(ValueError, match="'timeout' parameter of Remote must be a real number"):
        Remote("http://127.0.0.1:9", "m", timeout=0)
    with pytest.raises(TypeError, match="'headers' parameter of Remote must be a dict of str to str"):
        Remote("http://127.0.0.1:9", "m", headers={"Authorization": 123})
    with pytest.raises(TypeError, match="'verify' parameter of Remote"):
        Remote("http://127.0.0.1:9", "m", verify=1.5)
    with pytest.raises(ValueError, match=r"expects samples of shape \(3, 8, 8\)"):
        RISE(n_masks=4).explain(Remote("http://127.0.0.1:9", "m", sample_shape=SHAPE), np.zeros((3, 4, 4)))


def test_named_outputs_of_a_detector_and_their_cache(server, tmp_path):
    """A KServe v2 answer with several output tensors (boxes, scores, labels) reaches the target as a dict,
    gives the map the same detector gives in-process, and is cached row by row with its shapes."""
    from perturbx import DRISE

    from .servers.toy_models import toy_detector

    x = np.random.default_rng(5).random((3, 32, 32), dtype=np.float32)
    remote = Remote(server.url, "detector", output_name=["boxes", "scores", "labels"], batch_size=8,
                    concurrency=2, cache_dir=tmp_path)
    raw = remote.predict_raw(x[None])
    assert sorted(raw) == ["boxes", "labels", "scores"] and raw["boxes"].shape == (1, 2, 4)
    explainer = DRISE(n_masks=64, grid_size=4, random_state=0, min_score=0.1)
    e = explainer.explain(remote, x)
    here = explainer.explain(Callable(toy_detector, batch_size=remote.batch_size), x)
    np.testing.assert_allclose(e.attributions, here.attributions, rtol=1e-6, atol=1e-9)
    sent = remote.n_sent
    again = explainer.explain(remote, x)
    assert remote.n_sent == sent and remote.n_cached >= 65
    np.testing.assert_array_equal(again.attributions, e.attributions)
    with pytest.raises(MalformedResponseError, match="without an output named 'masks'"):
        Remote(server.url, "detector", output_name=["boxes", "masks"]).predict_raw(x[None])


def test_one_budget_for_every_copy_thread_and_worker_process(mlserver, tmp_path):
    """max_queries counts the rows every copy of a Remote sends: compare's per-thread copies and
    explain_dataset's worker processes share it (before, each copy had its own count: n_jobs times over)."""
    from perturbx import compare
    from perturbx.dataset_runs import explain_dataset

    url, _, img = mlserver
    images = np.stack([img, img[:, ::-1].copy(), img[:, :, ::-1].copy(), 1 - img])
    per_image = 1 + 16                                     # RISE(n_masks=16): the reference query and 16 masks
    threads = Remote(url, "demo-cnn", batch_size=8, concurrency=1, max_queries=2 * per_image + 4)
    with pytest.raises(QueryBudgetError, match="by every copy of it"):
        compare(threads, images, {"rise": RISE(n_masks=16, grid_size=3, random_state=0)}, metrics=[], n_jobs=2,
                targets=[0, 0, 0, 0])
    assert threads._budget.used <= 2 * per_image + 4
    limit = 3 * per_image                                   # three of the four images
    processes = Remote(url, "demo-cnn", batch_size=8, concurrency=1, max_queries=limit)
    res = explain_dataset(RISE(n_masks=16, grid_size=3, random_state=0), processes, images, out=tmp_path / "run",
                          n_jobs=2, images_per_task=1, on_error="skip", target=0)  # loky worker processes
    # two processes draw on one budget at once: the last images may both run out mid-way
    assert len(res.done) + len(res.errors) == 4 and len(res.done) >= 2 and len(res.errors) >= 1
    assert all("QueryBudgetError" in message for message in res.errors.values())
    assert processes._budget.used <= limit
