"""The explainer runtime in real processes on 127.0.0.1 (issue 21's must-hold list).

One MLServer process serves the trained demo CNN from ONNX (the predictor: ``perturbx serve
predictor/model-settings.json``, the ONNX runtime of tests/servers/mlserver_onnx); a second one,
``perturbx serve`` with the perturbx runtime, serves every explainer configuration below.
Proxies in this process stand between them where a test needs the predictor to fail, to be
slow or to ask for a token (tests/servers/fault_proxy.py).
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from types import SimpleNamespace

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable, Remote
from perturbx.serving.client import post, read_response, request_body

from .servers import serving_models
from .servers.explainer_process import find_perturbx_serve, onnx_predictor, serve_explainers, serve_files
from .servers.fault_proxy import FaultProxy
from .servers.mlserver_process import export_onnx, free_port, require

TOKEN = "tok-serving-5e0c2b9a41d7"        # fake secrets that must never be shown
WRONG_TOKEN = "wrong-serving-token-8f31c"
TOKEN_ENV = "PERTURBX_TEST_PREDICTOR_TOKEN"
RISE_PARAMS = {"n_masks": 64, "grid_size": 5, "random_state": 0}
SEG = np.arange(16).reshape(4, 4).repeat(4, axis=0).repeat(4, axis=1)  # 16 squares of 4 x 4 pixels
CLASSES = {"kind": "class", "index": [1, 2], "output": "logits"}
HEADS = {"kind": "callable", "fn": "tests.servers.serving_models:heads", "batch_size": 16, "sample_shape": [3, 16, 16]}
DETECTOR = {"kind": "callable", "fn": "tests.servers.serving_models:detector", "batch_size": 16,
            "sample_shape": [3, 32, 32]}
#: every black-box method on the multi-output toy model (name -> method, params); D-RISE on the toy detector
METHODS = {
    "m-occlusion": ("occlusion", {"window": 4, "stride": 4}),
    "m-c2f": ("c2f_occlusion", {"window": 4, "stride": 2}),
    "m-rise": ("rise", {"n_masks": 32, "grid_size": 4}),
    "m-lime": ("lime", {"n_samples": 48, "segmentation": SEG.tolist()}),
    "m-kernelshap": ("kernelshap", {"n_samples": 48, "segmentation": SEG.tolist()}),
    "m-shapley": ("perturbx.explainers.shapley_sampling:ShapleySampling", {"n_samples": 64,
                                                                            "segmentation": SEG.tolist()}),
}


def remote(url: str, **kwargs) -> dict:
    """The predictor (demo CNN on MLServer, or a proxy in front of it) as the explainer's model."""
    return {"url": url, "model": "demo-cnn", "batch_size": 8, "concurrency": 2, "sample_shape": [3, 64, 64], **kwargs}


def rise_config(model: dict, **limits) -> dict:
    return {"method": "rise", "params": RISE_PARAMS, "model": model, "limits": limits}


def configs(predictor: str, proxies: SimpleNamespace) -> dict[str, dict]:
    out = {
        "rise": rise_config(remote(proxies.plain.url), max_queries=200, max_queue=8),
        "rise-nocache": rise_config(remote(predictor), cache_size=0, max_concurrency=4, max_queue=32, deadline_s=600),
        "rise-flaky": rise_config(remote(proxies.flaky.url, retries=5, backoff=0.01, timeout=20)),
        "rise-down": rise_config(remote(f"http://127.0.0.1:{free_port()}", retries=2, backoff=0.01, timeout=5)),
        "rise-budget": rise_config(remote(predictor), max_queries=40),
        "rise-partial": rise_config(remote(predictor), max_queries=40, on_budget="partial"),
        "rise-deadline": rise_config(remote(proxies.slow_deadline.url), deadline_s=1.0),
        "busy": rise_config(remote(proxies.slow_busy.url), max_concurrency=1, max_queue=0, cache_size=0),
        "rise-token-env": rise_config(remote(proxies.token.url, token_env=TOKEN_ENV)),
        "rise-token-config": rise_config(remote(proxies.token.url, token=TOKEN)),
        "rise-token-wrong": rise_config(remote(proxies.token.url, token=WRONG_TOKEN, retries=0)),
        "heads-rise": {"method": "rise", "params": {"n_masks": 32, "grid_size": 4}, "model": HEADS,
                       "target": CLASSES},
        "heads-margin": {"method": "occlusion", "params": {"window": 4, "stride": 4}, "model": HEADS,
                         "target": {"kind": "function", "fn": "tests.servers.serving_models:margin"},
                         "allow_request_target": False},
        "m-drise": {"method": "drise", "params": {"n_masks": 32, "grid_size": 4, "min_score": 0.1}, "model": DETECTOR},
    }
    for name, (method, params) in METHODS.items():
        out[name] = {"method": method, "params": params, "model": HEADS, "target": CLASSES}
    return out


