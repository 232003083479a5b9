"""Module hooks, each attached by a context manager that removes it on the way out.

``capture_layer`` records what one layer returns so that gradients can be taken with
respect to it (Grad-CAM); ``modified_relu_gradients`` rewrites the gradient of every
``torch.nn.ReLU`` module (guided backpropagation, deconvnet). Hooks are removed when
the ``with`` block ends, whether the model returned or raised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


def resolve_layer(module: nn.Module, layer: str | None, owner: str) -> tuple[str, nn.Module]:
    """The submodule named ``layer`` (dotted, as in ``named_modules``), or the last ``Conv2d``.

    Returns
    -------
    name, submodule
    """
    named = dict(module.named_modules())
    if layer is None:
        convs = [name for name, m in named.items() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(f"{owner} looks for the last torch.nn.Conv2d of {type(module).__name__} when "
                             f"layer=None, but it has none; pass layer='<module name>' (one of "
                             f"{_some_names(named)}).")
        return convs[-1], named[convs[-1]]
    if layer not in named or layer == "":
        raise ValueError(f"The 'layer' parameter of {owner} names no submodule of {type(module).__name__}: "
                         f"got {layer!r}. Submodule names look like {_some_names(named)}.")
    return layer, named[layer]


def _some_names(named: dict[str, nn.Module], limit: int = 8) -> str:
    names = [n for n in named if n]
    shown = names[:limit // 2] + (["..."] if len(names) > limit else []) + names[-(limit // 2):]
    return ", ".join(repr(n) if n != "..." else n for n in dict.fromkeys(shown))


class LayerRecord:
    """Outputs of one layer during the forward passes inside :func:`capture_layer`.

    ``spatial`` (default): the output must be ``(N, C, h, w)``; otherwise any tensor.
    """

    def __init__(self, name: str, spatial: bool = True) -> None:
        self.name = name
        self.spatial = spatial
        self.outputs: list[torch.Tensor] = []

    def take(self) -> torch.Tensor:
        """The single output of the last forward pass (and forget it)."""
        outputs, self.outputs = self.outputs, []
        if len(outputs) != 1:
            raise ValueError(f"Layer {self.name!r} ran {len(outputs)} times in one forward pass; "
                             f"gradient methods need a layer that runs exactly once. Pick another layer.")
        out = outputs[0]
        if not isinstance(out, torch.Tensor) and not self.spatial:
            raise ValueError(f"Layer {self.name!r} returned a {type(out).__name__}; gradient methods need a layer "
                             f"that returns one tensor. Pick another layer.")
        if self.spatial and (not isinstance(out, torch.Tensor) or out.ndim != 4):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"Layer {self.name!r} returned {shape}; class activation maps need a layer "
                             f"with a 4-D output (N, C, h, w), such as a convolution or a residual block.")
        return out


@contextmanager
def capture_layer(layer: nn.Module, name: str, spatial: bool = True) -> Iterator[LayerRecord]:
    """Record ``layer``'s output during each forward pass run inside the block.

    The rest of the network gets a clone, so in-place operations after the layer
    (``ReLU(inplace=True)``) leave the recorded tensor, and its gradient, intact.
    ``spatial``: the output must be ``(N, C, h, w)`` (see :class:`LayerRecord`).
    """
    record = LayerRecord(name, spatial)

    def hook(_module, _inputs, output):
        record.outputs.append(output)
        return output.clone() if isinstance(output, torch.Tensor) else output

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


#: rule(grad_wrt_relu_input, grad_wrt_relu_output) -> new grad wrt the input
ReluRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_rule(grad_in: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Guided backpropagation: only positive gradients pass a ReLU (where it was active)."""
    return torch.relu(grad_in)


def deconv_rule(grad_in: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """Deconvnet: a ReLU passes the positive part of its output gradient, whatever its input."""
    return torch.relu(grad_out)


@contextmanager
def modified_relu_gradients(module: nn.Module, rule: ReluRule) -> Iterator[int]:
    """Replace the gradient of every ``nn.ReLU`` submodule's input by ``rule`` (yields their count).

    The ReLU runs on a clone of its input; the original input gets a tensor hook that
    swaps the gradient arriving at it for ``rule(grad_in, grad_out)``. This is Captum's
    mechanism, so both agree also for in-place ReLUs and ReLU modules used twice.
    ``torch.nn.functional.relu`` calls are not seen: models must use ``nn.ReLU`` modules.
    """
    handles = []
    for sub in module.modules():
        if isinstance(sub, nn.ReLU):
            pending: list[torch.Tensor | None] = []
            handles.append(sub.register_forward_pre_hook(keep_input(pending)))
            handles.append(sub.register_forward_hook(_relu_post_hook(pending, rule)))
    try:
        yield len(handles) // 2
    finally:
        for handle in handles:
            handle.remove()


def keep_input(pending: list):
    """A forward pre-hook that keeps the module's input in ``pending`` and runs the module on a clone.

    In-place modules then work on the clone, so the kept input stays intact for a backward hook
    that needs it; None is kept when no gradient will flow (grad disabled, or an input without one).
    """
    def hook(_module, inputs):
        inp = inputs[0]
        if not (torch.is_grad_enabled() and inp.requires_grad):
            pending.append(None)
            return None
        pending.append(inp)
        return (inp.clone(), *inputs[1:])
    return hook


def _relu_post_hook(pending: list, rule: ReluRule):
    def hook(_module, _inputs, output):
        inp = pending.pop()
        if inp is None:
            return None
        cell: dict[str, torch.Tensor] = {}

        def keep_grad_out(grad: torch.Tensor) -> None:
            cell["out"] = grad

        def swap_grad_in(grad: torch.Tensor) -> torch.Tensor | None:
            return rule(grad, cell["out"]) if "out" in cell else None

        output.register_hook(keep_grad_out)
        inp.register_hook(swap_grad_in)
        return None
    return hook
