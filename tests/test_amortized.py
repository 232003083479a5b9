"""Amortized (FastSHAP): agreement with exact Shapley values, efficiency, cost, honesty, files, bad input.

One small explainer is trained once per session (3 x 3 players, 1,000 images of 32 x 32 shapes, about 24k
queries, half a minute of CPU) and saved; the tests load it. Its black box is a small CNN with global
average pooling whose logits are a smooth game of the patches, so a small explainer learns it in a few
epochs; the demo CNN's harder game (global max pooling) at full size is the benchmark's
(benchmarks/results/amortized.md).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import perturbx  # noqa: E402
from perturbx.adapters import Callable, Torch  # noqa: E402
from perturbx.amortized.game import grid_segments  # noqa: E402
from perturbx.amortized.train import pearson_rows  # noqa: E402
from perturbx.datasets import make_shapes  # noqa: E402
from perturbx.errors import QueryBudgetError  # noqa: E402
from perturbx.targets import Class, Output  # noqa: E402

from .conftest import SpyAdapter  # noqa: E402

PLAYERS = (3, 3)
SIDE = 32  # images (3, SIDE, SIDE)
#: the fit of the session's explainer
SETTINGS = {"n_images": 1000, "coalitions": 16, "validation": 12, "validation_samples": 512, "epochs": 6,
            "patience": 6, "batch_size": 16, "width": 8, "depth": 3, "random_state": 0, "progress": False}
HELD_OUT_SEED = 90_417  # DEMO_TEST_SEED: images neither trained nor validated on


def smooth_net(seed: int = 0) -> torch.nn.Module:
    """Random convolutions, global average pooling, a linear layer rescaled to standardised features: 4 classes.

    The rescaling (from 200 shapes images) spreads the top class over the four classes and
    makes the logits vary by a few units between images.
    """
    torch.manual_seed(seed)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    with torch.no_grad():
        features = net[:6](torch.from_numpy(make_shapes(200, size=SIDE, random_state=1).images))
        weight = net[6].weight * 3.0 / features.std(0)
        net[6].weight.copy_(weight)
        net[6].bias.copy_(-(weight @ features.mean(0)))
    return net


@pytest.fixture(scope="session")
def net():
    return smooth_net()


def logits(net, batch_size: int = 128) -> Torch:
    return Torch(net, batch_size=batch_size)


@pytest.fixture(scope="session")
def trained_path(net, tmp_path_factory):
    path = tmp_path_factory.mktemp("amortized") / "explainer.pt"
    images = make_shapes(SETTINGS["n_images"] + SETTINGS["validation"], size=SIDE, random_state=0).images
    perturbx.Amortized(PLAYERS, **SETTINGS).fit(logits(net), images).save(path)
    return path


@pytest.fixture
def explainer(trained_path):
    return perturbx.Amortized.load(trained_path)


@pytest.fixture(scope="session")
def held_out():
    return make_shapes(20, size=SIDE, random_state=HELD_OUT_SEED).images


@pytest.fixture(scope="session")
def exact_shapley(net, held_out):
    """Exact Shapley values of the top class (2**9 coalitions each: KernelSHAP enumerates them)."""
    found = perturbx.KernelSHAP(2 ** 9, grid_segments((SIDE, SIDE), PLAYERS), baseline=0.0).explain_many(
        logits(net), held_out)
    assert all(e.exact for e in found)
    return found


# -- what it must hold ---------------------------------------------------------------------------------------
def test_a_heavier_top_class_is_fitted_closer_at_the_other_classes_expense(net):
    """top_class_weight=10 brings each image's top class nearer its exact Shapley values, and the others farther."""
    from perturbx.targets import Class

    held = make_shapes(24, size=SIDE, random_state=HELD_OUT_SEED).images
    exact = np.stack([np.stack([e.segment_weights[0] for e in perturbx.KernelSHAP(
        2 ** 9, grid_segments((SIDE, SIDE), PLAYERS), baseline=0.0).explain_many(logits(net), held, [Class(c)] * 24)])
        for c in range(4)], axis=1)  # (n, 4, M)
    is_top = np.arange(4)[None] == logits(net).predict(held).argmax(1)[:, None]
    images = make_shapes(300 + SETTINGS["validation"], size=SIDE, random_state=0).images
    errors = {}
    for weight in (1.0, 10.0):
        fit = perturbx.Amortized(PLAYERS, **{**SETTINGS, "n_images": 300, "epochs": 4, "patience": 4},
                                 top_class_weight=weight).fit(logits(net), images)
        phi = np.stack([e.segment_weights for e in fit.explain_many(logits(net), held, [Class([0, 1, 2, 3])] * 24)])
        squared = ((phi - exact) ** 2).sum(-1)
        errors[weight] = squared[is_top].mean(), squared[~is_top].mean()
    assert errors[10.0][0] < 0.95 * errors[1.0][0]
    assert errors[10.0][1] > 1.02 * errors[1.0][1]


