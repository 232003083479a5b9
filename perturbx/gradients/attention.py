"""Vision transformers: attention rollout (Abnar & Zuidema 2020) and Grad-CAM on the patch tokens of a block."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbx._utils import check_choice, check_float, check_int

from ._hooks import resolve_layer
from ._session import Session, run_gradients
from .base import GradientExplainer
from .gradcam import UPSAMPLE_MODES

HEAD_FUSIONS = ("mean", "max", "min")


def token_grid(n_tokens: int, prefix: int, owner: str) -> tuple[int, int]:
    """(h, w) of the square grid of patch tokens after ``prefix`` class/register tokens."""
    side = round((n_tokens - prefix) ** 0.5)
    if n_tokens <= prefix or side * side != n_tokens - prefix:
        raise ValueError(f"{owner} reads {n_tokens} tokens, which are not {prefix} prefix token(s) followed by a "
                         f"square grid of patches; set 'prefix_tokens' to the number of class/register tokens.")
    return side, side


def _upsample(session: Session, maps: torch.Tensor, mode: str) -> np.ndarray:
    """Maps ``(T, h, w)`` resized to the sample's ``(H, W)`` (float64 numpy)."""
    size = session.layout.spatial_shape(session.x.shape)
    return torch.nn.functional.interpolate(maps.detach()[:, None], size=size, mode=mode)[:, 0].to(
        "cpu", torch.float64).numpy()


