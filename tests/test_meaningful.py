"""MeaningfulPerturbation and the two optimisers: the paper's objective written out by hand, the
zeroth-order estimator's expectation, frozen weights, layouts, budgets, seeds and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import perturbx
from perturbx.adapters import Callable
from perturbx.engine import QueryBudgetError
from perturbx.explainers.meaningful import MeaningfulPerturbation

torch = pytest.importorskip("torch")
from perturbx.adapters import Torch  # noqa: E402
from perturbx.optimize.objectives import l1_area, total_variation  # noqa: E402
from perturbx.optimize.optimizers import SGD, Adam, Autograd, MaskProblem, ZerothOrder  # noqa: E402
from perturbx.optimize.renderers import blur  # noqa: E402


def paper_objective_run(net, x: np.ndarray, target: int, steps: int, l1: float = 1e-4, tv_coeff: float = 1e-2
                        ) -> np.ndarray:
    """Fong & Vedaldi's deletion game at 224 px, written from the paper's formula.

    min_m f_c(m x + (1 - m) blur(x)) + l1 ||1 - m||_1 + tv_coeff sum_u |grad m(u)|^3 (the paper: 1e-4,
    1e-2), with m a 28 x 28 grid upsampled bilinearly, Adam (lr 0.1), clamped to [0, 1] after every step.
    """
    blurred = torch.as_tensor(blur(x, perturbx._utils.Layout("CHW"), 10.0))[None]
    xt = torch.as_tensor(x)[None]
    p = torch.ones(1, 1, 28, 28, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    up = torch.nn.UpsamplingBilinear2d(size=(224, 224))
    for _ in range(steps):
        m = up(p).clamp(0, 1)
        prob = torch.softmax(net(m * xt + (1 - m) * blurred), dim=1)[0, target]
        tv = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(3).sum() + (m[..., :, 1:] - m[..., :, :-1]).abs().pow(3).sum()
        loss = prob + l1 * (1 - m).abs().sum() + tv_coeff * tv
        (p.grad,) = torch.autograd.grad(loss, [p])
        opt.step()
        p.data.clamp_(0, 1)
    return up(p).clamp(0, 1)[0, 0].detach().numpy()


@pytest.mark.parametrize(("l1", "tv"), [(1e-4, 1e-2), (0.0, 1e-2)])
def test_deletion_game_equals_the_paper_formula_at_224(small_cnn, rng, l1, tv):
    """objective="score" is the paper's. With its coefficients the random CNN's probability gradients are
    smaller than the area term's and nothing is deleted; without the area term the mask moves."""
    x = rng.random((3, 224, 224), dtype=np.float32)
    frozen = [p.requires_grad for p in small_cnn.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # the constant mask of the first case is reported
        ours = MeaningfulPerturbation(steps=6, objective="score", l1_coeff=l1, tv_coeff=tv).explain(
            Torch(small_cnn, output="probs"), x, target=1)
    ref = paper_objective_run(small_cnn, x, 1, 6, l1, tv)
    np.testing.assert_allclose(ours.mask, ref, atol=1e-4)
    np.testing.assert_allclose(ours.attributions, 1 - ref, atol=1e-4)
    assert ours.moved == (ref.min() < 1 - 1e-3) and (ours.moved or l1 > 0)
    assert ours.optimizer == "autograd" and ours.n_queries == 1 + 6 + 1
    assert ours.objective.shape == (6,) and ours.model_term.shape == (6,)
    assert [p.requires_grad for p in small_cnn.parameters()] == frozen
    assert all(p.grad is None for p in small_cnn.parameters())


def test_update_rules_equal_torch_optim(rng):
    grads = [torch.as_tensor(rng.normal(size=(2, 5)), dtype=torch.float32) for _ in range(6)]
    for ours, theirs in [(Adam(0.1), lambda p: torch.optim.Adam(p, lr=0.1)),
                         (SGD(0.01, 0.9, 0.9), lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, dampening=0.9))]:
        a = torch.ones(2, 5)
        b = torch.ones(2, 5, requires_grad=True)
        opt = theirs([b])
        for g in grads:
            ours.step(a, g)
            b.grad = g.clone()
            opt.step()
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_regularisers_are_scale_free():
    """The same relative mask costs (nearly) the same at 64 and at 224 pixels."""
    grid = torch.zeros(1, 1, 7, 7)
    grid[..., 2:5, 3:6] = 1.0
    costs = {}
    for size in (64, 224):
        m = torch.nn.functional.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)[:, 0]
        costs[size] = (float(l1_area(m, "deletion")[0]), float(total_variation(m, 3.0)[0]))
    assert costs[64][0] == pytest.approx(costs[224][0], rel=0.02)
    assert costs[64][1] == pytest.approx(costs[224][1], rel=0.05)


def test_total_variation_hand_case():
    m = torch.zeros(1, 224, 224)
    m[0, :, 100:] = 1.0            # one vertical edge of height 224 with a step of 1
    assert float(total_variation(m, 3.0)[0]) * 224 ** 2 == pytest.approx(224.0)
    assert float(l1_area(m, "deletion")[0]) == pytest.approx(100 / 224)
    assert float(l1_area(m, "preservation")[0]) == pytest.approx(124 / 224)