def test_target_weights_give_the_top_class_its_weight_at_mean_one():
    from perturbx.amortized.train import target_weights

    full = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    w = target_weights(full, 4.0)
    np.testing.assert_allclose(w, np.array([[1, 4, 1], [4, 1, 1]]) / 2.0)
    assert target_weights(full, 1.0) is None  # FastSHAP's objective, unweighted


def test_values_agree_with_exact_shapley_values_on_held_out_images(explainer, net, held_out, exact_shapley):
    got = explainer.explain_many(logits(net), held_out, [int(e.targets[0]) for e in exact_shapley])
    r = pearson_rows(np.stack([e.segment_weights[0] for e in got]),
                     np.stack([e.segment_weights[0] for e in exact_shapley]))
    assert r.mean() >= 0.8, r


def test_efficiency_is_exact(explainer, net, held_out):
    model = logits(net)
    for x in held_out[:5]:
        e = explainer.explain(model, x, target=[0, 1, 2, 3])
        fx = model.predict(x[None])[0]
        fb = model.predict(np.zeros_like(x)[None])[0]  # the baseline 0.0, computed here independently
        np.testing.assert_allclose(e.segment_weights.sum(1), fx - fb, rtol=0, atol=1e-6)
        np.testing.assert_allclose(e.base_value, fb, rtol=0, atol=1e-7)


def test_one_explanation_costs_two_queries(explainer, net, held_out):
    spy = SpyAdapter(lambda b: net(torch.from_numpy(b)).detach().numpy(), batch_size=64)
    e = explainer.explain(spy, held_out[0])
    assert e.n_queries == 2 and spy.n_queries == 2
    many = explainer.explain_many(spy, held_out[:10])
    assert [m.n_queries for m in many] == [2] * 10 and spy.n_queries == 2 + 20
    assert spy.batch_sizes[2:] == [10, 10]  # references in one batch, baselines in another


def test_explain_many_equals_explain(explainer, net, held_out):
    model = logits(net, batch_size=7)
    targets = [None, 1, [0, 2], Class(3), None]
    many = explainer.explain_many(model, held_out[:5], targets)
    for x, t, got in zip(held_out[:5], targets, many, strict=True):
        want = explainer.explain(model, x, t)
        # the same maps up to float32 rounding: the model and the network see batches of other sizes
        np.testing.assert_allclose(got.attributions, want.attributions, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.base_value, want.base_value, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got.targets, want.targets)


