"""perturbx.visualize: parameterisations, transformations, objectives, errors, seeds, layouts, figures.

Reference values are computed independently here (numpy FFT, numpy rotations and shifts,
lucent's diversity loop, finite differences by hand) on the same inputs. The long runs on
the demo CNN (the issue's "must hold" list) are in tests/test_visualize_demo.py.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perturbx import QueryBudgetError  # noqa: E402
from perturbx import visualize as vz  # noqa: E402
from perturbx.adapters import Callable, Torch  # noqa: E402
from perturbx.visualize.objectives import Context, probabilities  # noqa: E402
from perturbx.visualize.param import COLOR_CORRELATION, fourier_scale  # noqa: E402
from perturbx.visualize.transforms import Draw, affine_warp  # noqa: E402

SHAPE = (3, 16, 16)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module (the machine's cores are shared), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net():
    """A small random CNN over (3, 16, 16) images with 5 classes and named layers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 6, 3, padding=1, stride=2), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(24, 5))
    return model.eval()


def numpy_model(net):
    def fn(batch):
        with torch.no_grad():
            return net(torch.as_tensor(np.asarray(batch))).numpy()
    return fn


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ---------------------------------------------------------------- parameterisations

def test_fourier_matches_numpy_reference():
    """Fourier image = sigmoid(C irfft2(scale * spectrum, ortho) / 4), as Lucid's fft_image (numpy FFT here)."""
    rng = np.random.default_rng(3)
    p = vz.Fourier(sd=0.5).build(2, (3, 12, 15), "cpu", rng)
    spectrum = p.tensors[0].numpy().astype(np.float64)
    coeff = (spectrum[..., 0] + 1j * spectrum[..., 1]) * fourier_scale(12, 15, 1.0)
    raw = np.fft.irfft2(coeff, s=(12, 15), norm="ortho") / 4.0
    expected = sigmoid(np.einsum("dc,nchw->ndhw", COLOR_CORRELATION, raw))
    np.testing.assert_allclose(p.image().numpy(), expected, atol=1e-5)


def test_fourier_scale_is_one_over_frequency():
    s = fourier_scale(8, 8, 1.0)
    assert s.shape == (8, 5)
    assert s[0, 0] == pytest.approx(8.0)           # DC: clipped at 1 / max(h, w)
    assert s[0, 4] == pytest.approx(2.0)           # Nyquist along x: f = 0.5
    assert s[4, 4] == pytest.approx(1 / np.sqrt(0.5))
    np.testing.assert_allclose(fourier_scale(8, 8, 0.0), 1.0)


def test_color_correlation_is_lucids_normalised_matrix():
    assert np.max(np.linalg.norm(COLOR_CORRELATION, axis=0)) == pytest.approx(1.0)
    np.testing.assert_allclose(COLOR_CORRELATION[:, 0] / COLOR_CORRELATION[0, 0], [1, 0.27 / 0.26, 0.27 / 0.26],
                               rtol=1e-6)


def test_pixels_are_a_sigmoid_of_the_parameters():
    p = vz.Pixels(sd=2.0).build(3, (1, 9, 9), "cpu", np.random.default_rng(0))
    np.testing.assert_allclose(p.image().numpy(), sigmoid(p.tensors[0].numpy()), atol=1e-6)
    assert p.batched and p.image([p.tensors[0][:1]]).shape == (1, 1, 9, 9)


def test_deep_image_prior_images_have_independent_generators():
    p = vz.DeepImagePrior(width=4, levels=2).build(2, (3, 14, 18), "cpu", np.random.default_rng(0))
    before = p.image().detach()
    assert before.shape == (2, 3, 14, 18) and float(before.min()) > 0 and float(before.max()) < 1
    tensors = [t.clone() for t in p.tensors]
    tensors[0][:4] += 1.0                          # the first generator's first-layer weights (4 output channels)
    after = p.image(tensors).detach()
    assert not torch.allclose(after[0], before[0])
    torch.testing.assert_close(after[1], before[1])
    assert not p.batched


def test_parameterisations_are_seeded():
    for param in (vz.Pixels(), vz.Fourier(), vz.DeepImagePrior(width=4)):
        a = param.build(2, SHAPE, "cpu", np.random.default_rng(5)).image()
        b = param.build(2, SHAPE, "cpu", np.random.default_rng(5)).image()
        c = param.build(2, SHAPE, "cpu", np.random.default_rng(6)).image()
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)


# ---------------------------------------------------------------- transformations

