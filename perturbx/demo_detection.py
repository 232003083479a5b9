"""``perturbx demo --task detection``: D-RISE and other black-box methods on the built-in object detector.

Each detection of held-out scenes (:func:`perturbx.datasets.make_scenes`, objects the
detector never saw) is one row of a :func:`perturbx.compare.compare` run whose target is
that detection (:class:`perturbx.targets.Detection`) and whose ground truth is the matched
object's mask, so the report scores every method with the pointing game and deletion and
insertion curves of the detection's D-RISE score. ``detections.png`` draws each detection's
box over each method's map.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .compare import Comparison, compare
from .demo import torch_threads
from .targets import Detection
from .targets.detection import box_iou

#: registry names of the detection demo's methods (each takes a Detection target)
DETECTION_METHODS = ("drise", "occlusion", "kernelshap")
DETECTION_METRICS = ("deletion", "insertion", "pointing_game", "energy_pointing")
TITLE = "perturbx demo: D-RISE and black-box methods on the built-in object detector"


def detection_rows(model, scenes, min_score: float = 0.5) -> tuple[np.ndarray, list[Detection], np.ndarray]:
    """One row per detection of every scene: the image, a Detection of that box, the matched object's mask.

    A detection with no object of IoU >= 0.5 gets its own box as the "object" mask.
    """
    images, targets, masks = [], [], []
    for x, boxes, objects in zip(scenes.images, scenes.boxes, scenes.object_masks, strict=True):
        found = Detection(min_score=min_score).parse(model.predict_raw(model.backend.asarray(x[None], model.dtype)))
        keep = found.valid[0] & (found.score[0] >= min_score)
        for box, label in zip(found.boxes[0][keep], found.labels[0][keep], strict=True):
            iou = box_iou(np.asarray(boxes, dtype=np.float64), box[None])[:, 0]
            mask = objects[int(np.argmax(iou))] if iou.size and iou.max() >= 0.5 else _box_mask(box, x.shape[1:])
            images.append(x)
            targets.append(Detection(box, int(label)))
            masks.append(mask)
    return np.stack(images), targets, np.stack(masks)


def _box_mask(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    x1, y1, x2, y2 = np.round(box).astype(int)
    mask[max(y1, 0):y2, max(x1, 0):x2] = True
    return mask


def run_detection_demo(out: str | Path = "perturbx-demo-detection", n_images: int = 4, *,
                       cache_dir: str | None = None, random_state: int = 0, methods: list[str] | None = None,
                       metrics: object = DETECTION_METRICS) -> Comparison:
    """Load (or train, about a minute, cached) the built-in detector, explain every detection, write the report.

    Parameters
    ----------
    out : folder of the report (the files of ``perturbx compare``) and ``detections.png``
    n_images : int, default 4
        Held-out scenes; every detection with score >= 0.5 is explained.
    cache_dir : where the trained detector is cached
    random_state : int, default 0
    methods : list of str, optional
        Registry names (default :data:`DETECTION_METHODS`); each must accept a Detection target.
    metrics : default :data:`DETECTION_METRICS`

    Returns
    -------
    Comparison
    """
    from .adapters import Torch
    from .datasets import make_scenes
    from .models import SCENE_TEST_SEED, load_demo_detector
    from .report import write_outputs

    with torch_threads():
        t0 = time.perf_counter()
        model = Torch(load_demo_detector(cache_dir=cache_dir), batch_size=128)
        print(f"demo detector ready in {time.perf_counter() - t0:.1f} s")
        scenes = make_scenes(n_images, random_state=SCENE_TEST_SEED + 1)
        images, targets, masks = detection_rows(model, scenes)
        comp = compare(model, images, list(methods or DETECTION_METHODS), metrics=list(metrics), ground_truth=masks,
                       targets=targets, random_state=random_state)
    write_outputs(comp, out, title=TITLE, n_images=None)
    figure = detections_figure(comp, targets, Path(out) / "detections.png")
    print(f"{len(targets)} detections in {n_images} scenes; compare() wall time "
          f"{comp.params['compare']['wall_seconds']:.1f} s")
    print(f"report: {Path(out) / 'report.html'}  boxes over maps: {figure}")
    return comp


def detections_figure(comp: Comparison, targets: list[Detection], path: str | Path) -> Path:
    """Every detection (rows) x method (columns): the map on a symmetric scale, the box drawn over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows, cols = len(targets), 1 + len(comp.methods)
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.2 * rows), squeeze=False)
    for i, target in enumerate(targets):
        x1, y1, x2, y2 = target.box[0]
        panels = [("image", comp.images[i], None)] + [(m, comp.maps[m][i], "RdBu_r") for m in comp.methods]
        for ax, (name, data, cmap) in zip(axes[i], panels, strict=True):
            if cmap is None:
                ax.imshow(data)
            else:
                lim = float(np.abs(data).max()) or 1.0
                ax.imshow(comp.images[i].mean(axis=-1) if comp.images[i].ndim == 3 else comp.images[i], cmap="gray")
                ax.imshow(data, cmap=cmap, vmin=-lim, vmax=lim, alpha=0.7)
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="lime", lw=1.5))
            ax.set_title(name if i == 0 else "", fontsize=9)
            ax.axis("off")
        axes[i][0].set_ylabel(str(comp.rows[i * len(comp.methods)]["target"]), fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
