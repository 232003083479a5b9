"""A tiny single-stage object detector for the scenes of :func:`perturbx.datasets.make_scenes`.

:class:`DemoDetector` is a CenterNet-style fully convolutional detector of our own
definition: a stride-4 feature map carries an objectness heat map (one peak per
object, at the centre of its box), class logits, and the box size and the
centre's sub-cell offset. Its forward pass decodes the ``K`` strongest peaks into
a fixed-size array of proposals in the D-RISE layout (box, objectness,
class-probability vector). :func:`train_demo_detector` trains it on the CPU and
:func:`load_demo_detector` caches the weights like :func:`perturbx.models.load_demo_model`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from perturbx.datasets import CLASS_NAMES, SceneDataset, make_scenes

from . import _cache
from ._scenes import SCENE_TEST_SEED, SCENE_TRAIN_SEED, Trunk, check_input, fit, flip_images, union_masks
from .classifier import _background_cutout

__all__ = ["DETECTOR_RECIPE_VERSION", "DemoDetector", "load_demo_detector", "train_demo_detector"]

#: Version of the detector's training recipe; part of its cache file name.
DETECTOR_RECIPE_VERSION: str = "1"

_N_TEST = 200
_LOG_SIZE_RANGE = (-3.0, 5.0)  # clamp of the predicted log(box side / stride)


class DemoDetector(nn.Module):
    """Tiny CenterNet-style detector returning a fixed number of proposals.

    A stride-4 trunk (two stride-2 convolutions), a stride-8 context branch
    (three more stages, one dilated) added back to a 1x1 lateral projection
    of the trunk, a 3x3 stage and a 1x1 head with ``1 + n_classes + 4``
    channels per stride-4 cell: objectness logit, class logits, ``log(width / 4)``,
    ``log(height / 4)`` and the box centre's offset from the cell's corner in
    cells. About 21 M multiply-adds per 64x64 image.

    The forward pass keeps the cells whose objectness is the maximum of their
    3x3 neighbourhood (max-pool non-maximum suppression), takes the
    ``max_detections`` strongest and decodes them.

    Parameters
    ----------
    n_classes : int, default 4
        Number of object classes ``C``.
    max_detections : int, default 8
        Number of proposals ``K`` returned per image.
    width : int, default 32
        Channels of the stride-4 trunk (the context branch has twice as many).

    Notes
    -----
    Input: float tensor ``(N, 3, H, W)`` with values in ``[0, 1]``; ``H`` and
    ``W`` multiples of :attr:`stride` (4) with at least ``K`` cells
    (``H * W / 16 >= K``); 64x64 as trained.

    Output: float32 tensor ``(N, K, 4 + 1 + C)``, the D-RISE proposal layout,
    rows sorted by decreasing objectness. For proposal ``k`` of image ``n``:

    * ``[..., 0:4]``: box ``(x1, y1, x2, y2)`` in input pixels, ``x`` the
      column and ``y`` the row, clipped to ``[0, W]`` and ``[0, H]``;
    * ``[..., 4]``: objectness in ``[0, 1]`` (0 for a cell that is not a
      local maximum, i.e. when the image has fewer than ``K`` peaks);
    * ``[..., 5:5 + C]``: class probabilities (softmax, sum 1).

    Everything before the choice of the top ``K`` cells is differentiable, and
    the outputs are differentiable functions of the chosen cells' values, so
    gradients reach the input. Deterministic in eval mode.
    """

    #: Input pixels per cell of the output maps.
    stride: int = 4

    def __init__(self, n_classes: int = 4, max_detections: int = 8, width: int = 32) -> None:
        super().__init__()
        self.n_classes = int(n_classes)
        self.max_detections = int(max_detections)
        self.trunk = Trunk(width, 2 * width)
        self.head = nn.Conv2d(2 * width, 1 + self.n_classes + 4, 1)
        with torch.no_grad():  # objectness prior 0.1 at the start, as in CenterNet
            self.head.bias[0] = -2.19

    def maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The raw stride-4 output maps of images ``x`` ``(N, 3, H, W)``.

        Returns
        -------
        dict of torch.Tensor
            ``"objectness"`` logits ``(N, 1, H/4, W/4)``, ``"classes"`` logits
            ``(N, C, H/4, W/4)``, ``"size"`` ``(N, 2, H/4, W/4)`` (log of the
            box width and height in cells) and ``"offset"``
            ``(N, 2, H/4, W/4)`` (box centre minus the cell's corner, x then
            y, in cells).
        """
        check_input(x, self.stride, "DemoDetector")
        out = self.head(self.trunk(x)[1])
        c = self.n_classes
        return {"objectness": out[:, :1], "classes": out[:, 1:1 + c],
                "size": out[:, 1 + c:3 + c], "offset": out[:, 3 + c:5 + c]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Detections ``(N, K, 4 + 1 + C)`` of images ``(N, 3, H, W)`` (layout in the class notes)."""
        return decode(self.maps(x), self.stride, self.max_detections)


def decode(maps: dict[str, torch.Tensor], stride: int, k: int) -> torch.Tensor:
    """Turn the output maps of :meth:`DemoDetector.maps` into ``(N, K, 4 + 1 + C)`` proposals.

    Parameters
    ----------
    maps : dict of torch.Tensor
        As returned by :meth:`DemoDetector.maps`, on ``h x w`` cells.
    stride : int
        Input pixels per cell.
    k : int
        Number of proposals ``K``; at most ``h * w``.

    Returns
    -------
    torch.Tensor
        Float32 ``(N, K, 4 + 1 + C)``: box in input pixels, objectness,
        class probabilities (the layout of :class:`DemoDetector`).
    """
    obj = torch.sigmoid(maps["objectness"])  # (N, 1, h, w)
    h, w = obj.shape[-2:]
    if k > h * w:
        raise ValueError(f"max_detections={k} needs at least {k} cells of {stride}x{stride} pixels; "
                         f"the input has {h}x{w}; use larger images or fewer detections")
    peaks = obj * (nn.functional.max_pool2d(obj, 3, stride=1, padding=1) == obj)
    score, idx = peaks.flatten(1).topk(k, dim=1)  # (N, K)

    def at(name: str) -> torch.Tensor:  # (N, K, channels) of a map at the chosen cells
        m = maps[name].flatten(2)
        return m.gather(2, idx[:, None, :].expand(-1, m.shape[1], -1)).transpose(1, 2)

    row, col = (idx // w).to(obj.dtype), (idx % w).to(obj.dtype)
    offset = at("offset")
    cx, cy = (col + offset[..., 0]) * stride, (row + offset[..., 1]) * stride
    half = 0.5 * stride * at("size").clamp(*_LOG_SIZE_RANGE).exp()  # (N, K, 2)
    limit = torch.tensor([w * stride, h * stride], dtype=obj.dtype, device=obj.device)
    lo = torch.minimum(torch.stack([cx, cy], -1) - half, limit).clamp(min=0.0)
    hi = torch.minimum(torch.stack([cx, cy], -1) + half, limit).clamp(min=0.0)
    boxes = torch.stack([lo[..., 0], lo[..., 1], hi[..., 0], hi[..., 1]], dim=-1)
    probs = at("classes").softmax(dim=-1)
    return torch.cat([boxes, score[..., None], probs], dim=-1).float()


def _targets(boxes: list[np.ndarray], labels: list[np.ndarray], h: int, w: int,
             stride: int) -> dict[str, torch.Tensor]:
    """Training targets on ``h x w`` cells for the objects of a batch.

    ``heat`` ``(N, 1, h, w)``: a Gaussian per object, 1 at the cell of its
    box centre (sigma a sixth of the box's longer side); ``cls`` ``(N, h, w)``:
    the class on the 3x3 cells around each centre, -1 elsewhere; ``reg``
    ``(N, 4, h, w)``: offset of the centre from each of those cells and the
    log box size, in cells.
    """
    n = len(boxes)
    heat = np.zeros((n, 1, h, w), np.float32)
    cls = np.full((n, h, w), -1, np.int64)
    reg = np.zeros((n, 4, h, w), np.float32)
    rows, cols = np.mgrid[0:h, 0:w]
    for b, (bx, lab) in enumerate(zip(boxes, labels, strict=True)):
        for (x1, y1, x2, y2), c in zip(bx / stride, lab, strict=True):
            cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
            i, j = min(int(cy), h - 1), min(int(cx), w - 1)
            sigma = max(x2 - x1, y2 - y1) / 6.0
            gauss = np.exp(-((rows - i) ** 2 + (cols - j) ** 2) / (2.0 * sigma**2))
            np.maximum(heat[b, 0], gauss, out=heat[b, 0])
            for ii in range(max(i - 1, 0), min(i + 2, h)):
                for jj in range(max(j - 1, 0), min(j + 2, w)):
                    cls[b, ii, jj] = c
                    reg[b, :, ii, jj] = (cx - jj, cy - ii, np.log(x2 - x1), np.log(y2 - y1))
    return {"heat": torch.from_numpy(heat), "cls": torch.from_numpy(cls), "reg": torch.from_numpy(reg)}


def _loss(maps: dict[str, torch.Tensor], t: dict[str, torch.Tensor]) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss + class cross-entropy + L1 on offset and log size."""
    p = torch.sigmoid(maps["objectness"]).clamp(1e-4, 1.0 - 1e-4)
    pos = t["heat"] == 1.0
    focal = torch.where(pos, -torch.log(p) * (1.0 - p) ** 2,
                        -torch.log(1.0 - p) * p**2 * (1.0 - t["heat"]) ** 4)
    focal = focal.sum() / pos.sum().clamp(min=1)
    cls = nn.functional.cross_entropy(maps["classes"], t["cls"], ignore_index=-1)
    where = (t["cls"] >= 0)[:, None].expand_as(t["reg"])
    pred = torch.cat([maps["offset"], maps["size"]], dim=1)
    reg = nn.functional.l1_loss(pred[where], t["reg"][where])
    return focal + cls + reg


def _flip_boxes(boxes: np.ndarray, size: int, flip_x: bool, flip_y: bool) -> np.ndarray:
    """Boxes ``(k, 4)`` of an image of ``size x size`` pixels flipped as the image."""
    out = boxes.copy()
    if flip_x:
        out[:, [0, 2]] = size - boxes[:, [2, 0]]
    if flip_y:
        out[:, [1, 3]] = size - boxes[:, [3, 1]]
    return out


def match_detections(
    detections: np.ndarray, boxes: np.ndarray, labels: np.ndarray, *,
    threshold: float = 0.5, min_iou: float = 0.5,
) -> tuple[int, int, int]:
    """Greedily match one image's detections to its ground truth.

    Detections with objectness ``>= threshold`` are taken in decreasing
    objectness; each is a true positive if an unmatched object of its
    predicted class (argmax of the probabilities) overlaps it with
    IoU ``>= min_iou`` (the best such object is matched).

    Parameters
    ----------
    detections : numpy.ndarray
        ``(K, 4 + 1 + C)`` in the :class:`DemoDetector` layout.
    boxes, labels : numpy.ndarray
        Ground truth ``(k, 4)`` boxes ``(x1, y1, x2, y2)`` and ``(k,)`` classes.
    threshold, min_iou : float
        Objectness threshold and the least IoU of a match.

    Returns
    -------
    (true_positives, n_detections, n_objects) : tuple of int
    """
    det = detections[detections[:, 4] >= threshold]
    det = det[np.argsort(-det[:, 4], kind="stable")]
    free = np.ones(len(boxes), dtype=bool)
    tp = 0
    for d in det:
        lt, rb = np.maximum(d[:2], boxes[:, :2]), np.minimum(d[2:4], boxes[:, 2:4])
        inter = np.prod(np.clip(rb - lt, 0.0, None), axis=1)
        union = np.prod(d[2:4] - d[:2]) + np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) - inter
        iou = np.where(free & (labels == d[5:].argmax()), inter / np.maximum(union, 1e-12), -1.0)
        if len(iou) and iou.max() >= min_iou:
            free[int(iou.argmax())] = False
            tp += 1
    return tp, len(det), len(boxes)


@torch.no_grad()
def _precision_recall(model: DemoDetector, scenes: SceneDataset, batch_size: int = 100) -> tuple[float, float]:
    """Precision and recall (objectness >= 0.5, IoU >= 0.5, right class) over ``scenes``."""
    was_training = model.training
    model.eval()
    counts = np.zeros(3, dtype=np.int64)
    for start in range(0, len(scenes), batch_size):
        out = model(torch.from_numpy(scenes.images[start:start + batch_size])).numpy()
        for j, det in enumerate(out, start=start):
            counts += match_detections(det, scenes.boxes[j], scenes.labels[j])
    model.train(was_training)
    tp, n_det, n_obj = counts.tolist()
    return tp / max(n_det, 1), tp / max(n_obj, 1)


def train_demo_detector(
    *,
    n_train: int = 2000,
    epochs: int = 8,
    random_state: int = 0,
    verbose: bool = False,
) -> tuple[DemoDetector, dict[str, float]]:
    """Train a :class:`DemoDetector` on synthetic scenes, on the CPU.

    Trains on ``make_scenes(n_train, random_state=SCENE_TRAIN_SEED)`` (1-3
    objects per image) with AdamW, a one-cycle schedule, random flips and
    background cutout (filled rectangles next to, never on, the objects, as
    for :func:`perturbx.models.train_demo_model`), then measures precision and
    recall on 200 held-out scenes ``make_scenes(200, random_state=SCENE_TEST_SEED)``
    (objectness >= 0.5, IoU >= 0.5 with an object of the predicted class).
    Uses torch's current number of threads; the global torch random state is
    left untouched. Deterministic given ``random_state`` on a given machine
    and thread count.

    Parameters
    ----------
    n_train : int, default 2000
        Number of training scenes.
    epochs : int, default 8
        Passes over the training scenes.
    random_state : int, default 0
        Seeds the weight initialisation, the shuffling and the augmentation.
    verbose : bool, default False
        Print the loss per epoch and the held-out scores.

    Returns
    -------
    model : DemoDetector
        The trained model, in eval mode, on the CPU.
    scores : dict
        ``{"precision": float, "recall": float, "seconds": float}``: held-out
        precision and recall in ``[0, 1]`` and the training time.

    Raises
    ------
    ValueError
        If ``n_train`` or ``epochs`` is smaller than 1.
    """
    if n_train < 1 or epochs < 1:
        raise ValueError(f"n_train and epochs must be >= 1; got n_train={n_train}, epochs={epochs}")
    t0 = time.perf_counter()
    train = make_scenes(n_train, random_state=SCENE_TRAIN_SEED)
    size = train.images.shape[-1]
    x_all, masks = torch.from_numpy(train.images), union_masks(train)
    aug_rng = np.random.default_rng(random_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(random_state)
        model = DemoDetector(n_classes=len(CLASS_NAMES))

        def step_loss(idx: np.ndarray, flip_x: bool, flip_y: bool) -> torch.Tensor:
            x = flip_images(_background_cutout(x_all[idx], masks[idx], aug_rng), flip_x, flip_y)
            boxes = [_flip_boxes(train.boxes[i], size, flip_x, flip_y) for i in idx]
            maps = model.maps(x)
            h, w = maps["objectness"].shape[-2:]
            return _loss(maps, _targets(boxes, [train.labels[i] for i in idx], h, w, model.stride))

        fit(model, n_train, step_loss, epochs=epochs, lr=4e-3, random_state=random_state, verbose=verbose)
    seconds = time.perf_counter() - t0
    precision, recall = _precision_recall(model, make_scenes(_N_TEST, random_state=SCENE_TEST_SEED))
    if verbose:
        print(f"held-out precision {precision:.4f}, recall {recall:.4f} (trained in {seconds:.1f} s)")
    return model, {"precision": precision, "recall": recall, "seconds": seconds}


def _cache_path(cache_dir: str | os.PathLike | None) -> Path:
    return _cache.cache_file(cache_dir, "demo_detector", DETECTOR_RECIPE_VERSION)


def load_demo_detector(
    *,
    cache_dir: str | os.PathLike | None = None,
    retrain: bool = False,
) -> DemoDetector:
    """Return the trained :class:`DemoDetector`, training it on first use.

    Cached as ``cache_dir / "demo_detector_v<version>.pt"`` with the same rules
    as :func:`perturbx.models.load_demo_model`: written atomically, read with
    ``torch.load(..., weights_only=True)``, rebuilt (with a ``RuntimeWarning``)
    when missing, unreadable or of another recipe version.

    Parameters
    ----------
    cache_dir : str, os.PathLike or None, default None
        Cache directory; ``None`` uses ``$PERTURBX_CACHE`` if set, else
        ``~/.cache/perturbx``. Created if needed.
    retrain : bool, default False
        Train afresh and overwrite the cache even if it is valid.

    Returns
    -------
    DemoDetector
        In eval mode on the CPU; its held-out scores are available as
        ``model.demo_precision`` and ``model.demo_recall``.
    """

    def train() -> tuple[DemoDetector, dict]:
        model, scores = train_demo_detector()
        return model, {**scores, "n_classes": model.n_classes, "max_detections": model.max_detections}

    model, blob = _cache.load_or_train(
        _cache_path(cache_dir), DETECTOR_RECIPE_VERSION, retrain=retrain, train=train,
        build=lambda blob: DemoDetector(int(blob["n_classes"]), int(blob["max_detections"])),
    )
    model.demo_precision, model.demo_recall = float(blob["precision"]), float(blob["recall"])
    return model
