"""Layers by name: checked against ``module.named_modules()`` and recorded by forward hooks.

:func:`capture` attaches one forward hook per named layer for the duration of a ``with``
block and removes them on the way out, whether the model returned or raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from ._torch import torch


def layer_names(module) -> list[str]:
    """Names of every submodule, as ``named_modules`` spells them (the root, ``""``, left out)."""
    return [name for name, _ in module.named_modules() if name]


def resolve(module, names: Iterable[str], owner: str) -> dict[str, object]:
    """The submodules called ``names``; a name that does not exist is a ValueError naming ``layer``."""
    named = dict(module.named_modules())
    found = {}
    for name in names:
        if not isinstance(name, str) or name not in named or name == "":
            some = [n for n in named if n]
            shown = ", ".join(repr(n) for n in some[:6]) + (", ..." if len(some) > 6 else "")
            raise ValueError(f"The 'layer' parameter of {owner} names no submodule of {type(module).__name__}: got "
                             f"{name!r}. Layers are named as in module.named_modules(), e.g. {shown}; "
                             f"perturbx.visualize.layer_names(module) lists them all.")
        found[name] = named[name]
    return found


class Recorder:
    """Outputs of the hooked layers during one forward pass."""

    def __init__(self) -> None:
        self.outputs: dict[str, list] = {}

    def take(self) -> dict[str, object]:
        """Each layer's output of the last forward pass (and forget them)."""
        outputs, self.outputs = self.outputs, {}
        taken = {}
        for name, values in outputs.items():
            if len(values) != 1:
                raise ValueError(f"Layer {name!r} ran {len(values)} times in one forward pass; objectives need a "
                                 f"layer that runs exactly once. Pick another layer.")
            if not isinstance(values[0], torch.Tensor):
                raise ValueError(f"Layer {name!r} returned {type(values[0]).__name__}, not a tensor; pick a layer "
                                 f"whose output is one tensor (N, C, h, w) or (N, C).")
            taken[name] = values[0]
        return taken


@contextmanager
def capture(layers: dict[str, object]) -> Iterator[Recorder]:
    """Record the output of each ``layers[name]`` during the forward passes inside the block.

    The rest of the network gets a clone, so in-place operations after a layer leave the
    recorded tensor, and its gradient, intact.
    """
    recorder = Recorder()
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            recorder.outputs.setdefault(name, []).append(output)
            return output.clone() if isinstance(output, torch.Tensor) else output
        return hook

    try:
        for name, layer in layers.items():
            handles.append(layer.register_forward_hook(make_hook(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
