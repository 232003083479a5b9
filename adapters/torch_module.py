"""Adapter for a PyTorch module; batches are built and evaluated on its device."""

from __future__ import annotations

import numpy as np

from perturbx._utils import check_choice, check_sample_shape
from perturbx.backend import TorchBackend
from perturbx.targets import Class, Target, check_target_values

from .base import Adapter, classes_only, evaluate_parts, select_parts, slice_rows, to_numpy_output


def _torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("perturbx.adapters.Torch needs PyTorch: pip install 'perturbx[torch]'") from exc
    return torch


class Torch(Adapter):
    """Wrap a ``torch.nn.Module`` that maps ``(N, *sample_shape)`` to scores ``(N, n_classes)`` or any output.

    The module is put in eval mode; forward passes run under ``torch.inference_mode``
    (no autograd). Perturbed batches are rendered directly on ``device``, and a target
    that is a torch expression of the output (class scores, :class:`~perturbx.targets.Region`,
    :class:`~perturbx.targets.Output`, :class:`~perturbx.targets.Similarity`) is computed
    there too, so for a GPU model nothing but the explained scalars crosses the bus. The
    module may also return a tuple or dict of tensors (named outputs) or a list of per-image
    dicts (torchvision's detection format).

    Parameters
    ----------
    module : torch.nn.Module
    device : str or torch.device, optional
        Where to run; defaults to the device of the module's first parameter (CPU for a
        module without parameters). The module is moved there. A device this machine does
        not have (``"cuda"`` without a CUDA build of PyTorch and a GPU) is a ValueError.
    batch_size : int, default 64
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
    output : {"logits", "probs"}, default "logits"
        "probs" applies a softmax over the class axis to what the module returns when it
        is a 2-D tensor ``(N, n_classes)``; other outputs are left as they are (for a
        segmentation model's probabilities use ``perturbx.targets.Region(softmax=True)``).
    sample_shape : tuple of int, optional
        Shape of one sample the module takes (e.g. ``(3, 224, 224)``); when given, inputs of
        another shape are refused before the module runs. Without it, a sample whose shape
        looks like the other channel order is refused; declaring the shape says it is meant.
    autocast : {None, "bfloat16", "float16"}, default None
        Run the black-box forward passes under ``torch.autocast`` in that precision (as
        deployed models often do); outputs are cast back to float32. Maps then differ from
        float32 ones by the model's own rounding (tests: Pearson > 0.99 for bfloat16).
    channels_last : bool, default False
        Keep the module's weights and every batch in ``torch.channels_last`` memory format
        (faster convolutions on many GPUs and recent CPUs); the same numbers up to rounding.
    compile : bool or dict, default False
        Run the black-box forward passes through ``torch.compile(module, **options)``
        (compiled on the first call, which takes seconds to a minute; a dict passes options
        such as ``{"mode": "max-autotune"}``). Gradient methods use the plain module.

    Notes
    -----
    Samples are float32 (float64 and integer arrays are converted); raw uint8/uint16 pixels
    are refused rather than rescaled: divide by 255 (or 65535) yourself if the module takes
    [0, 1].
    """

    def __init__(self, module, *, device=None, batch_size: int = 64, input_layout: str = "CHW",
                 output: str = "logits", sample_shape: tuple[int, ...] | None = None, autocast: str | None = None,
                 channels_last: bool = False, compile: bool | dict = False) -> None:
        torch = _torch()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"Torch adapter needs a torch.nn.Module. Got {type(module).__name__}.")
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self.output = check_choice(output, "output", "Torch", ("logits", "probs"))
        self._sample_shape = None if sample_shape is None else check_sample_shape(sample_shape, self.layout, "Torch")
        if device is None:
            first = next(module.parameters(), None)
            device = first.device if first is not None else "cpu"
        self.device = _check_device(torch, device)
        self.autocast = None if autocast is None else check_choice(autocast, "autocast", "Torch",
                                                                    ("bfloat16", "float16"))
        if not isinstance(channels_last, bool) or not isinstance(compile, (bool, dict)):
            raise TypeError(f"The 'channels_last' parameter of Torch must be True or False and 'compile' True, False "
                            f"or a dict of torch.compile options. Got {channels_last!r} and {compile!r}.")
        self.channels_last, self.compile = channels_last, compile
        self.module = module.to(self.device).eval()
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self._compiled = None
        self._backend = TorchBackend(self.device)

    @property
    def backend(self) -> TorchBackend:
        return self._backend

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self._sample_shape

    def _forward(self, batch):
        torch = self._backend._torch
        with torch.inference_mode():
            return self._run(batch)

    def _run(self, batch):
        """The module's output for a batch (no autograd), with the adapter's precision, layout and compilation."""
        torch = self._backend._torch
        if self.channels_last and batch.ndim == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        module = self._compiled_module() if self.compile else self.module
        if self.autocast is None:
            return self._postprocess(module(batch))
        with torch.autocast(device_type=self.device.type, dtype=getattr(torch, self.autocast)):
            out = module(batch)
        return self._postprocess(_to_float32(torch, out))

    def _compiled_module(self):
        if self._compiled is None:
            options = self.compile if isinstance(self.compile, dict) else {}
            self._compiled = self._backend._torch.compile(self.module, **options)
        return self._compiled

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_compiled"] = None  # compiled again where it is used
        return state

    def _postprocess(self, out):
        """The module's output with ``output="probs"`` applied (a 2-D tensor only)."""
        torch = self._backend._torch
        if isinstance(out, torch.Tensor) and out.ndim == 2 and self.output == "probs":
            return torch.softmax(out, dim=1)
        return out

    def predict_target(self, batch, target: Target) -> np.ndarray:
        """Scalars ``(n, T)`` of a bound target; torch-expression targets are computed on the device."""
        torch = self._backend._torch
        if isinstance(target, Class) or not target.differentiable:
            return super().predict_target(batch, target)
        n = int(batch.shape[0])
        with torch.inference_mode():
            out = self._run(batch)
            self.n_queries += n
            if not isinstance(out, (torch.Tensor, dict)):
                return self._evaluate_raw(out, n, target)
            values = target.torch_scores(_as_float64(out)).to("cpu").numpy()
        return check_target_values(values, n, target.n_outputs, target)

    def predict_targets(self, batch, parts: list[tuple[Target, int]]) -> list[np.ndarray]:
        """Several explanations' rows in one forward; torch-expression targets on the device."""
        device_side = all(t.differentiable and not isinstance(t, Class) for t, _ in parts)
        if len(parts) == 1 or not device_side:
            return super().predict_targets(batch, parts)
        torch = self._backend._torch
        with torch.inference_mode():
            out = self._run(batch)
            self.n_queries += int(batch.shape[0])
            if not isinstance(out, (torch.Tensor, dict)):
                raw = self._check_rows(to_numpy_output(out), int(batch.shape[0]))
                return evaluate_parts(raw, parts, self._model_name())
            out, values, lo = _as_float64(out), [], 0
            for target, n in parts:
                part = target.torch_scores(slice_rows(out, lo, lo + n)).to("cpu").numpy()
                values.append(check_target_values(part, n, target.n_outputs, target))
                lo += n
        return values

    @property
    def asynchronous(self) -> bool:
        """On a CUDA device: a model batch is queued, and its scores are read back after the next one is sent."""
        return self.device.type == "cuda"

    def submit_targets(self, batch, parts: list[tuple[Target, int]]):
        """Queue the forward on the GPU and start copying its scores to pinned host memory; read them when called.

        Classifier scores (:class:`~perturbx.targets.Class` targets) only; other targets and devices are
        computed at once (:meth:`predict_targets`).
        """
        if not self.asynchronous or not classes_only(parts):
            return super().submit_targets(batch, parts)
        torch, n = self._backend._torch, int(batch.shape[0])
        with torch.inference_mode():
            out = self._forward(batch)
            self.n_queries += n
            if not isinstance(out, torch.Tensor):  # checked (and refused) as the other paths do
                values = select_parts(self._check_scores(out, n), parts)
                return lambda: values
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(torch.cuda.current_stream(self.device))

        def scores() -> list[np.ndarray]:
            copied.synchronize()
            return select_parts(self._check_scores(host, n), parts)

        return scores

    def _evaluate_raw(self, out, n: int, target: Target) -> np.ndarray:
        from perturbx.targets import evaluate

        return evaluate(target, self._check_rows(to_numpy_output(out), n), n, self._model_name())

    def __repr__(self) -> str:
        return (f"Torch({type(self.module).__name__}, device={str(self.device)!r}, "
                f"batch_size={self.batch_size}, input_layout={self.input_layout!r}, output={self.output!r})")