@pytest.fixture(scope="session")
def pair(tmp_path_factory):
    """The predictor (MLServer, demo CNN from ONNX), the proxies and the explainer process (perturbx serve)."""
    require(find_perturbx_serve(), "the MLServer venv with perturbx")
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    from perturbx.datasets import make_shapes
    from perturbx.models import load_demo_model

    torch.set_num_threads(1)
    net = load_demo_model().eval()
    images = make_shapes(34, random_state=21).images
    root = tmp_path_factory.mktemp("serving")
    path = export_onnx(net, images[0].shape, root / "demo.onnx")
    with ExitStack() as stack:
        settings = onnx_predictor(path, root / "predictor" / "demo-cnn")  # perturbx serve, as the README does
        predictor, _ = stack.enter_context(serve_files([settings], root / "predictor"))
        proxies = SimpleNamespace(
            plain=FaultProxy(predictor), flaky=FaultProxy(predictor, fail_rate=0.3),
            slow_deadline=FaultProxy(predictor, delay_s=0.5), slow_busy=FaultProxy(predictor, delay_s=0.5),
            token=FaultProxy(predictor, require_token=TOKEN))
        for proxy in vars(proxies).values():
            stack.enter_context(proxy)
        url, log = stack.enter_context(serve_explainers(configs(predictor, proxies), root / "explainer",
                                                        env={TOKEN_ENV: TOKEN}))
        yield SimpleNamespace(url=url, log=log, predictor=predictor, onnx=path, images=images, proxies=proxies)


def explain(pair, name: str, x: np.ndarray, **params) -> tuple[int, dict]:
    return post(pair.url, name, request_body(x, input_name="image", **params))


def served(pair, name: str, x: np.ndarray, **params) -> dict:
    status, answer = explain(pair, name, x, **params)
    assert status == 200, answer
    return read_response(answer)


def in_process_remote(url: str) -> Remote:
    """The explainer's adapter, in this process (same batching, so the same float32 sums)."""
    return Remote(url, "demo-cnn", batch_size=8, concurrency=2, sample_shape=(3, 64, 64))


_checks = iter(range(65, 200))


def assert_serving(pair) -> None:
    """The runtime still answers (after an error): a new request to "rise" (a budget not asked before, so not
    from the cache) gets its map."""
    out = served(pair, "rise", pair.images[33], max_queries=next(_checks))
    assert out["attributions"].shape == (1, 1, 64, 64) and out["parameters"]["cached"] is False


# -- the same map as in-process ---------------------------------------------------------------------------
def test_served_map_equals_the_map_in_process_through_remote_and_on_the_local_model(pair):
    from perturbx.adapters.onnx_runtime import ONNX

    x = pair.images[0]
    out = served(pair, "rise", x)
    via_remote = perturbx.RISE(**RISE_PARAMS).explain(in_process_remote(pair.predictor), x)
    local = perturbx.RISE(**RISE_PARAMS).explain(ONNX(pair.onnx, batch_size=16), x)  # Remote's batch: 8 x 2
    np.testing.assert_array_equal(out["attributions"][0, 0], via_remote.attributions)
    np.testing.assert_allclose(out["attributions"][0, 0], local.attributions, rtol=0, atol=1e-6)
    assert out["targets"].tolist() == [via_remote.targets.tolist()] == [local.targets.tolist()]
    np.testing.assert_array_equal(out["scores"][0], np.atleast_1d(via_remote.scores))
    assert out["n_queries"].tolist() == [via_remote.n_queries] == [65]
    assert out["converged"].tolist() == [True] and out["seconds"][0] > 0
    params = out["parameters"]
    assert params["method"] == "RISE" and params["params"]["n_masks"] == 64 and params["params"]["random_state"] == 0
    assert params["cached"] is False and params["max_queries"] == 200 and params["perturbx_version"]