@contextmanager
def _record_attention(module: nn.Module, patterns: Sequence[str] | None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Outputs ``(n, heads, L, L)`` of the attention modules, in forward order, during the block."""
    named = [(n, m) for n, m in module.named_modules() if n]
    if patterns is None:
        chosen = [(n, m) for n, m in named if isinstance(m, nn.Softmax)]
    else:
        chosen = [(n, m) for n, m in named if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        what = "has no nn.Softmax module" if patterns is None else f"has no module matching {list(patterns)}"
        raise ValueError(f"The 'model' argument of AttentionRollout {what}. Rollout reads the attention "
                         f"probabilities from module outputs: name the modules that return them with "
                         f"layers='blocks.*.attn.attn_drop' (timm) or compute the softmax in an nn.Softmax module.")
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _i, out, name=n: seen.append((name, out))) for n, m in chosen]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class AttentionRollout(GradientExplainer):
    """How much each patch flows into the class token through all attention layers (Abnar & Zuidema 2020).

    With ``A_l`` the attention of layer ``l`` fused over heads, each layer's flow is
    ``B_l = (A_l + I) / 2`` (the residual connection), rows renormalised to sum to 1; the
    rollout is ``B_L ... B_2 B_1`` and the map is its class-token row over the patch tokens,
    ``(h, w)``, upsampled to the image. It needs no gradient and does not depend on the
    target: every target gets the same map (an honest limitation of the method, which the
    class-sensitivity test of :mod:`perturbx.metrics.trust` shows).

    Parameters
    ----------
    layers : str or sequence of str, optional
        ``fnmatch`` patterns of the modules whose outputs are the attention probabilities
        ``(N, heads, L, L)``; default every ``nn.Softmax`` module (as in
        :class:`perturbx.models.TinyViT`); for timm ViTs ``"blocks.*.attn.attn_drop"``.
    head_fusion : {"mean", "max", "min"}, default "mean"
        How the heads of a layer are combined (the paper averages).
    discard_ratio : float in [0, 1), default 0.0
        Share of the smallest attention weights of each fused layer set to zero before
        the residual is added (the class token's own column kept), as in the common
        ``vit-explain`` implementation; 0 is the paper's rollout.
    prefix_tokens : int, default 1
        Tokens before the patch grid (the class token first).
    upsample : {"nearest", "bilinear"}, default "bilinear"

    Notes
    -----
    Queries: one forward row (besides the reference query). ``extras``: ``raw`` ``(T, h, w)``,
    ``rollout`` ``(L, L)`` the full token-to-token flow, ``layers`` the attention modules read.
    """

    def __init__(self, layers: str | Sequence[str] | None = None, *, head_fusion: str = "mean",
                 discard_ratio: float = 0.0, prefix_tokens: int = 1, upsample: str = "bilinear") -> None:
        if isinstance(layers, str):
            layers = (layers,)
        if layers is not None and (not isinstance(layers, Sequence) or not all(isinstance(p, str) for p in layers)):
            raise TypeError(f"The 'layers' parameter of AttentionRollout must be a module-name pattern (str), a "
                            f"sequence of them or None. Got {layers!r}.")
        self.layers = None if layers is None else tuple(layers)
        self.head_fusion = check_choice(head_fusion, "head_fusion", "AttentionRollout", HEAD_FUSIONS)
        self.discard_ratio = check_float(discard_ratio, "discard_ratio", "AttentionRollout", low=0.0, high=1.0,
                                         high_open=True)
        self.prefix_tokens = check_int(prefix_tokens, "prefix_tokens", "AttentionRollout", minimum=1)
        self.upsample = check_choice(upsample, "upsample", "AttentionRollout", UPSAMPLE_MODES)

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        with _record_attention(session.module, self.layers) as seen, torch.no_grad():
            session.forward(xs)
        attn = [out for _, out in seen]
        bad = [(n, tuple(a.shape)) for n, a in seen if a.ndim != 4 or a.shape[-1] != a.shape[-2]]
        if bad:
            raise ValueError(f"AttentionRollout reads attention probabilities (N, heads, L, L), but module "
                             f"{bad[0][0]!r} returned {bad[0][1]}; name the attention modules with layers=.")
        rollout = rollout_matrix(attn, self.head_fusion, self.discard_ratio)       # (S, L, L)
        grid = token_grid(rollout.shape[-1], self.prefix_tokens, "AttentionRollout")
        session.memo["rollout"] = (rollout[0], [n for n, _ in seen])
        maps = rollout[:, 0, self.prefix_tokens:].reshape(len(xs), 1, *grid)
        return maps.expand(len(xs), session.n_targets, *grid)

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return _upsample(session, raw, self.upsample)

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        rollout, names = session.memo["rollout"]
        return {"rollout": rollout.to("cpu", torch.float64).numpy(), "layers": names}


def rollout_matrix(attentions: Sequence[torch.Tensor], head_fusion: str = "mean",
                   discard_ratio: float = 0.0) -> torch.Tensor:
    """``B_L ... B_1`` ``(N, L, L)`` from attention probabilities ``(N, heads, L, L)`` of layers 1..L."""
    result = None
    for a in attentions:
        fused = {"mean": a.mean(dim=1), "max": a.amax(dim=1), "min": a.amin(dim=1)}[head_fusion]
        k = int(fused[0].numel() * discard_ratio)
        if k:
            flat = fused.reshape(len(fused), -1)
            lowest = flat.topk(k, dim=1, largest=False).indices
            drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
            drop[:, 0] = False                                   # the class token's attention to itself stays
            fused = flat.masked_fill(drop, 0.0).view_as(fused)
        eye = torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
        flow = (fused + eye) / 2
        flow = flow / flow.sum(dim=-1, keepdim=True)
        result = flow if result is None else flow @ result
    return result


class TokenGradCAM(GradientExplainer):
    """Grad-CAM on the patch tokens of a transformer layer: ``relu(sum_d w_d T_d)``, ``w_d`` the mean gradient.

    The layer's output ``(N, L, D)`` is read as ``D`` feature maps over the ``(h, w)`` patch
    grid (prefix tokens dropped), and Grad-CAM is taken on them exactly as
    :class:`GradCAM` does on a convolution's channels. On a ViT the usual layer is the
    input of the last attention, ``blocks[-1].norm1``: the last block's own output
    reaches the class token, the only token the head reads, without passing any
    attention, so its patch tokens get no gradient at all.

    Parameters
    ----------
    layer : str or None, default None
        Module name (as in ``named_modules()``) whose output is the tokens ``(N, L, D)``;
        None takes the last module whose name ends in ``"norm1"`` (timm's and
        :class:`perturbx.models.TinyViT`'s first norm of a block).
    prefix_tokens : int, default 1
        Class/register tokens before the patch grid.
    relu : bool, default True
    upsample : {"nearest", "bilinear"}, default "bilinear"

    Notes
    -----
    Queries: one forward row per target. ``extras``: ``raw`` ``(T, h, w)``, ``layer``.
    """

    def __init__(self, layer: str | None = None, *, prefix_tokens: int = 1, relu: bool = True,
                 upsample: str = "bilinear") -> None:
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"The 'layer' parameter of TokenGradCAM must be a module name (str) such as "
                            f"'blocks.3.norm1', or None. Got {type(layer).__name__}.")
        if not isinstance(relu, bool):
            raise TypeError(f"The 'relu' parameter of TokenGradCAM must be True or False. Got {relu!r} instead.")
        self.layer = layer
        self.prefix_tokens = check_int(prefix_tokens, "prefix_tokens", "TokenGradCAM", minimum=0)
        self.relu = relu
        self.upsample = check_choice(upsample, "upsample", "TokenGradCAM", UPSAMPLE_MODES)

    def _layer(self, session: Session) -> tuple[str, nn.Module]:
        if self.layer is not None:
            return resolve_layer(session.module, self.layer, "TokenGradCAM")
        norms = [n for n, _ in session.module.named_modules() if n.endswith("norm1")]
        if not norms:
            raise ValueError(f"TokenGradCAM looks for the last module named '*norm1' when layer=None, but "
                             f"{type(session.module).__name__} has none; pass layer='<module name>' of a layer "
                             f"that returns the tokens (N, L, D).")
        return norms[-1], dict(session.module.named_modules())[norms[-1]]

    def _attribute(self, session: Session, xs: torch.Tensor) -> torch.Tensor:
        name, module = self._layer(session)
        session.memo["layer"] = name
        n_targets = session.n_targets
        maps: list[torch.Tensor] = []

        def consume(chunk) -> None:
            act, grad = chunk.act, chunk.grad
            if act.ndim != 3:
                raise ValueError(f"TokenGradCAM needs a layer that returns tokens (N, L, D); {name!r} returned "
                                 f"{tuple(act.shape)}. For convolutional layers use GradCAM.")
            grid = token_grid(act.shape[1], self.prefix_tokens, "TokenGradCAM")
            act, grad = act[:, self.prefix_tokens:], grad[:, self.prefix_tokens:]
            weights = grad.mean(dim=1, keepdim=True)                              # (n, 1, D)
            cam = (weights * act).sum(dim=2).view(len(act), *grid)
            maps.append(torch.relu(cam) if self.relu else cam)

        rows = torch.arange(len(xs) * n_targets, device=xs.device)
        run_gradients(session, len(rows), lambda lo, hi: xs[rows[lo:hi] // n_targets], rows % n_targets,
                      consume, layer=(module, name), spatial_layer=False)
        cams = torch.cat(maps)
        return cams.view(len(xs), n_targets, *cams.shape[1:])

    def _finish(self, session: Session, raw: torch.Tensor) -> np.ndarray:
        return _upsample(session, raw, self.upsample)

    def _extras(self, session: Session, raw: torch.Tensor) -> dict[str, Any]:
        return {"layer": session.memo["layer"]}