def _draw(n, scale=1.0, degrees=0.0, shift=(0, 0)):
    return Draw(np.full(n, scale), np.full(n, degrees), np.tile(np.asarray(shift, float), (n, 1)))


def test_identity_and_integer_shifts_are_exact():
    x = torch.as_tensor(np.random.default_rng(0).random((2, 3, 8, 11)), dtype=torch.float32)
    torch.testing.assert_close(affine_warp(x, _draw(2)), x)
    y = affine_warp(x, _draw(2, shift=(3, 1)), fill=0.25)      # 3 px right, 1 px down
    torch.testing.assert_close(y[..., 1:, 3:], x[..., :-1, :-3])
    assert torch.all(y[..., :1, :] == 0.25) and torch.all(y[..., :, :3] == 0.25)


def test_quarter_turn_is_numpy_rot90_clockwise():
    x = torch.as_tensor(np.random.default_rng(1).random((1, 2, 10, 10)), dtype=torch.float32)
    expected = np.rot90(x.numpy(), k=-1, axes=(2, 3)).copy()
    torch.testing.assert_close(affine_warp(x, _draw(1, degrees=90.0)), torch.as_tensor(expected))


def test_scale_two_about_the_centre_doubles_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 3:5, 3:5] = 1.0                         # 2x2 block at the centre
    y = affine_warp(x, _draw(1, scale=2.0), fill=0.0)
    assert float(y[..., 2:6, 2:6].min()) > 0.2 and float(y.sum()) == pytest.approx(16.0, rel=0.05)


def test_pad_widens_the_field_of_view_and_reflection_keeps_values():
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    padded = affine_warp(x, _draw(1), pad=6, fill=0.5)    # 24 px of view squeezed into 12: a grey frame of 3 px
    assert torch.all(padded[..., :2, :] == 0.5) and torch.all(padded[..., :, -2:] == 0.5)
    mirrored = affine_warp(x, _draw(1, shift=(2, 0)), padding_mode="reflection")
    torch.testing.assert_close(mirrored[..., :, 2:], x[..., :, :-2])
    torch.testing.assert_close(mirrored[..., :, :2], x[..., :, :2].flip(-1))


def test_transforms_draw_within_their_ranges_and_are_seeded():
    t = vz.Transforms(pad=2, jitter=3, scale=(0.9, 1.1), degrees=15)
    d = t.draw(500, np.random.default_rng(0))
    assert d.scale.min() >= 0.9 and d.scale.max() <= 1.1
    assert np.abs(d.degrees).max() <= 15 and set(np.unique(d.shift)) == set(range(-3, 4))
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(t(x, np.random.default_rng(1)), t(x, np.random.default_rng(1)))
    assert vz.Transforms().is_identity and vz.Transforms()(x, np.random.default_rng(0)) is x
    std = vz.Transforms.standard(64)
    assert (std.pad, std.jitter, std.scale, std.degrees) == (6, 6, (0.9, 1.1), 10.0)


# ---------------------------------------------------------------- objectives