def test_the_fields_are_kernel_shaps(explainer, net, held_out):
    model = logits(net)
    ours = explainer.explain(model, held_out[0], target=[1, 2])
    theirs = perturbx.KernelSHAP(64, grid_segments((SIDE, SIDE), PLAYERS), baseline=0.0).explain(
        model, held_out[0], target=[1, 2])
    for name in ("segments", "segment_weights", "base_value", "errors", "exact", "estimate"):
        assert np.shape(getattr(ours, name)) == np.shape(getattr(theirs, name)), name
    np.testing.assert_array_equal(ours.segments, theirs.segments)
    # f(baseline) alone here, among KernelSHAP's other rows there: the same up to float32 rounding
    np.testing.assert_allclose(ours.base_value, theirs.base_value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.scores, theirs.scores, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.attributions, ours.segment_weights[:, ours.segments])
    assert ours.attributions.shape == (2, SIDE, SIDE) and ours.method == "Amortized"


def test_errors_reproduce_the_estimated_error(explainer, net, held_out):
    e = explainer.explain(logits(net), held_out[1])
    assert e.error_source == "calibration" and np.isfinite(e.estimated_error).all()
    np.testing.assert_allclose(perturbx.engine.relative_error(e.segment_weights, e.errors), e.estimated_error[0])


def test_out_of_distribution_images_get_a_higher_estimated_error(explainer, net, held_out):
    model = logits(net)
    noise = np.random.default_rng(0).random((10, 3, SIDE, SIDE), dtype=np.float32)
    inside = [e.estimated_error[0] for e in explainer.explain_many(model, held_out[:10])]
    outside = [e.estimated_error[0] for e in explainer.explain_many(model, noise)]
    assert np.median(outside) > 1.5 * np.median(inside), (inside, outside)


def test_verify_measures_the_error_against_the_exact_values(net, trained_path, held_out, exact_shapley):
    """verify=n spends n queries; its estimate of ||phi - shapley|| tracks the true distance."""
    model = logits(net)
    verified = perturbx.Amortized.load(trained_path, verify=2000)
    measured, true = [], []
    for x, exact in zip(held_out[:6], exact_shapley[:6], strict=True):
        e = verified.explain(model, x, int(exact.targets[0]))
        assert e.n_queries == 2 + 2000 and e.error_source == "verify"
        spread = np.linalg.norm(e.segment_weights[0] - e.segment_weights[0].mean())
        measured.append(e.estimated_error[0] * spread)
        true.append(np.linalg.norm(e.segment_weights[0] - exact.segment_weights[0]))
    np.testing.assert_allclose(measured, true, rtol=0.3)


# -- training: budget, resume, remote ------------------------------------------------------------------------
TINY = {"n_images": 24, "coalitions": 8, "validation": 4, "validation_samples": 32, "epochs": 3, "patience": 3,
        "batch_size": 8, "width": 4, "depth": 3, "random_state": 1, "progress": False}


def tiny_model(seed: int = 0, n_classes: int = 3, side: int = 16) -> Callable:
    w = np.random.default_rng(seed).normal(size=(n_classes, 3 * side * side))
    return Callable(lambda b: np.tanh(b.reshape(len(b), -1) @ w.T / 10), batch_size=32)


def tiny_images(n: int = 40, seed: int = 0, side: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, side, side), dtype=np.float32)


def test_training_queries_go_out_in_full_batches_and_score_the_right_rows(monkeypatch):
    """Rows are held at most RENDER_ROWS at a time, sent in full batches, and each image gets its own values."""
    from perturbx.amortized import data
    from perturbx.targets import Class

    monkeypatch.setattr(data, "RENDER_ROWS", 20)  # chunks of 16 rows with batch_size 8
    w = np.random.default_rng(0).normal(size=(3, 3 * 16 * 16))
    rendered, seen = [], []  # images rendered so far; that count at each model call
    spy = SpyAdapter(lambda b: seen.append(len(rendered)) or b.reshape(len(b), -1) @ w.T, batch_size=8)
    images, segments = tiny_images(5), grid_segments((16, 16), (2, 2))
    zs = [data.image_coalitions(0, i, 8, 4) for i in range(5)]  # 10 rows an image with the full and empty ones
    target = Class([0, 1, 2])
    target.n_classes = 3
    baselines = (rendered.append(i) or np.zeros_like(x) for i, x in enumerate(images))
    table = data.query_games(spy, target, images, baselines, segments, zs)
    assert spy.batch_sizes == [8] * 6 + [2]
    assert seen == [2, 2, 4, 4, 4, 5, 5]  # 16 rows sent after images 0-1 (4 wait), 24 after 2-3, 10 at the end
    keep = zs[3][5][segments].astype(np.float32)  # image 3's coalition 5: the kept quarters of the image
    np.testing.assert_allclose(table.values[3, 5], (images[3] * keep).reshape(-1) @ w.T, rtol=1e-5)
    np.testing.assert_allclose(table.full, images.reshape(5, -1) @ w.T, rtol=1e-5)
    np.testing.assert_array_equal(table.empty, 0)