def linear_problem(weights: np.ndarray, x: np.ndarray, lr: float, steps: int = 1) -> MaskProblem:
    """Mask = parameters (no parametrisation), blend to zero, loss = the linear score, plain SGD."""
    layout = perturbx._utils.Layout("CHW")
    xt = torch.as_tensor(x)[None]
    return MaskProblem(
        params=torch.full((1, *x.shape[1:]), 0.5), generate=lambda p: p,
        render=lambda m: layout.expand_masks(m) * xt, targets=np.array([0]), model_loss=lambda s, positions: s,
        regulariser=lambda m, t: torch.zeros(len(m)), make_optimizer=lambda: SGD(lr, momentum=0.0, dampening=0.0),
        steps=steps)


def test_autograd_step_is_the_exact_gradient(rng):
    w = rng.normal(size=(2, 3, 12, 12)).astype(np.float32)
    x = rng.random((3, 12, 12), dtype=np.float32)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 144, 2, bias=False))
    net[1].weight.data = torch.as_tensor(w.reshape(2, -1))
    res = Autograd(Torch(net)).run(linear_problem(w, x, lr=1e-3))
    exact = (w[0] * x).sum(axis=0)                  # d score / d mask
    np.testing.assert_allclose((0.5 - res.params[0].numpy()) / 1e-3, exact, rtol=1e-3, atol=1e-3)


def test_zeroth_order_estimate_has_the_documented_expectation(rng):
    """NES on a linear model: the step is E[(v . G) v] / cell = B B^T G / cell, B the unit-variance fields."""
    w = rng.normal(size=(1, 3, 12, 12))
    x = rng.random((3, 12, 12), dtype=np.float32)
    model = Callable(lambda b: b.reshape(len(b), -1).astype(np.float64) @ w.reshape(1, -1).T, batch_size=20000)
    opt = ZerothOrder(model, n_pairs=6000, sigma=0.02, grid=4, rng=np.random.default_rng(0))
    res = opt.run(linear_problem(w, x, lr=1e-3))
    estimate = (0.5 - res.params[0].numpy().astype(np.float64)) / 1e-3
    eye = np.eye(4)
    ry = torch.nn.functional.interpolate(torch.as_tensor(eye)[:, None, :, None], size=(12, 1), mode="bilinear",
                                         align_corners=False)[:, 0, :, 0].numpy()      # (4, 12)
    basis = np.einsum("iy,jx->yxij", ry, ry).reshape(144, 16)
    basis /= np.sqrt((basis ** 2).sum(axis=1, keepdims=True))                          # unit variance per pixel
    g = (w[0] * x).sum(axis=0).ravel()
    expected = (basis @ (basis.T @ g) / 9.0).reshape(12, 12)                            # cell = 144 / 16 pixels
    cos = (estimate * expected).sum() / np.linalg.norm(estimate) / np.linalg.norm(expected)
    assert cos > 0.99
    assert np.linalg.norm(estimate) == pytest.approx(np.linalg.norm(expected), rel=0.05)
    assert res.n_queries == 12000 and model.n_queries == 12000


def numpy_model(net):
    """The torch model as a pure black box over numpy batches (probabilities)."""
    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(net(torch.as_tensor(batch)), dim=1).numpy()
    return predict