def test_a_batch_of_samples_and_request_targets_give_each_sample_its_own_map(pair):
    xs = pair.images[1:3]
    out = served(pair, "rise", xs, target=[0, 3])
    assert out["attributions"].shape == (2, 2, 64, 64) and out["targets"].tolist() == [[0, 3], [0, 3]]
    for x, maps in zip(xs, out["attributions"], strict=True):
        want = perturbx.RISE(**RISE_PARAMS).explain(in_process_remote(pair.predictor), x, target=[0, 3])
        np.testing.assert_array_equal(maps, want.attributions)


def test_a_repeated_request_is_answered_from_the_cache_without_the_predictor(pair):
    x = pair.images[3]
    first = served(pair, "rise", x, target=1)
    asked = pair.proxies.plain.n_requests
    again = served(pair, "rise", x, target=1)
    assert pair.proxies.plain.n_requests == asked  # the predictor was not asked again
    assert again["parameters"]["cached"] is True and first["parameters"]["cached"] is False
    for name in ("attributions", "targets", "scores", "n_queries"):
        np.testing.assert_array_equal(again[name], first[name])
    other = served(pair, "rise", x, target=2)  # other options: another key
    assert other["parameters"]["cached"] is False and pair.proxies.plain.n_requests > asked


def test_metadata_describes_the_input_and_outputs(pair):
    with urllib.request.urlopen(f"{pair.url}/v2/models/rise", timeout=30) as resp:
        meta = json.loads(resp.read())
    assert meta["inputs"][0]["shape"] == [-1, 3, 64, 64] and meta["inputs"][0]["datatype"] == "FP32"
    assert [o["name"] for o in meta["outputs"]][:3] == ["attributions", "targets", "scores"]


# -- every black-box method, every target kind -------------------------------------------------------------------
def reference(method: str, params: dict, model, x: np.ndarray, target=None):
    """The explanation in this process with the runtime's settings (random_state 0 where the method takes one)."""
    import inspect

    from perturbx.serving.models import explainer_class

    cls = explainer_class(method)
    kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in params.items()}
    if "random_state" in inspect.signature(cls).parameters:
        kwargs.setdefault("random_state", 0)
    return cls(**kwargs).explain(model, x, target)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_black_box_method_equals_its_explanation_in_process(pair, name):
    from perturbx.targets import Class

    x = np.random.default_rng(3).random((3, 16, 16), dtype=np.float32)
    out = served(pair, name, x)
    method, params = METHODS[name]
    want = reference(method, params, Callable(serving_models.heads, batch_size=16), x, Class([1, 2], output="logits"))
    np.testing.assert_allclose(out["attributions"][0], want.attributions, rtol=1e-9, atol=1e-12)
    assert out["targets"].tolist() == [[1, 2]] and out["n_queries"].tolist() == [want.n_queries]


def test_detections_are_explained_by_drise(pair):
    x = np.random.default_rng(4).random((3, 32, 32), dtype=np.float32)
    out = served(pair, "m-drise", x)
    want = reference("drise", {"n_masks": 32, "grid_size": 4, "min_score": 0.1},
                     Callable(serving_models.detector, batch_size=16), x)
    np.testing.assert_allclose(out["attributions"][0], want.maps(), rtol=1e-9, atol=1e-12)
    assert out["targets"].shape == (1, len(want.maps()))


@pytest.mark.parametrize("spec", [
    {"kind": "output", "index": 3, "output": "logits"},
    {"kind": "region", "mask": (SEG < 4).astype(int).tolist(), "channel": [0, 2], "output": "dense"},
    {"kind": "similarity", "reference": np.linspace(-1, 1, 8).tolist(), "output": "embedding"},
    {"kind": "detection", "box": [8, 6, 15, 14]},
    {"kind": "class", "index": 0, "output": "logits", "score": "log_odds"},
], ids=lambda spec: spec["kind"] + ("-log-odds" if "score" in spec else ""))
def test_every_target_kind_from_a_request_equals_its_explanation_in_process(pair, spec):
    from perturbx.serving.specs import parse_target

    x = np.random.default_rng(5).random((3, 16, 16), dtype=np.float32)
    out = served(pair, "heads-rise", x, target=spec)
    want = reference("rise", {"n_masks": 32, "grid_size": 4}, Callable(serving_models.heads, batch_size=16), x,
                     parse_target(spec, "spec"))
    np.testing.assert_allclose(out["attributions"][0], want.maps(), rtol=1e-9, atol=1e-12)