def test_an_explainer_of_log_odds_explains_log_odds(tmp_path):
    """Class(score="log_odds") of a probability model: the values sum to the log-odds' difference, after a load."""
    w = np.random.default_rng(0).normal(size=(3, 3 * 16 * 16))

    def softmax(b):
        z = b.reshape(len(b), -1) @ w.T / 5
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    model = Callable(softmax, batch_size=32)
    fit = perturbx.Amortized(2, target=Class(None, score="log_odds"), **TINY).fit(model, tiny_images())
    fit.save(tmp_path / "odds.pt")
    x = tiny_images(1, seed=4)[0]
    p = softmax(np.stack([x, np.zeros_like(x)]))
    odds = np.log(p) - np.log(1 - p)
    for explainer in (fit, perturbx.Amortized.load(tmp_path / "odds.pt")):
        assert explainer.identity_.probabilities is True
        e = explainer.explain(model, x, Class([0, 1, 2], score="log_odds"))
        np.testing.assert_allclose(e.segment_weights.sum(1), odds[0] - odds[1], rtol=1e-6)


def test_the_query_budget_is_kept_and_buys_training_images():
    model = tiny_model()
    fit = perturbx.Amortized(2, max_queries=300, **TINY).fit(model, tiny_images())
    log = fit.training_log_
    assert model.n_queries == log["queries"] <= 300
    assert log["training_images"] == (300 - 1 - 4 * (2 + 32)) // (2 + 8)


def test_a_budget_too_small_is_refused_before_any_query():
    model = tiny_model()
    with pytest.raises(QueryBudgetError, match=r"'max_queries' parameter of Amortized is 100.*at least 157"):
        perturbx.Amortized(2, max_queries=100, **TINY).fit(model, tiny_images())
    assert model.n_queries == 0


