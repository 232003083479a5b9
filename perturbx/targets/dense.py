"""Targets of dense outputs: a segmentation model's score over a pixel region."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import BindInfo, Outputs, Target, index_list, pick_output, torch_module


class Region(Target):
    """Mean score of channel(s) of a dense output over a region of its pixels.

    For a segmentation model returning ``(n, C, h, w)`` (``channel_axis=1``, PyTorch) or
    ``(n, h, w, C)`` (``channel_axis=-1``): why does the model label *this* region as class
    ``c``. The scalar of channel ``c`` is ``sum_p w_p out[:, c, p] / sum_p w_p`` over the
    output's pixels ``p``, with weights ``w`` the region mask.

    Parameters
    ----------
    mask : array (h, w) of bool or non-negative weights, or None
        The region, on the output's pixel grid (the same grid as the input for most
        segmentation nets); None: every pixel.
    channel : int, sequence of int or None
        Channel(s) (classes) to explain; None: the channel with the highest mean over the
        region for the unperturbed input.
    channel_axis : int, default 1
        Axis of the output (batch axis included) that holds the channels.
    softmax : bool, default False
        Apply a softmax over the channel axis first (for a model that returns logits, when
        the explanation should be of probabilities).
    output : str, optional
        For a model with named outputs: which one to read.
    """

    differentiable = True

    def __init__(self, mask: object = None, channel: int | Sequence[int] | None = None, *, channel_axis: int = 1,
                 softmax: bool = False, output: str | None = None) -> None:
        self.channel, self.single = index_list(channel, "channel", "Region")
        if mask is not None:
            m = np.asarray(mask)
            if m.ndim != 2 or not (m.dtype == bool or np.issubdtype(m.dtype, np.number)):
                raise ValueError(f"The 'mask' of Region must be a 2-D boolean or numeric array (h, w). Got "
                                 f"{'shape ' + str(m.shape) if m.ndim != 2 else 'dtype ' + str(m.dtype)}.")
            m = m.astype(np.float64)
            if not np.all(np.isfinite(m)) or m.min() < 0 or m.sum() <= 0:
                raise ValueError("The 'mask' of Region must hold non-negative finite weights with a positive "
                                 "sum (at least one pixel in the region).")
            mask = m
        if channel_axis not in (1, -1, 3):
            raise ValueError(f"The 'channel_axis' of Region must be 1 (n, C, h, w) or -1 (n, h, w, C). "
                             f"Got {channel_axis!r}.")
        self.mask, self.channel_axis, self.softmax, self.output = mask, channel_axis, bool(softmax), output

    def _chw(self, arr):
        """The output as ``(n, C, h, w)`` (numpy or torch)."""
        if arr.ndim != 4:
            raise ValueError(f"target={self!r} needs a dense output of shape (n, C, h, w) or (n, h, w, C); the "
                             f"model returned shape {tuple(arr.shape)}.")
        if self.channel_axis == 1:
            return arr
        return arr.permute(0, 3, 1, 2) if hasattr(arr, "permute") else np.moveaxis(arr, -1, 1)

    def bind(self, output: Outputs, info: BindInfo) -> Region:
        arr = self._chw(np.asarray(pick_output(output, self.output, self), dtype=np.float64))
        n_channels, hw = arr.shape[1], arr.shape[2:]
        if self.mask is not None and self.mask.shape != hw:
            raise ValueError(f"target={self!r}: the region mask has shape {self.mask.shape} but the model's "
                             f"output has {hw} pixels per channel; give a mask of shape {hw}.")
        bound = Region(self.mask, None, channel_axis=self.channel_axis, softmax=self.softmax, output=self.output)
        channel = self.channel
        if channel is None:
            channel = [int(np.argmax(bound._means(arr)[0]))]
        bad = [c for c in channel if c >= n_channels]
        if bad:
            raise ValueError(f"target={self!r}: channel {bad} is out of range; the model's output has "
                             f"{n_channels} channels.")
        bound.channel, bound.single = channel, self.single
        return bound

    def _means(self, arr: np.ndarray) -> np.ndarray:
        """Mean of every channel over the region, ``(n, C)``."""
        if self.softmax:
            arr = np.exp(arr - arr.max(axis=1, keepdims=True))
            arr = arr / arr.sum(axis=1, keepdims=True)
        return _region_mean(arr, self.mask)

    def scores(self, outputs: Outputs) -> np.ndarray:
        arr = self._chw(np.asarray(pick_output(outputs, self.output, self), dtype=np.float64))
        if arr.shape[1] <= max(self._channels()):
            raise ValueError(f"target={self!r}: the model's output has {arr.shape[1]} channels.")
        if self.softmax:
            return self._means(arr)[:, self._channels()]
        return _region_mean(arr[:, self._channels()], self.mask)  # only the channels asked for

    def torch_scores(self, outputs):
        torch = torch_module()
        out = self._chw(pick_output(outputs, self.output, self))
        if self.softmax:
            out = torch.softmax(out, dim=1)
        out = out.index_select(1, torch.as_tensor(self._channels(), device=out.device))
        if self.mask is None:
            return out.mean(dim=(2, 3))
        w = torch.as_tensor(self.mask, dtype=out.dtype, device=out.device)
        return (out * w).sum(dim=(2, 3)) / w.sum()

    @property
    def bound(self) -> bool:
        return self.channel is not None

    def _channels(self) -> list[int]:
        if self.channel is None:
            raise RuntimeError("Region(channel=None) must be bound to the model's output first (Target.bind).")
        return self.channel

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self._channels(), dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [f"region, channel {c}" for c in self._channels()]

    def subset(self, index: int) -> Region:
        bound = Region(self.mask, self._channels()[index], channel_axis=self.channel_axis, softmax=self.softmax,
                       output=self.output)
        return bound

    def describe(self) -> dict:
        return {"kind": "Region", "labels": [int(c) for c in self._channels()],
                "mask_pixels": None if self.mask is None else int((self.mask > 0).sum())}

    def __repr__(self) -> str:
        mask = "None" if self.mask is None else f"<{int((self.mask > 0).sum())} px of {self.mask.shape}>"
        channel = None if self.channel is None else (self.channel[0] if self.single else self.channel)
        return f"Region(mask={mask}, channel={channel!r})"


def _region_mean(arr: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Weighted mean over the pixels of ``arr`` ``(n, C, h, w)`` with weights ``mask`` (h, w): ``(n, C)``."""
    if mask is None:
        return arr.mean(axis=(2, 3))
    return np.einsum("nchw,hw->nc", arr, mask) / mask.sum()