def _ctx(n=3, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Context(torch.rand(n, 3, 6, 7, generator=g), torch.randn(n, k, generator=g),
                   {"a": torch.randn(n, 4, 5, 5, generator=g), "v": torch.randn(n, 4, generator=g)})


def test_objectives_compose_linearly():
    ctx = _ctx()
    a, b, c = vz.ClassLogit(1), vz.Channel("a", 2), vz.TotalVariation()
    combo = 2 * a - b / 4 + 0.5 * (-c)
    torch.testing.assert_close(combo(ctx), 2 * a(ctx) - 0.25 * b(ctx) - 0.5 * c(ctx))
    torch.testing.assert_close(sum([a, b])(ctx), a(ctx) + b(ctx))
    assert combo.layers == ("a",) and combo.needs_scores
    assert repr(combo) == "2 * ClassLogit(1) - 0.25 * Channel('a', 2) - 0.5 * TotalVariation(beta=2)"
    torch.testing.assert_close(combo.select(("image",))(ctx), -0.5 * c(ctx))
    with pytest.raises(TypeError, match="only be multiplied by a real number"):
        a * b
    with pytest.raises(TypeError, match="unsupported operand"):
        a + 1.0


def test_class_terms_read_logits_and_probabilities():
    ctx = _ctx()
    torch.testing.assert_close(vz.ClassLogit(3)(ctx), ctx.logits[:, 3])
    torch.testing.assert_close(vz.ClassProbability(3)(ctx), torch.softmax(ctx.logits, 1)[:, 3])
    torch.testing.assert_close(vz.ClassProbability(3, log=True)(ctx), torch.log_softmax(ctx.logits, 1)[:, 3])
    probs = torch.softmax(ctx.logits, 1)
    torch.testing.assert_close(probabilities(probs), probs)          # already a distribution: kept
    with pytest.raises(ValueError, match=r"'target' parameter of ClassLogit must be in \[0, 4\]"):
        vz.ClassLogit(5)(ctx)


def test_layer_terms_against_hand_computation():
    ctx = _ctx()
    act = ctx.layers["a"]
    torch.testing.assert_close(vz.Channel("a", 1)(ctx), act[:, 1].mean(dim=(1, 2)))
    torch.testing.assert_close(vz.Channel("v", 1)(ctx), ctx.layers["v"][:, 1])
    torch.testing.assert_close(vz.Neuron("a", 2)(ctx), act[:, 2, 2, 2])
    torch.testing.assert_close(vz.Neuron("a", 2, y=0, x=4)(ctx), act[:, 2, 0, 4])
    v = np.array([1.0, -2.0, 0.5, 0.0])
    a = act.numpy().astype(np.float64)
    cos = np.einsum("nchw,c->nhw", a, v) / (np.linalg.norm(a, axis=1) * np.linalg.norm(v))
    np.testing.assert_allclose(vz.Direction("a", v)(ctx).numpy(), cos.mean(axis=(1, 2)), rtol=1e-5)
    dot = np.einsum("nchw,c->nhw", a, v / np.linalg.norm(v))
    np.testing.assert_allclose(vz.Direction("a", v, cosine=False)(ctx).numpy(), dot.mean(axis=(1, 2)), rtol=1e-5)


def test_diversity_is_lucents_loss_rescaled():
    """lucent's diversity: -sum_i sum_{j != i} <G_i, G_j> / n with Frobenius-normalised Gram matrices."""
    ctx = _ctx(n=4)
    act = ctx.layers["a"].numpy().astype(np.float64)
    flat = act.reshape(4, 4, -1)
    grams = flat @ flat.transpose(0, 2, 1)
    grams /= np.linalg.norm(grams.reshape(4, -1), axis=1)[:, None, None]
    lucent = -sum((grams[i] * grams[j]).sum() for i in range(4) for j in range(4) if j != i) / 4
    ours = vz.Diversity("a")(ctx).numpy()
    assert ours.sum() == pytest.approx(lucent * 4 / 3, rel=1e-5)
    same = Context(ctx.image[:1].repeat(3, 1, 1, 1))
    np.testing.assert_allclose(vz.Diversity()(same).numpy(), -1.0, rtol=1e-5)   # identical images: similarity 1
    assert vz.Diversity()(Context(ctx.image[:1])).item() == 0.0


def test_image_regularisers_against_numpy():
    ctx = _ctx()
    x = ctx.image.numpy().astype(np.float64)
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    for beta in (1.0, 2.0, 3.0):
        expected = ((dx ** 2 + dy ** 2) ** (beta / 2)).reshape(3, -1).mean(1)
        np.testing.assert_allclose(vz.TotalVariation(beta)(ctx).numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(vz.AlphaNorm(6)(ctx).numpy(), (np.abs(x - 0.5) ** 6).reshape(3, -1).mean(1),
                               rtol=1e-4)


def test_match_is_minus_squared_relative_error():
    ctx = _ctx()
    target = ctx.layers["a"][0].numpy()
    m = vz.Match("a", target * 1.1)
    err = np.linalg.norm((ctx.layers["a"].numpy() - 1.1 * target).reshape(3, -1), axis=1) / np.linalg.norm(1.1 * target)
    np.testing.assert_allclose(m.relative_error(ctx).numpy(), err, rtol=1e-5)
    assert m.relative_error(ctx)[0].item() == pytest.approx(0.1 / 1.1, rel=1e-5)
    with pytest.raises(ValueError, match="'target' parameter of Match has shape"):
        vz.Match("a", np.ones((2, 2)))(ctx)


# ---------------------------------------------------------------- runs on a small CNN

def test_channel_visualisation_raises_the_channel_and_keeps_the_model_intact(net):
    flags = [p.requires_grad for p in net.parameters()]
    weights = [p.detach().clone() for p in net.parameters()]
    vis = vz.FeatureVisualization(steps=40, random_state=0).visualize(Torch(net), vz.Channel("2", 3), SHAPE)
    start = vz.FeatureVisualization(steps=1, random_state=0).visualize(Torch(net), vz.Channel("2", 3), SHAPE)
    assert vis.final_objective[0, 0] > 3 * start.final_objective[0, 0] > 0
    assert vis.images.shape == (1, 1, *SHAPE) and vis.rgb.shape == (1, 1, 16, 16, 3)
    assert vis.images.min() >= 0.0 and vis.images.max() <= 1.0
    assert vis.n_queries == 41 and vis.optimizer == "autograd" and vis.steps_done == 40
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True))