def test_a_function_target_is_configured_and_a_request_cannot_change_a_fixed_target(pair):
    from perturbx.targets import Function

    x = np.random.default_rng(6).random((3, 16, 16), dtype=np.float32)
    out = served(pair, "heads-margin", x)
    want = reference("occlusion", {"window": 4, "stride": 4}, Callable(serving_models.heads, batch_size=16), x,
                     Function(serving_models.margin))
    np.testing.assert_allclose(out["attributions"][0], want.maps(), rtol=1e-9, atol=1e-12)
    status, answer = explain(pair, "heads-margin", x, target=1)
    assert status == 400 and "allow_request_target is false" in answer["error"]
    status, answer = explain(pair, "heads-rise", x, target={"kind": "function", "fn": "os:getcwd"})
    assert status == 400 and "cannot name code to import" in answer["error"]


# -- faults ------------------------------------------------------------------------------------------------------
def test_a_predictor_failing_30_percent_of_requests_gives_the_same_map(pair):
    xs = pair.images[4:8]
    flaky = pair.proxies.flaky
    out = served(pair, "rise-flaky", xs)
    for x, maps in zip(xs, out["attributions"], strict=True):
        want = perturbx.RISE(**RISE_PARAMS).explain(in_process_remote(pair.predictor), x)
        np.testing.assert_array_equal(maps[0], want.attributions)
    failed = sum(flaky.failures.values())
    assert flaky.n_distinct == 1 + 4 * 64 // 8  # the reference rows in one request, then 32 requests of 8 rows
    assert 0.15 <= failed / flaky.n_distinct <= 0.45, (failed, flaky.n_distinct)  # about 30 % failed once
    assert set(flaky.failures) == {"503", "500", "drop"}
    assert flaky.n_requests == flaky.n_distinct + failed  # each failure was retried once, and succeeded


def test_a_predictor_that_is_down_gives_a_clear_error_not_a_hang(pair):
    start = time.monotonic()
    status, answer = explain(pair, "rise-down", pair.images[5])
    assert status == 502
    assert "The predictor failed" in answer["error"] and "failed 3 times" in answer["error"]
    assert "check that the server is up" in answer["error"]
    assert time.monotonic() - start < 100  # the client's timeout is 120 s: an answer, not a hang
    assert_serving(pair)


def test_a_request_over_budget_is_answered_as_configured(pair):
    x = pair.images[6]
    status, answer = explain(pair, "rise-budget", x)  # 65 queries needed, 40 allowed: an error
    assert status == 422 and "max_queries=40" in answer["error"] and "RISE needs 64" in answer["error"]
    out = served(pair, "rise-partial", x)  # the same budget, configured to answer with what it has
    assert out["n_queries"].tolist() == [40] and out["converged"].tolist() == [False]
    assert out["parameters"]["budget_exhausted"] is True and np.isfinite(out["estimated_error"]).all()
    assert np.abs(out["attributions"]).max() > 0
    status, answer = explain(pair, "rise-budget", x, max_queries=400)  # a request may not raise the budget
    assert status == 400 and "above this explainer's limit (40)" in answer["error"]
    smaller = served(pair, "rise-partial", x, max_queries=20)
    assert smaller["n_queries"].tolist() == [20] and smaller["parameters"]["max_queries"] == 20
    assert_serving(pair)


def test_a_request_past_its_deadline_is_answered_504_and_stops_querying(pair):
    slow = pair.proxies.slow_deadline
    status, answer = explain(pair, "rise-deadline", pair.images[7])  # 9 predictor requests of 0.5 s, 1 s allowed
    assert status == 504 and "deadline" in answer["error"]
    time.sleep(2.0)  # the explanation stops at its next model call
    assert slow.n_requests < 1 + 64 // 8  # it did not run on to the end
    status, answer = explain(pair, "rise-deadline", pair.images[7], deadline_s=5.0)
    assert status == 400 and "above this explainer's limit (1.0)" in answer["error"]
    assert_serving(pair)


