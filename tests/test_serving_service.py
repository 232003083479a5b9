"""perturbx.serving without a server: configuration, target specs, V2 messages, the service's bounds, the launcher.

The runtime in real MLServer processes is tested in tests/test_serving.py; here the same
service runs in this process on the toy models of tests/servers/serving_models.py.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable
from perturbx.cli import main as cli_main
from perturbx.serving import ConfigError, ExplanationService, ServingConfig, ServingError
from perturbx.serving.client import read_response, request_body
from perturbx.serving.errors import redact
from perturbx.serving.launcher import LaunchError, write_repository
from perturbx.serving.protocol import decode_request, encode_response
from perturbx.serving.specs import parse_target
from perturbx.targets import Class, Detection, Function, Output, Region, Similarity

from .servers import serving_models

HEADS = {"kind": "callable", "fn": "tests.servers.serving_models:heads", "batch_size": 16, "sample_shape": [3, 16, 16]}
SLOW = {**HEADS, "fn": "tests.servers.serving_models:slow_heads"}
CLASSES = {"kind": "class", "index": [1, 2], "output": "logits"}


def config(model: dict = HEADS, *, method: str = "rise", params: dict | None = None, **limits) -> ServingConfig:
    return ServingConfig.from_dict({"method": method, "params": params or {"n_masks": 32, "grid_size": 4},
                                    "model": model, "target": CLASSES, "limits": limits})


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


# -- configuration -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra, match", [
    ([], "must be an object with at least 'method' and 'model'"),
    ({"model": HEADS}, r"parameters.extra.method is missing"),
    ({"method": "rise", "model": HEADS, "colour": 1}, r"unknown field\(s\) \['colour'\]"),
    ({"method": "rise", "model": HEADS, "limits": {"on_budget": "maybe"}}, "on_budget must be one of"),
    ({"method": "rise", "model": HEADS, "limits": {"max_queries": 1}}, r"limits.max_queries must be an int >= 2"),
    ({"method": "rise", "model": HEADS, "limits": {"deadline_s": 0}}, "deadline_s must be a positive number"),
    ({"method": "rise", "model": HEADS, "limits": {"max_concurrency": 0}}, "max_concurrency must be an int >= 1"),
    ({"method": "rise", "model": {"url": "http://127.0.0.1:9"}}, r"parameters.extra.model.model is missing"),
    ({"method": "rise", "model": {"kind": "tensorflow"}}, "kind must be one of"),
    ({"method": "rise", "model": {"kind": "onnx"}}, r"model.path is missing"),
    ({"method": "rise", "model": {"url": "http://h:1", "model": "m", "token": "tok-abcdef123",
                                  "headers": {"Authorization": "Bearer x"}}}, "both 'token' and an Authorization"),
])
def test_invalid_configurations_name_the_field(extra, match):
    with pytest.raises(ConfigError, match=match):
        ServingConfig.from_dict(extra)


@pytest.mark.parametrize("extra, match", [
    ({"method": "no-such-method", "model": HEADS}, r"parameters.extra.method: Unknown method 'no-such-method'"),
    ({"method": "perturbx.adapters:Callable", "model": HEADS}, "is not a perturbx explainer class"),
    ({"method": "rise", "params": {"n_masks": 0}, "model": HEADS}, r"parameters.extra.params: The 'n_masks'"),
    ({"method": "rise", "params": {"max_queries": 10}, "model": HEADS}, "set the budget in parameters.extra.limits"),
    ({"method": "rise", "model": {**HEADS, "colour": 1}}, r"\['colour'\] that perturbx.adapters.Callable does not"),
    ({"method": "rise", "model": {**HEADS, "fn": "tests.servers.serving_models:nothing"}}, "has no attribute"),
    ({"method": "rise", "model": HEADS, "target": {"kind": "box"}}, "has kind 'box'"),
])
def test_configurations_that_fail_when_loaded_name_the_field(extra, match):
    with pytest.raises(ConfigError, match=match):
        ExplanationService(ServingConfig.from_dict(extra))


def test_the_fingerprint_covers_what_decides_an_answer_and_not_the_token():
    model = {"url": "http://h:1", "model": "m", "token": "t1-xyzw"}
    base = {"method": "rise", "params": {"n_masks": 8}, "model": model}
    same = {**base, "model": {**base["model"], "token": "t2-other"}, "limits": {"max_concurrency": 3}}
    other = {**base, "params": {"n_masks": 9}}
    fp = ServingConfig.from_dict(base).fingerprint()
    assert ServingConfig.from_dict(same).fingerprint() == fp != ServingConfig.from_dict(other).fingerprint()
    assert ServingConfig.from_dict(base).secrets() == ["t1-xyzw"]
    assert redact("sent Bearer t1-xyzw to h", ["t1-xyzw"]) == "sent Bearer *** to h"


# -- target specs --------------------------------------------------------------------------------------------
def test_target_specs_build_every_target_kind():
    assert parse_target(None, "t") is None and parse_target(3, "t") == 3 and parse_target("[1, 2]", "t") == [1, 2]
    built = [parse_target(spec, "t", allow_function=True) for spec in (
        CLASSES, {"kind": "output", "index": [[0, 1], 2]}, {"kind": "region", "mask": [[1, 0], [0, 1]]},
        {"kind": "similarity", "reference": [0.5, 1.0]}, {"kind": "detection", "box": [1, 2, 3, 4]},
        {"kind": "function", "fn": "tests.servers.serving_models:margin"})]
    assert [type(t) for t in built] == [Class, Output, Region, Similarity, Detection, Function]
    assert built[1].index == [(0, 1), 2] and built[5].fn is serving_models.margin


@pytest.mark.parametrize("spec, error, match", [
    ({"kind": "function", "fn": "os:getcwd"}, ValueError, "cannot name code to import"),
    ("{not json", ValueError, "must be JSON"),
    ({"index": 1}, TypeError, "an object with a 'kind'"),
    ({"kind": "class", "colour": 1}, TypeError, r"\['colour'\] that perturbx.targets.Class does not take"),
    ({"kind": "similarity", "reference": [[[1.0]]]}, ValueError, r"\(similarity\) is invalid"),
    (True, TypeError, "must be null, a class index"),
])
def test_bad_target_specs_are_refused(spec, error, match):
    with pytest.raises(error, match=match):
        parse_target(spec, "the request parameter 'target'")


# -- V2 messages -----------------------------------------------------------------------------------------------
def decode(payload: dict, **kwargs):
    options = {"input_name": None, "sample_ndim": 3, "sample_shape": (3, 16, 16), "max_batch": 4, **kwargs}
    return decode_request(payload, **options)


def test_requests_are_decoded_with_or_without_the_batch_axis():
    x = samples(2)
    got, params = decode(request_body(x, max_queries=50))
    np.testing.assert_array_equal(got, x)
    assert got.dtype == np.float32 and params == {"max_queries": 50}
    one = {"inputs": [{"name": "a", "shape": [3, 16, 16], "datatype": "FP64", "data": x[0].astype(float).tolist()}]}
    np.testing.assert_array_equal(decode(one)[0], x[:1])
    two = {"inputs": [{"name": "a", **request_body(x)["inputs"][0]}, {**request_body(x)["inputs"][0], "name": "b"}]}
    np.testing.assert_array_equal(decode(two, input_name="b")[0], x)


@pytest.mark.parametrize("change, status, match", [
    ({"shape": "2x3"}, 400, "a shape is a list of non-negative ints"),
    ({"shape": [2, 3, 16, 16, 1]}, 400, r"\(5 axes\); this explainer takes a batch \[N, \*sample\] of 4 axes"),
    ({"data": [[1, 2], [3]]}, 400, "not a \\(flat or nested\\) list of numbers"),
    ({"data": [float("nan")] * 1536}, 400, "1536 NaN or infinite values"),
    ({"datatype": "INT64"}, 400, "Raw integer pixels are refused"),
    ({"shape": [0, 3, 16, 16], "data": []}, 400, "holds 0 samples; send 1 to 4"),
])
def test_malformed_inputs_are_refused_by_name(change, status, match):
    tensor = {**request_body(samples(2))["inputs"][0], **change}
    with pytest.raises(ServingError, match=match) as info:
        decode({"inputs": [tensor]})
    assert info.value.status == status


def test_an_input_that_is_not_there_or_not_chosen_is_named():
    body = request_body(samples(1), input_name="pixels")
    with pytest.raises(ServingError, match=r"no input named 'image' \(its inputs: \['pixels'\]\)"):
        decode(body, input_name="image")
    two = {"inputs": body["inputs"] * 2}
    with pytest.raises(ServingError, match=r"has 2 inputs \['pixels', 'pixels'\]; this explainer reads one"):
        decode(two)


# -- the service -------------------------------------------------------------------------------------------------
def test_answers_equal_explain_many_and_are_encoded_as_v2():
    async def go():
        service = ExplanationService(config())
        x = samples(2)
        answer = await service.explain(x, service.options({}))
        body = encode_response(answer, model_name="m", model_version=None, request_id="r1",
                               fingerprint=service.fingerprint)
        service.close()
        return answer, body

    answer, body = run(go())
    for x, maps in zip(samples(2), answer.attributions, strict=True):
        want = perturbx.RISE(n_masks=32, grid_size=4, random_state=0).explain(
            Callable(serving_models.heads, batch_size=16), x, Class([1, 2], output="logits"))
        np.testing.assert_array_equal(maps, want.attributions)
    out = read_response(json.loads(json.dumps(body)))  # through JSON, as a client reads it
    np.testing.assert_array_equal(out["attributions"], answer.attributions)
    assert out["targets"].tolist() == [[1, 2], [1, 2]] and out["n_queries"].tolist() == [33, 33]
    assert out["parameters"]["params"]["random_state"] == 0 and out["parameters"]["method"] == "RISE"
    assert "estimated_error" not in out and out["converged"].dtype == bool


def test_identical_requests_share_one_explanation_and_the_cache_drops_the_oldest():
    async def go():
        service = ExplanationService(config(SLOW, cache_size=1))
        a, b = samples(1, seed=1), samples(1, seed=2)
        serving_models.calls.clear()
        first, twin = await asyncio.gather(service.explain(a, service.options({})),
                                           service.explain(a, service.options({})))
        calls_one = len(serving_models.calls)
        again = await service.explain(a, service.options({}))
        await service.explain(b, service.options({}))  # the cache holds one answer: a's goes
        await service.explain(a, service.options({}))
        service.close()
        return first, twin, again, calls_one, len(serving_models.calls), service.cache

    first, twin, again, calls_one, calls, cache = run(go())
    assert calls_one == 1 + 2  # the reference query, then 32 masks in 2 batches: once for both requests
    assert (first.cached, twin.cached, again.cached) == (False, True, True)
    np.testing.assert_array_equal(twin.attributions, first.attributions)
    assert calls == 3 * calls_one and (cache.hits, cache.misses) == (1, 3)  # the twin waited, not a hit


def test_a_busy_service_refuses_at_once_beyond_its_queue():
    async def go():
        service = ExplanationService(config(SLOW, max_concurrency=1, max_queue=1, cache_size=0))
        results = await asyncio.gather(*(service.explain(samples(1, seed=s), service.options({})) for s in range(3)),
                                       return_exceptions=True)
        service.close()
        return results

    first, queued, refused = run(go())
    assert not first.cached and not queued.cached  # one ran, one waited for its slot
    assert isinstance(refused, ServingError) and refused.status == 503
    assert "max_concurrency=1) and 1 requests are waiting (max_queue=1)" in refused.message


def test_a_deadline_answers_504_and_stops_the_model_calls():
    async def go():
        service = ExplanationService(config(SLOW, deadline_s=0.3, cache_size=0))
        serving_models.calls.clear()
        with pytest.raises(ServingError, match="did not finish within the request's deadline") as info:
            await service.explain(samples(1), service.options({}))
        while service.stats()["free_slots"] < 2:  # the slot comes back when its thread has stopped
            await asyncio.sleep(0.05)
        service.close()
        return info.value

    error = run(go())
    assert error.status == 504
    assert len(serving_models.calls) < 3  # the whole explanation needs 3 model calls


def test_the_budget_is_an_error_or_a_partial_answer_as_configured():
    async def go(cfg, params=None):
        service = ExplanationService(cfg)
        try:
            return await service.explain(samples(1), service.options(params or {}))
        finally:
            service.close()

    with pytest.raises(ServingError, match="needs more model queries than max_queries=20") as info:
        run(go(config(max_queries=20)))
    assert info.value.status == 422
    partial = run(go(config(max_queries=20, on_budget="partial")))
    assert partial.n_queries.tolist() == [20] and partial.converged.tolist() == [False]
    assert partial.budget_exhausted and np.isfinite(partial.estimated_error).all()
    lower = run(go(config(max_queries=40, on_budget="partial"), {"max_queries": 12}))
    assert lower.n_queries.tolist() == [12] and lower.max_queries == 12
    occlusion = config(method="occlusion", params={"window": 4, "stride": 2}, max_queries=20, on_budget="partial")
    with pytest.raises(ServingError, match="max_queries=20") as info:  # no tolerance: nothing partial to give
        run(go(occlusion))
    assert info.value.status == 422


@pytest.mark.parametrize("params, match", [
    ({"max_queries": 500}, r"max_queries=500 is above this explainer's limit \(100\)"),
    ({"max_queries": 1}, "'max_queries' must be an int >= 2"),
    ({"max_queries": 2.5}, "'max_queries' must be an int >= 2"),
    ({"deadline_s": -1}, "'deadline_s' must be a number > 0"),
    ({"deadline_s": 120}, r"deadline_s=120 is above this explainer's limit \(60.0\)"),
    ({"target": {"kind": "region", "mask": "all"}}, r"\(region\) is invalid"),
])
def test_request_options_outside_the_limits_are_refused(params, match):
    service = ExplanationService(config(max_queries=100))
    with pytest.raises(ServingError, match=match) as info:
        service.options(params)
    service.close()
    assert info.value.status == 400


def test_predictor_failures_are_502_with_the_token_blanked():
    token = "tok-unit-7d1e93ab55"
    service = ExplanationService(ServingConfig.from_dict({
        "method": "rise", "params": {"n_masks": 8},
        "model": {"url": f"http://127.0.0.1:9/?key={token}", "model": "m", "token": token, "retries": 0,
                  "sample_shape": [3, 16, 16]}}))
    with pytest.raises(ServingError) as info:
        run(service.explain(samples(1), service.options({})))
    service.close()
    assert info.value.status == 502 and "The predictor failed" in info.value.message
    assert token not in info.value.message


# -- the launcher ------------------------------------------------------------------------------------------------
def test_the_launcher_writes_mlservers_repository(tmp_path):
    explainer = tmp_path / "cfgs" / "explainer.json"
    explainer.parent.mkdir()
    explainer.write_text(json.dumps({"method": "rise", "model": {"kind": "onnx", "path": "model.onnx"}}))
    predictor = tmp_path / "pred" / "model-settings.json"
    predictor.parent.mkdir()
    predictor.write_text(json.dumps({"name": "demo-cnn", "implementation": "onnx_model.OnnxClassifier",
                                     "parameters": {"uri": "./model.onnx"}}))
    root = tmp_path / "repo"
    names = write_repository([explainer, predictor], root, host="127.0.0.1", http_port=9100, grpc_port=9101,
                             metrics_port=9102, workers=0)
    assert names == ["explainer", "demo-cnn"]
    settings = json.loads((root / "explainer" / "model-settings.json").read_text())
    assert settings["implementation"] == "perturbx.serving.PerturbxRuntime"
    assert settings["parameters"]["extra"]["base_dir"] == str(explainer.parent.resolve())
    assert (root / "demo-cnn").resolve() == predictor.parent.resolve()  # linked: its runtime's code is found there
    server = json.loads((root / "settings.json").read_text())
    assert (server["http_port"], server["parallel_workers"], server["host"]) == (9100, 0, "127.0.0.1")
    renamed = tmp_path / "pred" / "predictor.json"
    renamed.write_text(predictor.read_text().replace("demo-cnn", "demo-cnn-2"))
    write_repository([renamed], root, host="h", http_port=1, grpc_port=2, metrics_port=3, workers=0)
    pred = json.loads((root / "demo-cnn-2" / "model-settings.json").read_text())
    assert pred["parameters"]["uri"] == str(predictor.parent.resolve() / "model.onnx")  # copied: uri made absolute
    with pytest.raises(LaunchError, match="Two CONFIGs are named 'explainer'"):
        write_repository([explainer, explainer], root, host="h", http_port=1, grpc_port=2, metrics_port=3, workers=0)


def test_perturbx_serve_checks_its_configs_before_starting(tmp_path, capsys):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"method": "rise", "model": HEADS}))
    assert cli_main(["serve", str(good), "--dry-run", "--workdir", str(tmp_path / "repo"), "--port", "9200"]) == 0
    out = capsys.readouterr().out
    assert "models ['good'] at http://127.0.0.1:9200" in out and f"start {tmp_path / 'repo'}" in out
    assert (tmp_path / "repo" / "good" / "model-settings.json").is_file()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "rise", "model": HEADS, "limits": {"max_batch": 0}}))
    assert cli_main(["serve", str(bad), "--dry-run"]) == 2
    assert "perturbx serve: error: parameters.extra.limits.max_batch must be an int >= 1" in capsys.readouterr().err
    assert cli_main(["serve", str(tmp_path / "missing.json")]) == 2
    assert "CONFIG file(s) not found" in capsys.readouterr().err
