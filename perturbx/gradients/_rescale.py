"""DeepLIFT's Rescale rule as module hooks, on batches that hold each input and its reference.

A forward pass runs ``2n`` rows: the inputs, then their references, row ``i`` paired
with row ``n + i``. While :func:`rescale_hooks` is active, every supported nonlinearity
passes back ``grad * (f(x) - f(r)) / (x - r)`` (the same multiplier for both rows of a
pair) instead of its gradient, where ``|x - r| >= eps``; elsewhere its ordinary gradient.
Max-pooling modules keep their gradient or, on request, use Captum's rule (differences
routed through the pooling indices of the input and of the reference). Everything else
(convolutions, linear layers, batch norm in eval mode, additions, average pooling) is
linear, where DeepLIFT's multipliers are the gradient.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from ._hooks import keep_input

#: elementwise nonlinearities that get the Rescale multiplier (Captum's set without nn.Softmax)
RESCALE_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus)
#: max-pooling modules -> (pool with indices, unpool)
MAXPOOL_TYPES = {nn.MaxPool1d: (F.max_pool1d, F.max_unpool1d), nn.MaxPool2d: (F.max_pool2d, F.max_unpool2d),
                 nn.MaxPool3d: (F.max_pool3d, F.max_unpool3d)}


@contextmanager
def rescale_hooks(module: nn.Module, eps: float, maxpool: str = "gradient") -> Iterator[int]:
    """Apply the Rescale rule to every supported submodule of ``module`` inside the block (yields their count).

    ``maxpool="rescale"`` also gives max-pooling modules Captum's rule; ``"gradient"`` leaves
    them their gradient (the DeepLIFT authors' default, ``MaxPoolDeepLiftMode.gradient``).
    """
    handles = []
    for sub in module.modules():
        if type(sub) in RESCALE_TYPES or (maxpool == "rescale" and type(sub) in MAXPOOL_TYPES):
            pending: list[torch.Tensor | None] = []
            handles.append(sub.register_forward_pre_hook(keep_input(pending)))
            handles.append(sub.register_forward_hook(_rescale_output(pending, eps)))
    try:
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()


def _rescale_output(pending: list, eps: float):
    def hook(module, _inputs, output):
        inp = pending.pop()
        if inp is None:
            return None
        if len(inp) % 2:
            raise ValueError(f"DeepLIFT pairs each input row with its reference, but {type(module).__name__} "
                             f"received {len(inp)} rows; the model must keep the batch axis first and unchanged.")
        if type(module) in MAXPOOL_TYPES:
            return _MaxPoolRescale.apply(inp, output.detach(), module, eps)
        with torch.no_grad():
            d_in = _pair_difference(inp)
            d_out = _pair_difference(output)
            near = d_in.abs() < eps
            multiplier = torch.where(near, torch.zeros_like(d_in), d_out / torch.where(near, 1.0, d_in))
        rescaled = output.detach() + (inp - inp.detach()) * multiplier
        return torch.where(near, output, rescaled)
    return hook


def _pair_difference(t: torch.Tensor) -> torch.Tensor:
    """``t[:n] - t[n:]`` repeated for both halves: the same value for an input row and its reference."""
    first, second = t.detach().chunk(2)
    return torch.cat([first - second] * 2)


class _MaxPoolRescale(torch.autograd.Function):
    """Captum's DeepLIFT rule for ``nn.MaxPool{1,2,3}d``; the plain gradient where ``|x - r| < eps``."""

    @staticmethod
    def forward(ctx, inp, out, module, eps):
        ctx.save_for_backward(inp.detach(), out)
        ctx.module, ctx.eps = module, eps
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        inp, out = ctx.saved_tensors
        m = ctx.module
        pool, unpool = MAXPOOL_TYPES[type(m)]
        x_out, r_out = out.chunk(2)
        both_max = torch.max(x_out, r_out)
        d_out = torch.cat([both_max - r_out, x_out - both_max])
        _, indices = pool(inp, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, True)
        routed = unpool(grad * d_out, indices, m.kernel_size, m.stride, m.padding, list(inp.shape))
        first, second = routed.chunk(2)
        routed = torch.cat([first + second] * 2)
        d_in = _pair_difference(inp)
        near = d_in.abs() < ctx.eps
        with torch.enable_grad():
            leaf = inp.detach().requires_grad_(True)
            pooled = pool(leaf, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, False)
            (plain,) = torch.autograd.grad(pooled, leaf, grad)
        return torch.where(near, plain, routed / torch.where(near, 1.0, d_in)), None, None, None