@pytest.mark.parametrize("body, status, match", [
    ({"inputs": [{"name": "image", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.5] * 3072}]}, 400,
     r"samples of shape \[3, 32, 32\]; the model takes \[3, 64, 64\]"),
    ({"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "UINT8", "data": [1] * 12288}]}, 400,
     "datatype 'UINT8'.*Raw integer pixels are refused"),
    ({"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "BYTES", "data": ["a"] * 12288}]}, 400,
     "datatype 'BYTES'"),
    ({"inputs": [{"name": "image", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.5] * 100}]}, 400,
     r"100 values but its shape \[1, 3, 64, 64\] needs 12288"),
    ({"inputs": []}, 400, "no input tensor"),
    ({"id": "no-inputs"}, 422, "inputs"),
    ({"inputs": [{"name": "image", "shape": [17, 3, 64, 64], "datatype": "FP32", "data": [0.5] * 17 * 12288}]}, 413,
     "holds 17 samples; send 1 to 16"),
    ({"inputs": [{"name": "image", "shape": [3, 64, 64], "datatype": "FP32", "data": [0.5] * 12288}],
      "parameters": {"target": {"kind": "mystery"}}}, 400, "kind 'mystery'"),
    ({"inputs": [{"name": "image", "shape": [3, 64, 64], "datatype": "FP32", "data": [0.5] * 12288}],
      "parameters": {"target": 9}}, 400, "9"),
], ids=["shape", "uint8", "bytes", "short-data", "no-input", "missing-inputs", "too-many", "target-kind",
        "class-out-of-range"])
def test_malformed_requests_get_a_4xx_that_names_the_problem(pair, body, status, match):
    got, answer = post(pair.url, "rise", body)
    text = json.dumps(answer)
    assert got == status, text
    assert __import__("re").search(match, text), text
    assert_serving(pair)


def test_requests_beyond_the_concurrency_limit_are_refused_503_not_queued_forever(pair):
    xs = pair.images[8:12]
    with ThreadPoolExecutor(len(xs)) as pool:
        answers = list(pool.map(lambda x: explain(pair, "busy", x), xs))
    statuses = sorted(s for s, _ in answers)
    assert statuses[0] == 200 and statuses[-1] == 503, statuses  # one slot, no queue: the others are refused
    assert all("busy" in a["error"] for s, a in answers if s == 503)
    assert_serving(pair)


# -- load ----------------------------------------------------------------------------------------------------------
def test_32_concurrent_requests_give_the_maps_of_sequential_runs(pair):
    xs = pair.images[:32]
    sequential = [served(pair, "rise-nocache", x)["attributions"] for x in xs]
    with ThreadPoolExecutor(32) as pool:
        concurrent = list(pool.map(lambda x: served(pair, "rise-nocache", x)["attributions"], xs))
    for seq, con in zip(sequential, concurrent, strict=True):
        np.testing.assert_array_equal(con, seq)
    assert len({m.tobytes() for m in sequential}) == 32  # 32 different maps


# -- auth --------------------------------------------------------------------------------------------------------
def test_the_bearer_token_reaches_the_predictor_and_never_appears_in_logs_errors_or_responses(pair):
    x = pair.images[12]
    want = perturbx.RISE(**RISE_PARAMS).explain(in_process_remote(pair.predictor), x).attributions
    texts = []
    for name in ("rise-token-env", "rise-token-config"):  # from the environment, from the configuration
        status, answer = explain(pair, name, x)
        assert status == 200, answer
        np.testing.assert_array_equal(read_response(answer)["attributions"][0, 0], want)
        texts.append(json.dumps(answer))
    unauthorized = pair.proxies.token.n_unauthorized
    status, answer = explain(pair, "rise-token-wrong", x)  # the proxy echoes the header it got in its 401 body
    assert status == 502 and "HTTP 401" in answer["error"] and "***" in answer["error"]
    assert pair.proxies.token.n_unauthorized == unauthorized + 1
    texts.append(json.dumps(answer))
    for name in ("rise-token-env", "rise-token-config", "rise-token-wrong"):
        with urllib.request.urlopen(f"{pair.url}/v2/models/{name}", timeout=30) as resp:
            texts.append(resp.read().decode())
    texts.append(pair.log.read_text())
    for text in texts:
        assert TOKEN not in text and WRONG_TOKEN not in text
    assert "rise-token-wrong: HTTP 502" in texts[-1]  # the error was logged, without the token