def test_final_objective_is_the_objective_of_the_returned_images(net):
    obj = vz.ClassLogit(2) + vz.Channel("3", 1) - 0.1 * vz.TotalVariation()
    vis = vz.FeatureVisualization(steps=5, n_images=2, random_state=0).visualize(Torch(net), obj, SHAPE)
    x = torch.as_tensor(vis.images[0])
    with torch.no_grad():
        hidden = net[:4](x)
        expected = net(x)[:, 2] + hidden[:, 1].mean(dim=(1, 2)) - 0.1 * vz.TotalVariation().value(Context(x))
    np.testing.assert_allclose(vis.final_objective[0], expected.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vis.probabilities[0], torch.softmax(net(x), 1).detach().numpy(), rtol=1e-5)


def test_seeded_runs_are_reproducible(net):
    for model in (Torch(net), Callable(numpy_model(net), batch_size=64)):
        runs = [vz.FeatureVisualization(steps=6, random_state=s).visualize(model, vz.ClassLogit(1), SHAPE)
                for s in (7, 7, 8)]
        np.testing.assert_array_equal(runs[0].images, runs[1].images)
        np.testing.assert_array_equal(runs[0].objective, runs[1].objective)
        assert not np.array_equal(runs[0].images, runs[2].images)


def test_black_box_counts_queries_and_respects_the_budget(net):
    model = Callable(numpy_model(net), batch_size=50)
    vis = vz.FeatureVisualization(steps=10, n_pairs=4, random_state=0).visualize(
        model, [vz.ClassLogit(0), vz.ClassLogit(3)], SHAPE)
    assert vis.optimizer == "zeroth_order" and vis.n_queries == model.n_queries == 10 * 2 * 4 * 2 + 2
    capped = vz.FeatureVisualization(steps=10, n_pairs=4, max_queries=60, random_state=0).visualize(
        Callable(numpy_model(net)), vz.ClassLogit(0), SHAPE)
    assert capped.stopped_by_budget and capped.steps_done == 7 and capped.n_queries == 57
    with pytest.raises(QueryBudgetError, match="needs 8 model queries per step"):
        vz.FeatureVisualization(steps=10, n_pairs=4, max_queries=5).visualize(Callable(numpy_model(net)),
                                                                             vz.ClassLogit(0), SHAPE)


