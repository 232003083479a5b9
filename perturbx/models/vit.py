"""A small vision transformer of our own definition, trained on the built-in shapes (optional dependency: torch).

:class:`TinyViT` follows the ViT recipe of Dosovitskiy et al. (2021) at toy scale: a
patch embedding, a class token, learned position embeddings, pre-norm blocks of
multi-head self-attention and an MLP, and a linear head on the class token. Every
attention's probabilities come out of an ``nn.Softmax`` module (``blocks.<i>.attn.softmax``),
so hooks can read them (attention rollout), and module names follow timm (``blocks.<i>.norm1``,
``attn``, ``norm2``, ``mlp``, ``norm``, ``head``). :func:`load_demo_vit` gives a hybrid
ViT (the demo CNN's convolutional trunk as patch embedding, two transformer blocks)
trained on :func:`perturbx.datasets.make_shapes` once and cached like the demo CNN.
"""

from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("perturbx.models needs PyTorch: pip install 'perturbx[torch]'") from e

import os
import time

from perturbx.datasets import CLASS_NAMES, make_shapes

from . import _cache
from .classifier import _N_TEST, DEMO_TEST_SEED, DEMO_TRAIN_SEED, _accuracy

__all__ = ["VIT_RECIPE_VERSION", "TinyViT", "demo_vit", "load_demo_vit", "train_demo_vit"]

#: Version of the training recipe; part of the cache file name.
VIT_RECIPE_VERSION: str = "1"