def test_optimizer_is_chosen_from_the_adapter(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    assert MeaningfulPerturbation(steps=2).explain(Torch(small_cnn), x).optimizer == "autograd"
    e = MeaningfulPerturbation(steps=2, n_pairs=3).explain(Callable(numpy_model(small_cnn)), x)
    assert e.optimizer == "zeroth_order" and e.n_queries == 1 + 2 * 2 * 3 + 1
    e = MeaningfulPerturbation(steps=2, n_pairs=3, optimizer="zeroth_order").explain(Torch(small_cnn), x)
    assert e.optimizer == "zeroth_order" and e.n_queries == 14


def test_same_seed_same_mask_black_box(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    model = Callable(numpy_model(small_cnn), batch_size=7)     # steps of 8 rows are split in two calls
    kw = {"steps": 5, "n_pairs": 4, "game": "preservation", "objective": "score", "l1_coeff": 0.0, "tv_coeff": 0.0}
    a = MeaningfulPerturbation(**kw, random_state=3).explain(model, x, target=2)
    b = MeaningfulPerturbation(**kw, random_state=3).explain(Callable(numpy_model(small_cnn), batch_size=7), x, 2)
    c = MeaningfulPerturbation(**kw, random_state=4).explain(model, x, target=2)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert not np.allclose(a.mask, c.mask, atol=1e-3)


def test_multiple_targets_are_independent_masks(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    model = Torch(small_cnn, output="probs")
    both = MeaningfulPerturbation(steps=8, game="preservation").explain(model, x, target=[3, 0])
    assert both.attributions.shape == (2, 20, 23) and both.mask.shape == (2, 20, 23)
    assert both.objective.shape == (2, 8) and both.mask_scores.shape == (2,)
    for i, t in enumerate([3, 0]):
        one = MeaningfulPerturbation(steps=8, game="preservation").explain(model, x, target=t)
        np.testing.assert_allclose(both.attributions[i], one.attributions, atol=1e-5)
        np.testing.assert_allclose(both.attributions[i], one.mask, atol=1e-5)   # preservation: saliency = m


def test_runs_inside_inference_mode_and_restores_flags(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    small_cnn[0].weight.requires_grad_(False)          # a mixed set of flags must come back as it was
    flags = [p.requires_grad for p in small_cnn.parameters()]
    try:
        outside = MeaningfulPerturbation(steps=4).explain(Torch(small_cnn), x)
        with torch.inference_mode():
            inside = MeaningfulPerturbation(steps=4).explain(Torch(small_cnn), x)
        np.testing.assert_allclose(inside.mask, outside.mask, atol=1e-6)
        assert [p.requires_grad for p in small_cnn.parameters()] == flags
        assert all(p.grad is None for p in small_cnn.parameters())
    finally:
        small_cnn[0].weight.requires_grad_(True)


def test_query_budget_stops_the_black_box_early(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    model = Callable(numpy_model(small_cnn))
    e = MeaningfulPerturbation(steps=100, n_pairs=4, max_queries=100).explain(model, x)
    assert e.stopped_by_budget and e.steps_done == 12 and e.n_queries == 1 + 12 * 8 + 1 <= 100
    e = MeaningfulPerturbation(steps=5, n_pairs=4, max_queries=100).explain(model, x)
    assert not e.stopped_by_budget and e.steps_done == 5
    with pytest.raises(QueryBudgetError, match="needs 8 model queries per step but only 3"):
        MeaningfulPerturbation(steps=5, n_pairs=4, max_queries=5).explain(model, x)


def test_layouts_give_the_same_mask(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    hwc_net = torch.nn.Sequential(PermuteToCHW(), small_cnn)
    chw = MeaningfulPerturbation(steps=5).explain(Torch(small_cnn), x)
    hwc = MeaningfulPerturbation(steps=5).explain(Torch(hwc_net, input_layout="HWC"), np.moveaxis(x, 0, -1))
    np.testing.assert_allclose(hwc.mask, chw.mask, atol=1e-5)


class PermuteToCHW(torch.nn.Module):
    def forward(self, x):
        return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"steps": 0}, "'steps' parameter of MeaningfulPerturbation must be an int >= 1. Got 0"),
    ({"game": "both"}, "'game' parameter of MeaningfulPerturbation must be one of"),
    ({"optimizer": "adam"}, "'optimizer' parameter .* one of \\('auto', 'autograd', 'zeroth_order'\\)"),
    ({"mask_shape": 1}, "'mask_shape' parameter of MeaningfulPerturbation must be at least 2 x 2"),
    ({"learning_rate": 0.0}, "'learning_rate' parameter .* real number in \\(0.0, inf\\)"),
    ({"search_sigma": 0.0}, "'search_sigma'"),
    ({"n_pairs": 0}, "'n_pairs'"),
    ({"search_grid": 1}, "'search_grid' parameter of MeaningfulPerturbation must be an int >= 2"),
    ({"l1_coeff": -1.0}, "'l1_coeff'"),
    ({"tv_beta": 0.5}, "'tv_beta'"),
    ({"max_queries": 1}, "'max_queries'"),
    ({"baseline": "smooth"}, "'baseline' parameter of MeaningfulPerturbation"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MeaningfulPerturbation(**kwargs)


def test_bad_inputs(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    with pytest.raises(TypeError, match="optimizer='autograd' needs a perturbx.adapters.Torch model; got Callable"):
        MeaningfulPerturbation(optimizer="autograd").explain(Callable(numpy_model(small_cnn)), x)
    with pytest.raises(ValueError, match="x must be one sample of layout 'CHW' with 3 axes. Got shape \\(60,\\)"):
        MeaningfulPerturbation().explain(Callable(numpy_model(small_cnn)), np.ones(60))
    with pytest.raises(TypeError, match="x must be a numeric array"):
        MeaningfulPerturbation().explain(Callable(numpy_model(small_cnn)), np.array(["an", "image"]))
    with pytest.raises(ValueError, match="at least 8 x 8 pixels; got a sample of shape \\(3, 4, 23\\)"):
        MeaningfulPerturbation().explain(Torch(small_cnn), x[:, :4])
    with pytest.raises(ValueError, match="target \\[5\\] is out of range"):
        MeaningfulPerturbation().explain(Torch(small_cnn), x, target=5)


def test_baseline_option_replaces_the_blur(small_cnn, rng):
    x = rng.random((3, 20, 23), dtype=np.float32)
    e = MeaningfulPerturbation(steps=3, baseline=0.0).explain(Torch(small_cnn, output="probs"), x, target=0)
    with torch.no_grad():
        kept = torch.softmax(small_cnn(torch.as_tensor(e.mask[None, None] * x[None])), dim=1)[0].double()
    log_odds = torch.log(kept[0]) - torch.log(kept[1:].sum())          # the default objective's scalar
    assert e.mask_scores == pytest.approx(float(log_odds), abs=1e-5)
