"""Attention rollout and Grad-CAM on transformer tokens, on the demo ViT and on hand-made attention."""

from __future__ import annotations

import numpy as np
import pytest

from perturbx.adapters import Torch

torch = pytest.importorskip("torch")
G = pytest.importorskip("perturbx.gradients")
vit_module = pytest.importorskip("perturbx.models.vit")
from torch import nn  # noqa: E402

from perturbx.datasets import make_shapes  # noqa: E402
from perturbx.models import DEMO_TEST_SEED  # noqa: E402


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vit():
    """The trained demo ViT (trained once and cached, like the demo CNN)."""
    return vit_module.load_demo_vit()


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(8, random_state=DEMO_TEST_SEED)


def attentions(model, x):
    """Every attention's probabilities (heads, L, L) for one sample, read by our own hooks."""
    seen = []
    handles = [m.register_forward_hook(lambda m, i, o: seen.append(o[0].detach().double().numpy()))
               for m in model.modules() if isinstance(m, nn.Softmax)]
    try:
        with torch.no_grad():
            model(torch.as_tensor(x)[None])
    finally:
        for h in handles:
            h.remove()
    return seen


def rollout_by_hand(layers, fusion="mean", discard=0.0):
    """Abnar & Zuidema's rollout in numpy: B_l = (A_l + I) / 2, rows renormalised, B_L ... B_1."""
    result = np.eye(layers[0].shape[-1])
    for a in layers:
        fused = {"mean": a.mean(0), "max": a.max(0), "min": a.min(0)}[fusion]
        k = int(fused.size * discard)
        if k:
            flat = fused.ravel().copy()
            lowest = np.argsort(flat, kind="stable")[:k]
            flat[lowest[lowest != 0]] = 0.0
            fused = flat.reshape(fused.shape)
        b = (fused + np.eye(len(fused))) / 2
        result = (b / b.sum(1, keepdims=True)) @ result
    return result


def test_the_demo_vit_is_trained_and_cached(vit, shapes):
    assert vit.demo_accuracy >= 0.9
    with torch.no_grad():
        pred = vit(torch.as_tensor(shapes.images)).argmax(1).numpy()
    assert (pred == shapes.labels).mean() >= 0.75
    assert [n for n, m in vit.named_modules() if isinstance(m, nn.Softmax)] == ["blocks.0.attn.softmax",
                                                                                 "blocks.1.attn.softmax"]


