"""D-RISE: perturbx against xaitk-saliency's DRISEStack on the same detector, masks count and grid, in one run.

The detector is the built-in one (:func:`perturbx.models.load_demo_detector`, a torch
module returning ``(N, K, 4 + 1 + C)`` detections) on a held-out scene (``make_scenes``,
``--size`` pixels), timed inside its forward. Each runner runs in its own process after one
warm-up, ``--repeats`` times (median): perturbx ``DRISE`` through a ``Torch`` adapter, and
xaitk-saliency's ``DRISEStack`` with a ``DetectImageObjects`` wrapper that feeds the same
module in batches of ``--batch`` rows and turns its rows into xaitk's (box, class scores)
pairs. Both explain the detections with score >= 0.5 of the unperturbed image with RISE
masks of the same grid and keep probability. Printed: wall seconds, the seconds spent in the
detector, the time per query outside it, and peak RSS (and RSS before the call), for each
masks count; and the Pearson correlation of the two maps (they score a detection slightly
differently: xaitk's blackbox interface has no objectness, so its weight of a mask is IoU x
class cosine, perturbx's is that times the objectness, as in the paper).

    pip install xaitk-saliency        # the peer (not a perturbx dependency)
    python benchmarks/bench_drise.py                          # 64 px, 500 / 2,000 / 8,000 masks
    python benchmarks/bench_drise.py --size 128 --masks 500,2000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
from _memory import peak_rss_mb, rss_mb

RUNNERS = ("perturbx", "xaitk")


def build(size: int):
    import torch
    from skimage.transform import resize

    from perturbx.datasets import make_scenes
    from perturbx.models import SCENE_TEST_SEED, load_demo_detector

    class Timed(torch.nn.Module):
        """The detector, with the seconds spent in its forward added up."""

        def __init__(self, net) -> None:
            super().__init__()
            self.net, self.seconds = net, 0.0

        def forward(self, x):
            t0 = time.perf_counter()
            out = self.net(x)
            self.seconds += time.perf_counter() - t0
            return out

    x = make_scenes(1, random_state=SCENE_TEST_SEED + 7).images[0]
    if size != x.shape[-1]:
        x = resize(x, (3, size, size), order=1, anti_aliasing=True).astype(np.float32)
    return torch, Timed(load_demo_detector().eval()), x


def run_perturbx(torch, net, x, n_masks: int, grid: int, batch: int) -> np.ndarray:
    import perturbx
    from perturbx.adapters import Torch

    e = perturbx.DRISE(n_masks=n_masks, grid_size=grid, random_state=0).explain(Torch(net, batch_size=batch), x)
    return e.attributions


def run_xaitk(torch, net, x, n_masks: int, grid: int, batch: int) -> np.ndarray:
    from smqtk_detection.interfaces.detect_image_objects import DetectImageObjects
    from smqtk_image_io.bbox import AxisAlignedBoundingBox
    from xaitk_saliency.impls.gen_object_detector_blackbox_sal.drise import DRISEStack

    def rows_to_dets(rows: np.ndarray) -> list:
        keep = (rows[:, 4] > 0) & (rows[:, 2] > rows[:, 0]) & (rows[:, 3] > rows[:, 1])
        return [(AxisAlignedBoundingBox(r[:2], r[2:4]), {c: float(p) for c, p in enumerate(r[5:])}) for r in rows[keep]]

    class Blackbox(DetectImageObjects):
        def detect_objects(self, img_iter):
            pending = []
            for img in img_iter:
                pending.append(img)
                if len(pending) == batch:
                    yield from self._run(pending)
                    pending = []
            if pending:
                yield from self._run(pending)

        def _run(self, images):
            with torch.inference_mode():
                out = net(torch.as_tensor(np.stack(images).transpose(0, 3, 1, 2).copy())).numpy()
            return [rows_to_dets(rows) for rows in out]

        def get_config(self) -> dict:
            return {}

    with torch.inference_mode():
        ref = net(torch.as_tensor(x[None])).numpy()[0]
    ref = ref[ref[:, 4] * ref[:, 5:].max(1) >= 0.5]
    sal = DRISEStack(n_masks, grid, 0.5, seed=0, fill=0).generate(
        np.ascontiguousarray(x.transpose(1, 2, 0)), ref[:, :4], ref[:, 5:], Blackbox(), objectness=ref[:, 4])
    return np.asarray(sal)


def child(ns) -> None:
    torch, net, x = build(ns.size)
    torch.set_num_threads(ns.threads)
    fn = globals()[f"run_{ns.child}"]
    fn(torch, net, x, min(ns.n_masks, 200), ns.grid, ns.batch)  # warm-up
    before, walls, inside = rss_mb(), [], []
    for _ in range(ns.repeats):
        net.seconds = 0.0
        t0 = time.perf_counter()
        sal = fn(torch, net, x, ns.n_masks, ns.grid, ns.batch)
        walls.append(time.perf_counter() - t0)
        inside.append(net.seconds)
    np.save(ns.out, sal)
    k = int(np.argmin(walls))
    print(json.dumps({"wall": float(np.median(walls)), "model": float(inside[k]), "queries": ns.n_masks + 1,
                      "rss_before": before, "peak_rss": peak_rss_mb()}))


def spawn(runner: str, n_masks: int, ns) -> dict:
    out_file = f"/tmp/bench_drise_{runner}_{n_masks}.npy"
    cmd = [sys.executable, __file__, "--child", runner, "--n-masks", str(n_masks), "--size", str(ns.size),
           "--grid", str(ns.grid), "--batch", str(ns.batch), "--threads", str(ns.threads), "--repeats",
           str(ns.repeats), "--out", out_file]
    row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    row["map"] = np.load(out_file)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--grid", type=int, default=8)
    ap.add_argument("--masks", default="500,2000,8000")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child", choices=RUNNERS)
    ap.add_argument("--n-masks", type=int, default=500)
    ap.add_argument("--out", default="/tmp/bench_drise.npy")
    ns = ap.parse_args()
    if ns.child:
        child(ns)
        return
    print(f"size={ns.size} grid={ns.grid} batch={ns.batch} threads={ns.threads} repeats={ns.repeats} (median)\n")
    print("| masks | runner | wall s | in the detector s | outside ms/query | peak RSS MB (before) |")
    print("|---|---|---|---|---|---|")
    for n in (int(m) for m in ns.masks.split(",")):
        rows = {r: spawn(r, n, ns) for r in RUNNERS}
        for r, row in rows.items():
            outside = (row["wall"] - row["model"]) / row["queries"] * 1e3
            print(f"| {n} | {r} | {row['wall']:.2f} | {row['model']:.2f} | {outside:.3f} | "
                  f"{row['peak_rss']:.0f} ({row['rss_before']:.0f}) |")
        ours, theirs = rows["perturbx"], rows["xaitk"]
        k = min(len(ours["map"]), len(theirs["map"]))
        r = [np.corrcoef(ours["map"][i].ravel(), theirs["map"][i].ravel())[0, 1] for i in range(k)]
        o_out = (ours["wall"] - ours["model"]) / ours["queries"]
        t_out = (theirs["wall"] - theirs["model"]) / theirs["queries"]
        print(f"| {n} | ratio xaitk/perturbx | {theirs['wall'] / ours['wall']:.2f} | | {t_out / o_out:.2f} | "
              f"maps' Pearson {np.round(r, 3).tolist()} |")


if __name__ == "__main__":
    main()
