"""D-RISE's target: how much of one detection a perturbed image's detections still contain.

Petsiuk et al. 2021 ("Black-box Explanation of Object Detectors via Saliency Maps")
describe a detection by its box ``L``, objectness ``O`` and class-probability vector
``P``, and score a perturbed image by the best match over its detections ``j``:
``max_j IoU(L_t, L_j) * cos(P_t, P_j) * O_j``. :class:`Detection` computes that for a
batch of any of the common detector output formats (:func:`parse_detections`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .base import BindInfo, Outputs, Target

#: layouts of a fixed-size detection array ``(n, K, D)``
FORMATS = ("box_objectness_probs", "box_score_label")
#: box coordinate conventions (x along the width, y along the height, in input pixels)
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
#: names of the fields in dict outputs, per image (torchvision) or batched (ONNX, model servers)
KEYS = {"boxes": "boxes", "scores": "scores", "labels": "labels", "probs": "probs",
        "objectness": "objectness", "count": "num_detections"}


@dataclass
class Detections:
    """Detections of a batch of ``n`` images, padded to ``K`` per image.

    Attributes
    ----------
    boxes : (n, K, 4) float64, (x1, y1, x2, y2) in pixels
    objectness : (n, K) float64
        D-RISE's ``O_j``: the objectness, or the detection's score when the detector has none.
    score : (n, K) float64
        Confidence used to pick detections to explain (``min_score``): objectness times the
        top class probability, or the detector's score.
    labels : (n, K) int64, -1 where unknown
    probs : (n, K, C) float64 or None
    valid : (n, K) bool, False on padding
    """

    boxes: np.ndarray
    objectness: np.ndarray
    score: np.ndarray
    labels: np.ndarray
    probs: np.ndarray | None
    valid: np.ndarray


def _to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    b = np.asarray(boxes, dtype=np.float64)
    if box_format == "xywh":
        return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)
    if box_format == "cxcywh":
        return np.concatenate([b[..., :2] - b[..., 2:4] / 2, b[..., :2] + b[..., 2:4] / 2], axis=-1)
    return b[..., :4]


def parse_detections(outputs: Outputs, *, format: str = "box_objectness_probs", box_format: str = "xyxy",
                     keys: Mapping[str, str] | None = None, who: object = "Detection") -> Detections:
    """Any supported detector output of a batch as :class:`Detections`.

    Supported: a fixed-size array ``(n, K, D)`` laid out as ``format`` says
    (``"box_objectness_probs"``: 4 box values, the objectness, then C class probabilities,
    the D-RISE and YOLO layout; ``"box_score_label"``: 4 box values, a score and a label,
    rows with a negative label being padding); a dict of batched arrays (``boxes`` (n, K, 4),
    ``scores`` (n, K), optional ``labels``, ``probs``, ``objectness`` and a count
    ``num_detections`` (n,)); or a list of ``n`` per-image dicts with the same keys and
    arrays of ``k_i`` rows (torchvision's format). ``keys`` renames the dict fields.
    """
    names = {**KEYS, **(keys or {})}
    if isinstance(outputs, Mapping):
        return _from_dict(outputs, names, box_format, who)
    if isinstance(outputs, list):
        return _from_list(outputs, names, box_format, who)
    arr = np.asarray(outputs, dtype=np.float64)
    if arr.ndim != 3:
        looks = " (it looks like a classifier's class scores; use target=int or perturbx.targets.Class)" \
            if arr.ndim == 2 else ""
        raise ValueError(f"target={who!r} needs a detector's output: an array (n, K, D) of K detections per "
                         f"image, a dict of such arrays or a list of per-image dicts; the model returned an "
                         f"array of shape {arr.shape}{looks}.")
    boxes = _to_xyxy(arr[..., :4], box_format)
    if format == "box_score_label":
        if arr.shape[-1] != 6:
            raise ValueError(f"target={who!r} reads format 'box_score_label' (4 box values, score, label) but "
                             f"the detections have {arr.shape[-1]} values each.")
        labels = np.rint(arr[..., 5]).astype(np.int64)
        score = arr[..., 4]
        return Detections(boxes, score, score, labels, None, labels >= 0)
    if arr.shape[-1] < 6:
        raise ValueError(f"target={who!r} reads format 'box_objectness_probs' (4 box values, objectness, C >= 1 "
                         f"class probabilities) but the detections have {arr.shape[-1]} values each; for "
                         f"(box, score, label) rows pass format='box_score_label'.")
    probs, obj = arr[..., 5:], arr[..., 4]
    return Detections(boxes, obj, obj * probs.max(-1), probs.argmax(-1).astype(np.int64), probs,
                      np.ones(obj.shape, dtype=bool))


def _field(d: Mapping, names: Mapping[str, str], key: str):
    return d.get(names[key]) if names[key] in d else None


def _from_dict(d: Mapping, names: Mapping[str, str], box_format: str, who: object) -> Detections:
    boxes, scores = _field(d, names, "boxes"), _field(d, names, "scores")
    if boxes is None or (scores is None and _field(d, names, "objectness") is None):
        raise ValueError(f"target={who!r} needs outputs named {names['boxes']!r} and {names['scores']!r} (or "
                         f"{names['objectness']!r}); the model returned {sorted(d)}. Pass keys={{...}} to the "
                         f"target to map other names.")
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"target={who!r}: output {names['boxes']!r} must have shape (n, K, 4); got {boxes.shape}.")
    n, k = boxes.shape[:2]
    probs = _field(d, names, "probs")
    probs = None if probs is None else np.asarray(probs, dtype=np.float64).reshape(n, k, -1)
    obj = _field(d, names, "objectness")
    score = np.asarray(scores if scores is not None else obj, dtype=np.float64).reshape(n, k)
    obj = score if obj is None else np.asarray(obj, dtype=np.float64).reshape(n, k)
    labels = _field(d, names, "labels")
    if labels is not None:
        labels = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64).reshape(n, k)
    elif probs is not None:
        labels = probs.argmax(-1)
    else:
        labels = np.full((n, k), -1, dtype=np.int64)
    valid = np.ones((n, k), dtype=bool)
    count = _field(d, names, "count")
    if count is not None:
        valid = np.arange(k)[None, :] < np.asarray(count, dtype=np.int64).reshape(n, 1)
    return Detections(_to_xyxy(boxes, box_format), obj, score, labels, probs, valid)


def _from_list(rows: list, names: Mapping[str, str], box_format: str, who: object) -> Detections:
    if not all(isinstance(r, Mapping) for r in rows):
        raise ValueError(f"target={who!r} reads a list output as one dict of detections per image (boxes, "
                         f"scores, labels); got a list of {sorted({type(r).__name__ for r in rows})}.")
    for r in rows:
        if _field(r, names, "boxes") is None:
            raise ValueError(f"target={who!r}: a per-image dict has no {names['boxes']!r} entry (keys: {sorted(r)}).")
    counts = [len(np.asarray(_field(r, names, "boxes")).reshape(-1, 4)) for r in rows]
    k = max([*counts, 1])
    batched: dict[str, np.ndarray] = {names["count"]: np.asarray(counts)}
    for key in ("boxes", "scores", "labels", "probs", "objectness"):
        values = [_field(r, names, key) for r in rows]
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"target={who!r}: some per-image dicts have {names[key]!r} and some do not.")
        arrays = [np.asarray(v, dtype=np.float64).reshape(m, -1) if m else np.zeros((0, 1))
                  for v, m in zip(values, counts, strict=True)]
        width = max(a.shape[1] for a in arrays) if any(a.size for a in arrays) else (4 if key == "boxes" else 1)
        out = np.zeros((len(rows), k, width))
        for i, a in enumerate(arrays):
            out[i, :len(a), :a.shape[1]] = a
        batched[names[key]] = out if key in ("boxes", "probs") else out[..., 0]
    return _from_dict(batched, names, box_format, who)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (..., 4) with boxes ``b`` (T, 4): (..., T). Empty boxes have IoU 0."""
    lo = np.maximum(a[..., None, :2], b[:, :2])
    hi = np.minimum(a[..., None, 2:4], b[:, 2:4])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[..., 2:4] - a[..., :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:4] - b[:, :2], 0, None).prod(-1)
    union = area_a[..., None] + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