@pytest.mark.parametrize(("fusion", "discard"), [("mean", 0.0), ("max", 0.0), ("min", 0.0), ("mean", 0.6)])
def test_rollout_equals_the_papers_product(vit, shapes, fusion, discard):
    x = shapes.images[0]
    e = G.AttentionRollout(head_fusion=fusion, discard_ratio=discard).explain(Torch(vit), x, target=[0, 2])
    full = rollout_by_hand(attentions(vit, x), fusion, discard)
    np.testing.assert_allclose(e.rollout, full, rtol=1e-4, atol=1e-7)
    expected = full[0, 1:].reshape(8, 8)
    np.testing.assert_allclose(e.raw, np.stack([expected, expected]), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(e.rollout.sum(1), 1.0, rtol=1e-5)                   # each row is a distribution
    assert e.attributions.shape == (2, 64, 64) and e.layers == ["blocks.0.attn.softmax", "blocks.1.attn.softmax"]
    assert e.n_queries == 2                               # the reference query and the pass that reads attention


def test_rollout_of_attention_to_oneself_is_the_identity():
    """A layer whose tokens attend only to themselves moves nothing: the class token keeps all of its flow."""

    class SelfOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(3, 4, 2, stride=2)
            self.softmax = nn.Softmax(dim=-1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            tokens = torch.cat([x.new_zeros(len(x), 1, 4), self.embed(x).flatten(2).transpose(1, 2)], 1)
            scores = torch.eye(tokens.shape[1]) * 50.0                    # softmax ~ identity
            attn = self.softmax(scores.expand(len(x), 2, -1, -1))
            return self.head((attn.mean(1) @ tokens)[:, 0])

    x = np.random.default_rng(0).random((3, 4, 4), dtype=np.float32)
    e = G.AttentionRollout().explain(Torch(SelfOnly()), x)
    np.testing.assert_allclose(e.raw, 0.0, atol=1e-12)
    np.testing.assert_allclose(e.rollout[0, 0], 1.0, atol=1e-12)


def test_rollout_points_at_the_object(vit, shapes):
    """On the trained ViT the class token's flow comes mostly from the object's patches."""
    ratio = []
    for x, label, mask in zip(shapes.images, shapes.labels, shapes.masks, strict=True):
        a = G.AttentionRollout().explain(Torch(vit), x, target=int(label)).attributions
        ratio.append(a[mask].sum() / a.sum() / mask.mean())
    assert np.mean(ratio) > 2.0                          # measured 5.0 on 16 images


def test_token_gradcam_equals_gradcam_by_hand(vit, shapes):
    x = shapes.images[1]
    e = G.TokenGradCAM(relu=False, upsample="nearest").explain(Torch(vit), x, target=[1, 3])
    assert e.layer == "blocks.1.norm1"
    for i, t in enumerate([1, 3]):
        store = {}
        handle = vit.blocks[1].norm1.register_forward_hook(lambda m, inp, out, store=store: store.setdefault("t", out))
        try:
            out = vit(torch.as_tensor(x)[None])
            (grad,) = torch.autograd.grad(out[0, t], store["t"])
        finally:
            handle.remove()
        tokens, grad = store["t"][0, 1:].detach(), grad[0, 1:]
        cam = (tokens * grad.mean(0)).sum(1).reshape(8, 8).double().numpy()
        np.testing.assert_allclose(e.raw[i], cam, rtol=1e-4, atol=1e-7)
        up = np.kron(cam, np.ones((8, 8)))
        np.testing.assert_allclose(e.attributions[i], up, rtol=1e-4, atol=1e-7)


def test_token_gradcam_on_the_last_blocks_output_is_zero(vit, shapes):
    """The head reads only the class token, which the last block's output patches never reach: no gradient."""
    e = G.TokenGradCAM("blocks.1", relu=False).explain(Torch(vit), shapes.images[2], target=0)
    np.testing.assert_array_equal(e.raw, 0.0)


def test_rollout_is_the_same_map_for_every_class(vit, shapes):
    e = G.AttentionRollout().explain(Torch(vit), shapes.images[3], target=[0, 1, 2, 3])
    for i in range(1, 4):
        np.testing.assert_array_equal(e.attributions[i], e.attributions[0])


# --- errors ---------------------------------------------------------------------------------------

def test_rollout_errors(vit, shapes):
    x = shapes.images[0]
    cnn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    cnn(torch.as_tensor(x)[None])
    with pytest.raises(ValueError, match="AttentionRollout has no nn.Softmax module"):
        G.AttentionRollout().explain(Torch(cnn), x)
    with pytest.raises(ValueError, match=r"has no module matching \['blocks\.\*\.attn\.attn_drop'\]"):
        G.AttentionRollout("blocks.*.attn.attn_drop").explain(Torch(vit), x)
    with pytest.raises(ValueError, match="are not 2 prefix token"):
        G.AttentionRollout(prefix_tokens=2).explain(Torch(vit), x)
    with pytest.raises(ValueError, match=r"module 'blocks.0.attn.qkv' returned \(1, 65, 192\)"):
        G.AttentionRollout("blocks.0.attn.qkv").explain(Torch(vit), x)


@pytest.mark.parametrize(("factory", "error", "match"), [
    (lambda: G.AttentionRollout(head_fusion="median"), ValueError, "'head_fusion' parameter of AttentionRollout"),
    (lambda: G.AttentionRollout(discard_ratio=1.0), ValueError, "'discard_ratio' parameter of AttentionRollout"),
    (lambda: G.AttentionRollout(layers=3), TypeError, "'layers' parameter of AttentionRollout"),
    (lambda: G.TokenGradCAM(layer=2), TypeError, "'layer' parameter of TokenGradCAM must be a module name"),
    (lambda: G.TokenGradCAM(relu="yes"), TypeError, "'relu' parameter of TokenGradCAM"),
])
def test_constructor_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_token_gradcam_needs_tokens(vit, shapes):
    with pytest.raises(ValueError, match=r"needs a layer that returns tokens \(N, L, D\); 'patch_embed.0' returned"):
        G.TokenGradCAM("patch_embed.0").explain(Torch(vit), shapes.images[0])
    with pytest.raises(ValueError, match="looks for the last module named '\\*norm1'"):
        G.TokenGradCAM().explain(Torch(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 62 * 62, 2))),
                                 shapes.images[0])