def test_a_killed_fit_resumes_to_the_same_explainer(tmp_path, monkeypatch):
    from perturbx.amortized import train

    images, x = tiny_images(), tiny_images(1, seed=9)[0]
    straight = perturbx.Amortized(2, **TINY).fit(tiny_model(), images)
    path = tmp_path / "fit.pt"
    real = train.Trainer._train_epoch

    def dies_in_epoch_2(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(train.Trainer, "_train_epoch", dies_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        perturbx.Amortized(2, checkpoint=path, **TINY).fit(tiny_model(), images)
    monkeypatch.setattr(train.Trainer, "_train_epoch", real)
    model = tiny_model()
    resumed = perturbx.Amortized(2, checkpoint=path, **TINY).fit(model, images)
    assert model.n_queries == 1  # the identity query; nothing queried again
    assert resumed.training_log_["queries"] == straight.training_log_["queries"] + 1
    np.testing.assert_array_equal(resumed.explain(tiny_model(), x).attributions,
                                  straight.explain(tiny_model(), x).attributions)
    again = perturbx.Amortized.load(path)  # the finished checkpoint is a saved explainer
    np.testing.assert_array_equal(again.explain(tiny_model(), x).attributions,
                                  straight.explain(tiny_model(), x).attributions)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    path = tmp_path / "fit.pt"
    perturbx.Amortized(2, checkpoint=path, **TINY).fit(tiny_model(), tiny_images())
    with pytest.raises(ValueError, match=r"written by a fit with other \['settings'\]"):
        perturbx.Amortized(2, checkpoint=path, **{**TINY, "coalitions": 10}).fit(tiny_model(), tiny_images())
    with pytest.raises(ValueError, match=r"written by a fit with other \['settings'\]"):
        perturbx.Amortized(2, checkpoint=path, top_class_weight=3.0, **TINY).fit(tiny_model(), tiny_images())
    with pytest.raises(ValueError, match="written for another model"):
        perturbx.Amortized(2, checkpoint=path, **TINY).fit(tiny_model(seed=5), tiny_images())


def test_training_is_repeatable_and_data_may_be_a_folder(tmp_path):
    images = tiny_images(30)
    for i, x in enumerate(images):
        np.save(tmp_path / f"{i:03d}.npy", np.moveaxis(x, 0, -1))
    x = tiny_images(1, seed=3)[0]
    a = perturbx.Amortized(2, **TINY).fit(tiny_model(), images).explain(tiny_model(), x)
    b = perturbx.Amortized(2, **TINY).fit(tiny_model(), tmp_path).explain(tiny_model(), x)
    np.testing.assert_array_equal(a.attributions, b.attributions)


def test_progress_bars_when_asked(capsys):
    perturbx.Amortized(2, **{**TINY, "progress": True}).fit(tiny_model(), tiny_images())
    err = capsys.readouterr().err
    assert "Amortized: training queries" in err and "Amortized: training" in err


# -- files ------------------------------------------------------------------------------------------------------
def test_save_and_load_give_the_same_maps(explainer, trained_path, net, held_out, tmp_path):
    model = logits(net)
    explainer.save(tmp_path / "copy.pt")
    again = perturbx.Amortized.load(tmp_path / "copy.pt")
    np.testing.assert_array_equal(again.explain(model, held_out[3]).attributions,
                                  explainer.explain(model, held_out[3]).attributions)
    assert again.identity_ == explainer.identity_
    assert again.identity_.n_classes == 4 and again.identity_.players == PLAYERS


def test_check_model_tells_another_model(explainer, net):
    explainer.check_model(logits(net))
    other = smooth_net(seed=1)
    with pytest.raises(ValueError, match="not the one this Amortized explainer was trained for"):
        explainer.check_model(logits(other))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not ours", "weights"])
def test_a_damaged_file_is_a_clear_error(trained_path, tmp_path, damage):
    path = tmp_path / "bad.pt"
    data = trained_path.read_bytes()
    if damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
        match = "not a readable checkpoint"
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        match = "not a readable checkpoint"
    elif damage == "not ours":
        torch.save({"state_dict": {}}, path)
        match = "not a perturbx.Amortized file"
    else:
        blob = torch.load(trained_path, weights_only=True)
        key = next(k for k in blob["state_dict"] if k.endswith("weight"))
        blob["state_dict"][key] = blob["state_dict"][key][:1]
        torch.save(blob, path)
        match = "do not describe a network that fits its weights"
    with pytest.raises(ValueError, match=match):
        perturbx.Amortized.load(path)


def test_an_unfinished_fit_is_not_an_explainer(tmp_path, monkeypatch):
    from perturbx.amortized import train

    def dies(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Trainer, "_train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        perturbx.Amortized(2, checkpoint=tmp_path / "fit.pt", **TINY).fit(tiny_model(), tiny_images())
    with pytest.raises(ValueError, match="checkpoint of an unfinished fit"):
        perturbx.Amortized.load(tmp_path / "fit.pt")


# -- bad input ---------------------------------------------------------------------------------------------------
def test_another_input_shape_is_refused_before_any_query(explainer, net):
    model = logits(net)
    with pytest.raises(ValueError, match=r"trained for samples of shape \(3, 32, 32\).*got x of shape \(3, 64, 64\)"):
        explainer.explain(model, make_shapes(1, size=64, random_state=0).images[0])
    assert model.n_queries == 0


def test_another_number_of_classes_is_refused(explainer, net, held_out):
    five = torch.nn.Sequential(net, torch.nn.Linear(4, 5))
    with pytest.raises(ValueError, match="trained on a model returning 4 classes; this model returns 5"):
        explainer.explain(logits(five), held_out[0])


@pytest.mark.parametrize(("target", "match"), [
    (7, r"classes \[0, 1, 2, 3\]; target class\(es\) \[7\] were not among them"),
    (Output(0), "trained to explain class scores"),
    (Class(1, score="log_odds"), r"trained for Class\(score='output'"),
])
def test_a_target_it_was_not_trained_for_is_refused(explainer, net, held_out, target, match):
    model = logits(net)
    with pytest.raises(ValueError, match=match):
        explainer.explain(model, held_out[0], target)
    assert model.n_queries == 0


def test_a_top_class_it_was_not_trained_for_is_refused(net):
    images = make_shapes(40, size=SIDE, random_state=3).images
    model = logits(net)
    fit = perturbx.Amortized(PLAYERS, target=[0, 1], **TINY).fit(model, images)
    top = model.predict(images).argmax(1)
    x = images[np.flatnonzero(top >= 2)[0]]
    with pytest.raises(ValueError, match=r"top class for this x is [23], which this Amortized explainer was not"):
        fit.explain(model, x)
    assert fit.explain(model, x, 1).segment_weights.shape == (1, 9)


def test_using_an_untrained_explainer_says_so(held_out, net):
    with pytest.raises(ValueError, match=r"not trained: call fit\(model, data\) or Amortized.load"):
        perturbx.Amortized().explain(logits(net), held_out[0])


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"coalitions": 7}, ValueError, "'coalitions' parameter of Amortized must be even"),
    ({"verify": 3}, ValueError, "'verify' parameter of Amortized must be 0 or an even int >= 4"),
    ({"baseline": "noise"}, ValueError, "fresh noise image at every explanation"),
    ({"baseline": lambda x: x * 0}, ValueError, "stored with the explainer and reproduced exactly"),
    ({"random_state": np.random.default_rng(0)}, ValueError, "must be a non-negative int or None"),
    ({"target": "cat"}, ValueError, "'target' parameter of Amortized must be None"),
    ({"players": 0}, ValueError, "'players' parameter of Amortized must be a positive int"),
    ({"members": 0}, ValueError, "'members' parameter of Amortized must be"),
    ({"top_class_weight": 0}, ValueError, r"'top_class_weight' parameter of Amortized must be a real number in \(0"),
    ({"members": 1, "distil": 3}, ValueError, "needs members >= 2"),
    ({"players": 8, "validation_samples": 64}, ValueError, r"'validation_samples' .* at least players \+ 2 = 66"),
])
def test_bad_parameters_are_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        perturbx.Amortized(**kwargs)