class Attention(nn.Module):
    """Multi-head self-attention whose probabilities pass through ``self.softmax`` (an ``nn.Softmax`` module)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"The 'dim' of TinyViT ({dim}) must be a multiple of 'heads' ({heads}).")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = self.softmax((q @ k.transpose(-2, -1)) * self.scale)        # (n, heads, L, L)
        return self.proj((attn @ v).transpose(1, 2).reshape(n, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """A vision transformer for small images: ``(N, C, H, W)`` -> logits ``(N, n_classes)``.

    ``patch_embed`` turns the image into a ``grid x grid`` map of ``dim``-dimensional
    tokens (by default a ``patch_size`` convolution with the same stride, as in ViT); a
    class token and learned position embeddings are added, ``depth`` pre-norm blocks of
    ``heads``-head self-attention and an MLP follow, and a linear head reads the class
    token after a final LayerNorm.

    Parameters
    ----------
    n_classes : int, default 4
    patch_embed : torch.nn.Module, optional
        Any module mapping images to ``(N, dim, grid, grid)`` (a convolutional stem makes a
        hybrid ViT, Dosovitskiy et al. 2021, section 3.1); default
        ``Conv2d(in_channels, dim, patch_size, stride=patch_size)``.
    grid : int, default 8
        Patch tokens per side (``H = grid * patch_size`` for the default embedding).
    dim : int, default 64
    depth : int, default 2
    heads : int, default 4
    mlp_ratio : float, default 2.0
    patch_size : int, default 8
    in_channels : int, default 3

    Attributes
    ----------
    grid : (int, int)
        Patch tokens per column and row.
    """

    def __init__(self, n_classes: int = 4, *, patch_embed: nn.Module | None = None, grid: int = 8, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp_ratio: float = 2.0, patch_size: int = 8,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.grid = (grid, grid)
        self.patch_embed = (patch_embed if patch_embed is not None
                            else nn.Conv2d(in_channels, dim, patch_size, stride=patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid * grid, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` to logits ``(N, n_classes)``."""
        return self.classify(self.patch_embed(x))

    def classify(self, embedded: torch.Tensor) -> torch.Tensor:
        """Logits from the patch embedding's output ``(N, dim, grid, grid)``."""
        tokens = embedded.flatten(2).transpose(1, 2)                        # (N, P, dim)
        if tokens.shape[1] != self.grid[0] * self.grid[1]:
            raise ValueError(f"TinyViT expects a {self.grid[0]}x{self.grid[1]} grid of patch tokens; the patch "
                             f"embedding returned {tuple(embedded.shape[2:])} (check the image size).")
        cls = self.cls_token.expand(len(tokens), -1, -1)
        tokens = self.blocks(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        return self.head(self.norm(tokens)[:, 0])


def demo_vit(n_classes: int = 4) -> TinyViT:
    """The demo ViT's architecture, untrained: a hybrid whose patch embedding is :class:`~perturbx.models.DemoCNN`'s
    convolutional trunk (64 channels on an 8 x 8 grid for 64 x 64 images) and a 1 x 1 convolution to 64 dimensions,
    then two transformer blocks of four heads."""
    from .classifier import DemoCNN

    trunk = DemoCNN(n_classes).features
    return TinyViT(n_classes, patch_embed=nn.Sequential(trunk, nn.Conv2d(64, 64, 1)), grid=8, dim=64, depth=2,
                   heads=4)


def train_demo_vit(*, epochs: int = 6, random_state: int = 0, verbose: bool = False) -> tuple[TinyViT, float]:
    """Train the demo ViT (:func:`demo_vit`) on ``make_shapes`` on the CPU (27 s of CPU time with one thread).

    The convolutional trunk is the trained demo CNN's (:func:`perturbx.models.load_demo_model`,
    frozen, its features computed once for the 3000 training images of the demo CNN); the
    projection, the transformer blocks and the head are trained with AdamW and a one-cycle
    schedule, with random flips of the feature maps. The global torch random state is left
    untouched.

    Parameters
    ----------
    epochs : int, default 6
    random_state : int, default 0
        Seeds the initialisation, the shuffling and the flips.
    verbose : bool, default False
        Print the loss per epoch and the held-out accuracy.

    Returns
    -------
    model : TinyViT
        Trained, in eval mode, on the CPU (parameters require grad again).
    accuracy : float
        Accuracy on ``make_shapes(500, random_state=DEMO_TEST_SEED)``.
    """
    from .classifier import load_demo_model

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1; got {epochs}")
    t0 = time.perf_counter()
    train = make_shapes(3000, random_state=DEMO_TRAIN_SEED)
    test = make_shapes(_N_TEST, random_state=DEMO_TEST_SEED)
    cnn = load_demo_model()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        gen = torch.Generator().manual_seed(random_state)
        model = demo_vit(len(CLASS_NAMES))
        model.patch_embed[0].load_state_dict(cnn.features.state_dict())
        model.patch_embed[0].eval().requires_grad_(False)
        with torch.no_grad():
            feats = torch.cat([model.patch_embed[0](torch.from_numpy(train.images[i:i + 250]))
                               for i in range(0, len(train.images), 250)])
        labels = torch.from_numpy(train.labels)
        trained = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trained, lr=2e-3, weight_decay=0.05)
        batch_size, n = 64, len(feats)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * -(-n // batch_size),
                                                    pct_start=0.2)
        for module in (model.patch_embed[1], model.blocks, model.norm, model.head):
            module.train()
        for epoch in range(epochs):
            perm, total = torch.randperm(n, generator=gen), 0.0
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                f = feats[idx]
                if torch.rand((), generator=gen) < 0.5:
                    f = f.flip(-1)
                if torch.rand((), generator=gen) < 0.5:
                    f = f.flip(-2)
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model.classify(model.patch_embed[1](f)), labels[idx])
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}: loss {total / n:.4f} ({time.perf_counter() - t0:.1f} s)")
    model.eval().requires_grad_(True)
    acc = _accuracy(model, test.images, test.labels)
    if verbose:
        print(f"held-out accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s total)")
    return model, acc


def load_demo_vit(*, cache_dir: str | os.PathLike | None = None, retrain: bool = False) -> TinyViT:
    """The trained demo ViT (:func:`demo_vit`), trained by :func:`train_demo_vit` on first use and cached.

    Cached as ``cache_dir / "demo_vit_v<version>.pt"`` like :func:`perturbx.models.load_demo_model`
    (``cache_dir=None``: ``$PERTURBX_CACHE`` or ``~/.cache/perturbx``); the first call also
    loads (or trains) the demo CNN, whose trunk it reuses. The held-out accuracy is
    ``model.demo_accuracy``.
    """

    def train() -> tuple[TinyViT, dict]:
        model, acc = train_demo_vit()
        return model, {"accuracy": float(acc), "n_classes": len(CLASS_NAMES)}

    model, blob = _cache.load_or_train(
        _cache.cache_file(cache_dir, "demo_vit", VIT_RECIPE_VERSION), VIT_RECIPE_VERSION, retrain=retrain,
        build=lambda blob: demo_vit(int(blob["n_classes"])), train=train)
    model.demo_accuracy = float(blob["accuracy"])
    return model