class Detection(Target):
    """D-RISE's similarity to a detection: one scalar per detection explained.

    For a perturbed image with detections ``j`` the scalar of target detection ``t`` is
    ``max_j IoU(L_t, L_j) * C_tj * O_j`` (0 when nothing is detected), with ``L`` the box,
    ``O_j`` the objectness (or the detector's score, for a detector that has no objectness:
    our choice, so that a weakening detection lowers the scalar) and ``C_tj`` the class
    term: the cosine similarity of the class-probability vectors when the detector gives
    them, else 1 for the same label and 0 for another, else (no labels) 1.

    Parameters
    ----------
    box : array (4,) or (T, 4), or None
        Box(es) to explain, in the input's pixels (``box_format``). None: every detection
        of the unperturbed image with ``score >= min_score`` (at most ``max_detections``,
        best first); an explanation then always has a target axis.
    label : int, sequence of int or None
        Class of each box. None: the class of the unperturbed image's detection that
        overlaps the box most (its whole probability vector when the detector gives one).
    min_score : float, default 0.5
        With ``box=None``: the smallest confidence (objectness times the top class
        probability, or the detector's score) of a detection to explain.
    max_detections : int, default 20
    format : {"box_objectness_probs", "box_score_label"}
        Layout of a fixed-size array output ``(n, K, D)``; see :func:`parse_detections`.
    box_format : {"xyxy", "xywh", "cxcywh"}, default "xyxy"
        Convention of ``box`` and of the model's boxes.
    keys : dict, optional
        Names of the fields of dict outputs, e.g. ``{"boxes": "detection_boxes"}``.
    """

    def __init__(self, box: object = None, label: int | Sequence[int] | None = None, *, min_score: float = 0.5,
                 max_detections: int = 20, format: str = "box_objectness_probs", box_format: str = "xyxy",
                 keys: Mapping[str, str] | None = None) -> None:
        if format not in FORMATS:
            raise ValueError(f"The 'format' of Detection must be one of {FORMATS}. Got {format!r}.")
        if box_format not in BOX_FORMATS:
            raise ValueError(f"The 'box_format' of Detection must be one of {BOX_FORMATS}. Got {box_format!r}.")
        if keys is not None and (not isinstance(keys, Mapping) or not set(keys) <= set(KEYS)):
            raise ValueError(f"The 'keys' of Detection must map some of {sorted(KEYS)} to output names. Got {keys!r}.")
        if not (isinstance(min_score, (int, float)) and np.isfinite(min_score)):
            raise ValueError(f"The 'min_score' of Detection must be a real number. Got {min_score!r}.")
        if not isinstance(max_detections, int) or isinstance(max_detections, bool) or max_detections < 1:
            raise ValueError(f"The 'max_detections' of Detection must be an int >= 1. Got {max_detections!r}.")
        self.format, self.box_format, self.keys = format, box_format, dict(keys or {})
        self.min_score, self.max_detections = float(min_score), max_detections
        self.box = None if box is None else _check_boxes(box)
        self.single = box is not None and np.asarray(box).ndim == 1
        self.label = None if label is None else np.atleast_1d(np.asarray(label, dtype=np.int64))
        if self.label is not None and self.box is not None and len(self.label) not in (1, len(self.box)):
            raise ValueError(f"The 'label' of Detection gives {len(self.label)} labels for {len(self.box)} boxes.")
        # set by bind: (T, 4) xyxy boxes, (T,) labels, (T, C) class vectors, (T,) whether to compare them
        self._boxes: np.ndarray | None = None
        self._labels = self._probs = self._use_probs = None

    def parse(self, outputs: Outputs) -> Detections:
        """The model's output as :class:`Detections` (the format this target reads)."""
        return parse_detections(outputs, format=self.format, box_format=self.box_format, keys=self.keys, who=self)

    def _bind(self, output: Outputs, info: BindInfo) -> Detection:
        found = self.parse(output)
        bound = Detection(None, None, min_score=self.min_score, max_detections=self.max_detections,
                          format=self.format, box_format=self.box_format, keys=self.keys)
        bound.single, bound.box, bound.label = self.single, self.box, self.label
        if self.box is None:
            bound._from_detections(found)
        else:
            bound._from_boxes(found, _to_xyxy(self.box, self.box_format), info.hw)
        return bound

    def _from_detections(self, found: Detections) -> None:
        score = np.where(found.valid[0], found.score[0], -np.inf)
        order = [j for j in np.argsort(-score, kind="stable") if score[j] >= self.min_score][:self.max_detections]
        if not order:
            best = float(score.max()) if np.isfinite(score).any() else float("nan")
            raise ValueError(f"target={self!r}: the model detects nothing with score >= {self.min_score} in x (best "
                             f"score {best:.3g}); lower min_score or give the box to explain.")
        self._boxes, self._labels = found.boxes[0, order], found.labels[0, order]
        self._probs = None if found.probs is None else found.probs[0, order]
        self._use_probs = np.full(len(order), found.probs is not None)

    def _from_boxes(self, found: Detections, boxes: np.ndarray, hw: tuple[int, int]) -> None:
        h, w = hw
        for b in boxes:
            if min(b[2], w) - max(b[0], 0) <= 0 or min(b[3], h) - max(b[1], 0) <= 0:
                raise ValueError(f"target={self!r}: box {b.tolist()} (x1, y1, x2, y2) lies outside the {h} x {w} "
                                 f"image; boxes are in input pixels, x along the width.")
        labels = np.broadcast_to(self.label, (len(boxes),)).copy() if self.label is not None else None
        iou = box_iou(found.boxes[0], boxes)                          # (K, T)
        iou[~found.valid[0]] = 0
        if labels is not None:
            iou[found.labels[0][:, None] != labels[None, :]] = 0
        match = iou.argmax(0)
        matched = iou[match, np.arange(len(boxes))] > 0
        self._boxes = boxes
        self._labels = np.where(matched, found.labels[0][match], -1) if labels is None else labels
        self._use_probs = np.zeros(len(boxes), dtype=bool)
        self._probs = None
        if found.probs is not None:
            probs = found.probs[0][match].copy()
            for t in np.flatnonzero(~matched):
                probs[t] = 0
                if labels is not None and 0 <= labels[t] < probs.shape[1]:
                    probs[t, labels[t]] = 1.0                         # a box with no detection: one-hot label
            self._probs, self._use_probs = probs, matched | (labels is not None)

    @property
    def bound(self) -> bool:
        return self._boxes is not None

    def bind(self, output: Outputs, info: BindInfo) -> Detection:
        return self if self.bound else self._bind(output, info)

    def _bound(self) -> np.ndarray:
        if self._boxes is None:
            raise RuntimeError("Detection must be bound to the model's output first (Target.bind).")
        return self._boxes

    def scores(self, outputs: Outputs) -> np.ndarray:
        boxes = self._bound()
        found = self.parse(outputs)
        sim = box_iou(found.boxes, boxes) * found.objectness[..., None]         # (n, K, T)
        cls = np.ones_like(sim)
        if found.probs is not None and self._probs is not None and found.probs.shape[-1] == self._probs.shape[-1]:
            num = np.einsum("nkc,tc->nkt", found.probs, self._probs)
            den = np.linalg.norm(found.probs, axis=-1)[..., None] * np.linalg.norm(self._probs, axis=-1)
            cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
            cls = np.where(self._use_probs, cos, cls)
        by_label = (self._labels >= 0) & ~self._use_probs
        if by_label.any():
            cls = np.where(by_label, (found.labels[..., None] == self._labels).astype(np.float64), cls)
        sim = np.where(found.valid[..., None], sim * cls, 0.0)
        return sim.max(axis=1) if sim.shape[1] else np.zeros((len(sim), len(boxes)))

    @property
    def boxes(self) -> np.ndarray:
        """The boxes explained, ``(T, 4)`` (x1, y1, x2, y2) in pixels."""
        return self._bound()

    @property
    def labels(self) -> np.ndarray:
        self._bound()
        return np.asarray(self._labels, dtype=np.int64)

    @property
    def names(self) -> list[str]:
        return [f"{'label ' + str(int(lab)) if lab >= 0 else 'box'} at "
                f"({', '.join(f'{v:.0f}' for v in b)})" for b, lab in zip(self._bound(), self._labels, strict=True)]

    def subset(self, index: int) -> Detection:
        one = Detection(None, None, min_score=self.min_score, max_detections=self.max_detections, format=self.format,
                        box_format=self.box_format, keys=self.keys)
        one._boxes, one._labels = self._bound()[[index]], self._labels[[index]]
        one._probs = None if self._probs is None else self._probs[[index]]
        one._use_probs = self._use_probs[[index]]
        return one

    def describe(self) -> dict:
        return {"kind": "Detection", "boxes": self._bound().round(2).tolist(), "labels": self.labels.tolist()}

    def __repr__(self) -> str:
        if self._boxes is not None:
            return f"Detection(<{len(self._boxes)} boxes>)"
        box = "None" if self.box is None else (self.box[0].tolist() if self.single else f"<{len(self.box)} boxes>")
        label = None if self.label is None else self.label.tolist()
        return f"Detection(box={box}, label={label})"


def _check_boxes(box: object) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4 or len(b) == 0 or not np.all(np.isfinite(b)):
        raise ValueError(f"The 'box' of Detection must be 4 finite numbers (x1, y1, x2, y2) or an array (T, 4). "
                         f"Got {box!r}.")
    return b