def test_bad_data_is_refused():
    with pytest.raises(TypeError, match="'data' argument of Amortized.fit must be an array"):
        perturbx.Amortized(2, **TINY).fit(tiny_model(), 3.5)
    with pytest.raises(ValueError, match="needs at least validation \\+ 2 = 6"):
        perturbx.Amortized(2, **TINY).fit(tiny_model(), tiny_images(5))
    with pytest.raises(ValueError, match="which is not a folder"):
        perturbx.Amortized(2, **TINY).fit(tiny_model(), "/nonexistent/folder")


def test_an_ensemble_averages_its_members_keeps_efficiency_and_extends_a_checkpoint(tmp_path):
    """members=2 resumed from a one-member checkpoint: no game is queried again, member 0 is the single fit's
    network, the values are the mean of the members' (each normalised), efficiency stays exact, and the
    ensemble saves and loads."""
    from perturbx.amortized.game import normalise
    from perturbx.amortized.network import Ensemble
    from perturbx.amortized.train import raw_values

    images, x = tiny_images(), tiny_images(1, seed=9)[0]
    path = tmp_path / "fit.pt"
    single = perturbx.Amortized(2, checkpoint=path, **TINY).fit(tiny_model(), images)
    model = tiny_model()
    pair = perturbx.Amortized(2, members=2, checkpoint=path, **TINY).fit(model, images)
    assert model.n_queries == 1  # the identity query: the games and the validation are the checkpoint's
    net, state = pair._state()["network"], pair._state()
    assert isinstance(net, Ensemble) and len(net.members) == 2
    for a, b in zip(net.members[0].state_dict().values(), single._state()["network"].state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(net.members[1].parameters()), next(net.members[0].parameters()))
    log = pair.training_log_
    assert len(log["members"]) == 2 and log["members"][0]["validation_pearson"] == single.training_log_[
        "validation_pearson"]

    e = pair.explain(tiny_model(), x, target=[0, 1, 2])
    delta = tiny_model().predict(x[None])[0] - tiny_model().predict(np.zeros_like(x)[None])[0]
    np.testing.assert_allclose(e.segment_weights.sum(1), delta, rtol=0, atol=1e-6)
    image = torch.from_numpy(x[None])
    each = [normalise(raw_values(m, image, state["scale"]), delta[None])[0] for m in net.members]
    np.testing.assert_allclose(e.segment_weights, np.mean(each, axis=0), rtol=0, atol=1e-6)

    pair.save(tmp_path / "pair.pt")
    loaded = perturbx.Amortized.load(tmp_path / "pair.pt")
    assert loaded.members == 2
    np.testing.assert_array_equal(loaded.explain(tiny_model(), x).attributions,
                                  pair.explain(tiny_model(), x).attributions)


