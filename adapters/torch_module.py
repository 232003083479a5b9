"""Adapter for a PyTorch module; batches are built and evaluated on its device."""

from __future__ import annotations

from perturbx._utils import check_choice
from perturbx.backend import TorchBackend

from .base import Adapter


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("perturbx.adapters.Torch needs PyTorch: pip install 'perturbx[torch]'") from exc
    return torch


class Torch(Adapter):
    """Wrap a ``torch.nn.Module`` that maps ``(N, *sample_shape)`` to ``(N, n_classes)``.

    The module is put in eval mode; forward passes run under ``torch.inference_mode``
    (no autograd). Perturbed batches are rendered directly on ``device``, so for a
    GPU model nothing but the class scores crosses the bus.

    Parameters
    ----------
    module : torch.nn.Module
    device : str or torch.device, optional
        Where to run; defaults to the device of the module's first parameter (CPU for a
        module without parameters). The module is moved there.
    batch_size : int, default 64
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
    output : {"logits", "probs"}, default "logits"
        "probs" applies a softmax over the class axis to what the module returns.
    """

    def __init__(self, module, *, device=None, batch_size: int = 64, input_layout: str = "CHW",
                 output: str = "logits") -> None:
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Torch adapter needs a torch.nn.Module. Got {type(module).__name__}.")
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self.output = check_choice(output, "output", "Torch", ("logits", "probs"))
        if device is None:
            first = next(module.parameters(), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self._backend = TorchBackend(self.device)

    @property
    def backend(self) -> TorchBackend:
        return self._backend

    def _forward(self, batch):
        torch = self._backend._torch
        with torch.inference_mode():
            out = self.module(batch)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"The torch module returned {type(out).__name__}; it must return a "
                                f"tensor of scores (n, n_classes).")
            if out.ndim == 2 and self.output == "probs":
                out = torch.softmax(out, dim=1)
            return out.detach().to("cpu", torch.float64).numpy()

    def __repr__(self) -> str:
        return (f"Torch({type(self.module).__name__}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, input_layout={self.input_layout!r}, output={self.output!r})")