def _check_device(torch, device):
    """``device`` as a ``torch.device`` that this machine has; else a ValueError naming ``device``."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"The 'device' parameter of Torch must be a torch device such as 'cpu', 'cuda' or 'cuda:1'. "
                         f"Got {device!r} instead.") from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"The 'device' parameter of Torch is {device!r}, but PyTorch {torch.__version__} "
                             f"({build}) sees no CUDA device here (torch.cuda.is_available() is False). Pass "
                             f"device='cpu' (or leave device out), or run on a machine with an NVIDIA GPU and a "
                             f"CUDA build of PyTorch.")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"The 'device' parameter of Torch is {device!r}, but PyTorch sees {count} CUDA "
                             f"device(s) here: use 'cuda:0' to 'cuda:{count - 1}'.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"The 'device' parameter of Torch is {device!r}, but PyTorch has no MPS (Apple GPU) "
                         f"backend here. Pass device='cpu'.")
    return dev


def _as_float64(out):
    """A tensor, or a dict of tensors, in float64 (targets then sum in the same precision as on numpy)."""
    if isinstance(out, dict):
        return {str(k): v.double() for k, v in out.items()}
    return out.double()



def _to_float32(torch, out):
    """Tensors of an autocast output (a tensor, a tuple/list or dict of them, per-image dicts) as float32."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):
        return {k: _to_float32(torch, v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float32(torch, v) for v in out)
    return out