def test_distillation_weights_the_top_class_as_the_training_loss_does():
    """With top_class_weight=10 the student is fitted closer to the ensemble on each image's top class, and
    farther on the others, than with every class alike (same members, images, seed and epochs)."""
    from perturbx.amortized.distil import distil
    from perturbx.amortized.network import Ensemble, ExplainerUNet
    from perturbx.amortized.train import TrainConfig, explain_batch, target_weights

    def ensemble() -> Ensemble:
        members = []
        for seed in range(2):
            torch.manual_seed(seed)
            member = ExplainerUNet(3, 4, (16, 16), (3, 3), width=4, depth=3)
            torch.nn.init.normal_(member.head.weight, std=0.3)  # the head starts at zero otherwise
            members.append(member.eval())
        return Ensemble(members).eval()

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.random((96, 3, 16, 16), dtype=np.float32))
    full = rng.random((96, 4))
    delta = full - 0.25
    goal = explain_batch(ensemble(), images, delta, 1.0)
    top = np.arange(4)[None] == full.argmax(1)[:, None]
    errors = {}
    for weight in (1.0, 10.0):
        config = TrainConfig(epochs=12, patience=12, batch_size=16, learning_rate=2e-3, weight_decay=0.0, seed=0,
                             top_weight=weight)
        weights = target_weights(full, weight)
        weights = None if weights is None else torch.from_numpy(weights.astype(np.float32))
        student, _ = distil(ensemble(), images, delta, 1.0, config, 12, weights=weights)
        squared = ((explain_batch(student, images, delta, 1.0) - goal) ** 2).sum(-1)
        errors[weight] = squared[top].mean(), squared[~top].mean()
    assert errors[10.0][0] < 0.8 * errors[1.0][0]  # measured 0.026 against 0.041
    assert errors[10.0][1] > 1.5 * errors[1.0][1]  # measured 0.092 against 0.038