class Closeness(torch.nn.Module):
    """Scores ``(n, 2)``: minus 100 times the mean squared distance to a target image, and 0."""

    def __init__(self, target: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("target", torch.as_tensor(target))

    def forward(self, x):
        score = -100 * (x - self.target).pow(2).flatten(1).mean(dim=1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_zeroth_order_climbs_towards_a_known_optimum():
    """Black-box NES on a model whose class-0 score peaks at a known image, with an exact TV term alongside."""
    shape = (3, 8, 8)
    target = np.random.default_rng(0).uniform(0.2, 0.8, shape).astype(np.float32)
    module = Closeness(target)
    fn = Callable(lambda b: module(torch.as_tensor(b)).detach().numpy())
    for model in (fn, Torch(module)):
        obj = vz.ClassLogit(0) - 0.01 * vz.TotalVariation()
        vis = vz.FeatureVisualization(param=vz.Pixels(), steps=40, n_pairs=16, learning_rate=0.1,
                                     optimizer="zeroth_order", random_state=0).visualize(model, obj, shape)
        start = -100 * np.mean((0.5 - target) ** 2)          # the initial image is about grey
        final = -100 * np.mean((vis.images[0, 0] - target) ** 2)
        assert vis.optimizer == "zeroth_order" and final > 0.5 * start
        assert vis.objective[-1, 0, 0] > vis.objective[0, 0, 0]


def test_other_layouts(net):
    hwc = Callable(lambda b: numpy_model(net)(np.moveaxis(b, -1, 1)), input_layout="HWC", sample_shape=(16, 16, 3))
    vis = vz.FeatureVisualization(steps=3, n_pairs=2, random_state=0).visualize(hwc, vz.ClassLogit(0))
    assert vis.images.shape == (1, 1, 16, 16, 3)
    np.testing.assert_allclose(vis.rgb[0, 0], vis.images[0, 0])
    gray = Callable(lambda b: numpy_model(net)(np.repeat(b[:, None], 3, axis=1)), input_layout="HW")
    vis = vz.FeatureVisualization(steps=3, n_pairs=2, random_state=0).visualize(gray, vz.ClassLogit(0), (16, 16))
    assert vis.images.shape == (1, 1, 16, 16) and vis.rgb.shape == (1, 1, 16, 16, 3)
    with pytest.raises(ValueError, match="'decorrelate' parameter of Fourier"):
        vz.FeatureVisualization(param=vz.Fourier(decorrelate=True), steps=2).visualize(gray, vz.ClassLogit(0), (16, 16))


def test_deep_image_prior_class_model(net):
    vis = vz.FeatureVisualization(param=vz.DeepImagePrior(width=8, levels=2), steps=30, random_state=0).visualize(
        Torch(net), vz.ClassLogit(4), SHAPE)
    assert vis.objective[-5:].mean() > vis.objective[:5].mean()


def test_class_models_grid_and_png(net):
    vis = vz.class_models(Torch(net), SHAPE, visualizer=vz.FeatureVisualization(steps=3, random_state=0))
    assert vis.images.shape == (5, 1, *SHAPE)
    assert vis.objectives[4] == "ClassProbability(4, log=True)"
    png = vis.to_png(row_labels=list("abcde"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    chans = vz.channel_visualizations(Torch(net), "0", [0, 5], SHAPE,
                                     visualizer=vz.FeatureVisualization(steps=2, n_images=3, random_state=0))
    fig = chans.figure()
    assert len(fig.axes) == 6
    with pytest.raises(ValueError, match="'row_labels' parameter of grid needs 2 labels"):
        chans.figure(row_labels=["x"])


def test_transformed_probabilities_shape_and_queries(net):
    model = Torch(net)
    images = np.random.default_rng(0).random((2, *SHAPE)).astype(np.float32)
    probs = vz.transformed_probabilities(model, images, vz.Transforms(jitter=2), n_draws=5, random_state=0)
    assert probs.shape == (2, 5, 5) and model.n_queries == 10
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    same = vz.transformed_probabilities(model, images, vz.Transforms(), n_draws=3)
    with torch.no_grad():
        ref = torch.softmax(net(torch.as_tensor(images)), 1).numpy()
    np.testing.assert_allclose(same, np.repeat(ref[:, None], 3, axis=1), rtol=1e-5)


# ---------------------------------------------------------------- errors

def test_bad_layer_name_is_a_clear_error(net):
    with pytest.raises(ValueError, match=r"'layer' parameter of Channel names no submodule of Sequential: got 'conv9'"):
        vz.FeatureVisualization(steps=2).visualize(Torch(net), vz.Channel("conv9", 0), SHAPE)
    with pytest.raises(ValueError, match="'layer' parameter of PreImage names no submodule"):
        vz.PreImage("nope", steps=2).invert(Torch(net), np.zeros(SHAPE, np.float32))
    with pytest.raises(TypeError, match="'layer' parameter of Channel must be a module name"):
        vz.Channel(3, 0)


def test_channel_out_of_range_is_a_clear_error(net):
    with pytest.raises(ValueError, match=r"'channel' parameter of Channel must be in \[0, 5\]: layer '2' "
                                         r"\(channels\) has 6. Got 6"):
        vz.FeatureVisualization(steps=2).visualize(Torch(net), vz.Channel("2", 6), SHAPE)
    with pytest.raises(ValueError, match=r"'y' parameter of Neuron must be in \[0, 7\]"):
        vz.FeatureVisualization(steps=2).visualize(Torch(net), vz.Neuron("2", 0, y=8), SHAPE)
    with pytest.raises(ValueError, match="'channel' parameter of Channel must be an int >= 0. Got -1"):
        vz.Channel("2", -1)
    with pytest.raises(ValueError, match="'vector' parameter of Direction has 3 values but layer '2' has 6"):
        vz.FeatureVisualization(steps=2).visualize(Torch(net), vz.Direction("2", [1, 0, 0]), SHAPE)


def test_a_channel_that_is_off_everywhere_warns():
    """A ReLU channel that is off at every position gives no gradient: say so instead of silently returning grey."""
    conv = torch.nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.bias[0] = -100.0                          # channel 0 never turns on
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3)).eval()
    with pytest.warns(RuntimeWarning, match=r"Channel\('1', 0\) has zero gradient at the initial images"):
        vis = vz.FeatureVisualization(steps=3, random_state=0).visualize(Torch(net), vz.Channel("1", 0), SHAPE)
    assert vis.final_objective[0, 0] == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vz.FeatureVisualization(steps=3, random_state=0).visualize(Torch(net), vz.Channel("0", 0), SHAPE)


def test_black_box_objective_on_a_layer_is_a_clear_error(net):
    with pytest.raises(ValueError, match=r"'objective' parameter of FeatureVisualization reads layer\(s\) \['2'\]"):
        vz.FeatureVisualization(steps=2).visualize(Callable(numpy_model(net)), vz.ClassLogit(0) + vz.Channel("2", 0),
                                                  SHAPE)
    with pytest.raises(ValueError, match="reads layer"):
        vz.FeatureVisualization(steps=2, optimizer="zeroth_order").visualize(Torch(net), vz.Diversity("2"), SHAPE)
    with pytest.raises(ValueError, match="'param' parameter of FeatureVisualization is DeepImagePrior"):
        vz.FeatureVisualization(param=vz.DeepImagePrior(), steps=2).visualize(Callable(numpy_model(net)),
                                                                            vz.ClassLogit(0), SHAPE)
    with pytest.raises(TypeError, match="optimizer='autograd' of FeatureVisualization .* needs a"):
        vz.FeatureVisualization(optimizer="autograd").visualize(Callable(numpy_model(net)), vz.ClassLogit(0), SHAPE)
    with pytest.raises(TypeError, match="'model' parameter of PreImage.invert must be a perturbx.adapters.Torch"):
        vz.PreImage("2").invert(Callable(numpy_model(net)), np.zeros(SHAPE, np.float32))
    with pytest.raises(TypeError, match="'layer' parameter of layer_activations needs a perturbx.adapters.Torch"):
        vz.layer_activations(Callable(numpy_model(net)), np.zeros((3, *SHAPE)), "2")


def test_configuration_errors(net):
    with pytest.raises(ValueError, match="'steps' parameter of FeatureVisualization must be an int >= 1. Got 0"):
        vz.FeatureVisualization(steps=0)
    with pytest.raises(TypeError, match="'transforms' parameter of FeatureVisualization must be None, 'auto'"):
        vz.FeatureVisualization(transforms="lucid")
    with pytest.raises(TypeError, match="'param' parameter of FeatureVisualization must be a perturbx.visualize"):
        vz.FeatureVisualization(param="fourier")
    with pytest.raises(ValueError, match=r"'scale' parameter of Transforms must be a pair \(lo, hi\)"):
        vz.Transforms(scale=(1.2, 0.9))
    with pytest.raises(TypeError, match="'objective' parameter of FeatureVisualization must be an objective"):
        vz.FeatureVisualization().visualize(Torch(net), "class 3", SHAPE)
    with pytest.raises(ValueError, match="'shape' parameter of FeatureVisualization is needed"):
        vz.FeatureVisualization().visualize(Torch(net), vz.ClassLogit(0))
    with pytest.raises(ValueError, match=r"'shape' parameter of FeatureVisualization must be one sample's shape"):
        vz.FeatureVisualization().visualize(Torch(net), vz.ClassLogit(0), (16, 16))
    with pytest.raises(ValueError, match="'beta' parameter of TotalVariation must be a real number > 0"):
        vz.TotalVariation(0)
    with pytest.raises(ValueError, match="'tv' parameter of PreImage must be a real number"):
        vz.PreImage("2", tv=-1.0)


# ---------------------------------------------------------------- packaging

def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_import_perturbx_does_not_import_torch_or_visualize():
    out = _run("""
        import sys, perturbx
        print("torch" in sys.modules, "perturbx.visualize" in sys.modules, "matplotlib" in sys.modules)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_import_without_torch_says_what_to_install():
    out = _run("""
        import sys
        sys.modules["torch"] = None
        try:
            import perturbx.visualize
        except ImportError as exc:
            print(exc)
    """)
    assert out.returncode == 0, out.stderr
    assert "perturbx.visualize needs PyTorch" in out.stdout and "pip install 'perturbx[torch]'" in out.stdout