def test_a_distilled_ensemble_is_one_network_and_resumes_without_training(tmp_path, monkeypatch):
    """distil=2 with members=2: one network again (one forward pass per explanation), fitted to the ensemble's
    values without queries; efficiency exact; the finished checkpoint resumes every member and the student
    without training anything again, to the same maps; save and load keep it one network."""
    from perturbx.amortized import fitting, train
    from perturbx.amortized.network import ExplainerUNet

    images, x = tiny_images(), tiny_images(1, seed=9)[0]
    path = tmp_path / "fit.pt"
    model = tiny_model()
    fit = perturbx.Amortized(2, members=2, distil=2, checkpoint=path, **TINY).fit(model, images)
    net = fit._state()["network"]
    assert type(net) is ExplainerUNet
    log = fit.training_log_
    assert len(log["members"]) == 2 and len(log["distilled"]["losses"]) == 2
    assert log["validation_pearson"] == log["distilled"]["validation_pearson"]
    e = fit.explain(tiny_model(), x, target=[0, 1, 2])
    delta = tiny_model().predict(x[None])[0] - tiny_model().predict(np.zeros_like(x)[None])[0]
    np.testing.assert_allclose(e.segment_weights.sum(1), delta, rtol=0, atol=1e-6)
    plain = fit.explain(tiny_model(), x).attributions

    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train.Trainer, "_train_epoch", refuse)
    monkeypatch.setattr(fitting, "distil", refuse)
    again = tiny_model()
    resumed = perturbx.Amortized(2, members=2, distil=2, checkpoint=path, **TINY).fit(again, images)
    assert again.n_queries == 1
    np.testing.assert_array_equal(resumed.explain(tiny_model(), x).attributions, plain)
    fit.save(tmp_path / "student.pt")
    loaded = perturbx.Amortized.load(tmp_path / "student.pt")
    assert type(loaded._state()["network"]) is ExplainerUNet
    np.testing.assert_array_equal(loaded.explain(tiny_model(), x).attributions, plain)


@pytest.mark.parametrize("layout", ["CHW", "HWC", "HW"])
def test_the_built_in_training_images_are_make_shapes_in_the_adapters_layout(layout):
    from perturbx._utils import Layout
    from perturbx.amortized.data import training_images

    chw = make_shapes(5, size=32, random_state=3).images
    shape = {"CHW": (3, 32, 32), "HWC": (32, 32, 3), "HW": (32, 32)}[layout]
    adapter = Callable(lambda b: np.zeros((len(b), 2)), input_layout=layout, sample_shape=shape)
    got = training_images("shapes", adapter, 5, seed=3)
    want = np.stack([Layout(layout).from_chw_array(x) for x in chw])  # one sample at a time
    assert got.shape == (5, *shape) and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("validation", [0, 1, 7, 40])
def test_the_holdout_split_is_the_seeded_choice_and_never_changes_the_callers_array(validation):
    from perturbx.amortized.data import holdout_split

    rng = np.random.default_rng(validation)
    data = rng.normal(size=(41, 3, 4, 4)).astype(np.float32)
    order = np.random.default_rng([9, 1]).permutation(len(data))
    want_val, want_train = data[np.sort(order[:validation])], data[np.sort(order[validation:])]
    before = data.copy()

    train, val = holdout_split(data, data, validation, seed=9)  # the caller's own array: rows copied
    np.testing.assert_array_equal(data, before)
    np.testing.assert_array_equal(train, want_train)
    np.testing.assert_array_equal(val, want_val)

    own = data.copy()  # perturbx's array (data was "shapes" or a folder): the parts are views of it
    train, val = holdout_split(own, "shapes", validation, seed=9)
    np.testing.assert_array_equal(train, want_train)
    np.testing.assert_array_equal(val, want_val)
    assert np.shares_memory(train, own) and (validation == 0 or np.shares_memory(val, own))


def test_fit_leaves_the_callers_training_array_unchanged():
    images = tiny_images()
    before = images.copy()
    perturbx.Amortized(2, **TINY).fit(tiny_model(), images)
    np.testing.assert_array_equal(images, before)
