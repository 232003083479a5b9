"""Own cost per query with a near-free model: perturbx against its peers, in one run (issue 16).

The model reads every pixel and does almost nothing else (a 4x4 average pool and a linear layer to
10 logits, on 3x224x224, random weights seeded), so what remains of the wall time is each library's
own cost: making masks, rendering perturbed inputs, converting outputs, folding the estimate.
Every runner explains the same image (the first 224x224 image of the built-in shapes), the logit of
the class the model gives it, in its own process (so peak RSS is its own), after one warm-up call,
median of --repeats. The model is always called on at most --batch rows at a time. Per runner:

* queries: rows the model saw during one explanation (the unperturbed input included);
* wall s, and the model-only floor: the same model on the same number of rows in batches of
  --batch (one prepared batch, median of 3 passes, measured in the runner's process after its runs);
* own ms/query: (wall - floor) / queries, the figure of the issue; in brackets (wall - time spent
  inside the model's forward during the run) / queries, which does not depend on a separate floor;
* own CPU ms/query: the same with the process's CPU time (every thread's, ``time.process_time``)
  in place of wall time: what the work costs, little changed by other processes competing for the cores;
* peak RSS MB over the process (RSS after the warm-up in brackets), and peak RSS above the
  model-only process (``model_only``: the same imports and image, the floor's forward passes only;
  for LIME and KernelSHAP after the same superpixel setup, which imports scikit-image).

Runners, by method (the same number of perturbations, baseline and segments for all):

* Occlusion, window 16, stride 8 (729 windows), baseline 0: ``perturbx_occlusion``,
  ``captum_occlusion`` (``perturbations_per_eval=batch``), ``xaitk_sliding_window``
  (``SlidingWindowStack``, black fill, with a ``ClassifyImage`` that batches the images it is given);
* RISE, 2,000 masks, 7x7 grid, p = 0.5, baseline 0: ``perturbx_rise`` (its default estimate),
  ``rise_recipe`` (the authors' recipe: every mask made up front with skimage's resize, then
  batched forwards and one matrix product), ``xaitk_rise`` (``RISEStack``, its default, debiased);
* LIME, 1,000 samples, 50 SLIC superpixels hidden by their mean colour: ``perturbx_lime``
  (its defaults: the target's scores all lie in (0, 1) here, so the logistic control variate runs),
  ``perturbx_lime_plain`` (``control_variate=False``: lime's estimator), ``lime``
  (``LimeImageExplainer``), ``captum_lime`` (``feature_mask``);
* KernelSHAP, 1,000 samples, the same superpixels: ``perturbx_kernelshap`` (its defaults),
  ``perturbx_kernelshap_plain`` (no control variate, no third-order fit: shap's estimator),
  ``shap_kernel`` (``KernelExplainer`` with the superpixel recipe of shap's image examples),
  ``captum_kernelshap``.

Captum Lime (about 0.1 s a query on the CPU, outside the model) is warmed up on the --quick sizes and
timed --slow-repeats times (default 1). ``--model resnet50 --device cuda`` runs the same runners on a
GPU with the ResNet-50-shaped CNN (``benchmarks/gpu.sh``); there "wall / floor" is the figure and the
time inside the forward is not measured (CUDA returns before its kernels have run).

    python benchmarks/bench_overhead.py                      # every runner (about 20 min on 2 quiet cores)
    python benchmarks/bench_overhead.py --runners perturbx_rise,rise_recipe --repeats 5
    python benchmarks/bench_overhead.py --quick              # few perturbations, one repeat: does it run
    python benchmarks/bench_overhead.py --profile --threads 1   # where perturbx's own time goes, by component
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import warnings

import numpy as np
from _memory import peak_rss_mb, rss_mb

METHODS = {
    "Occlusion": ("perturbx_occlusion", "captum_occlusion", "xaitk_sliding_window"),
    "RISE": ("perturbx_rise", "rise_recipe", "xaitk_rise"),
    "LIME": ("perturbx_lime", "perturbx_lime_plain", "lime", "captum_lime"),
    "KernelSHAP": ("perturbx_kernelshap", "perturbx_kernelshap_plain", "shap_kernel", "captum_kernelshap"),
}
RUNNERS = tuple(r for runners in METHODS.values() for r in runners)
#: runners timed --slow-repeats times after a warm-up on the --quick sizes (Captum Lime: ~0.1 s a query)
SLOW = ("captum_lime",)
SIZE = 224


def settings(quick: bool, n_masks: int = 2000) -> dict:
    """Perturbations per method (``--quick``: a few, to check that every runner runs)."""
    if quick:
        return {"window": 64, "stride": 32, "n_masks": 128, "n_samples": 128, "grid": 7, "p": 0.5, "segments": 50}
    return {"window": 16, "stride": 8, "n_masks": n_masks, "n_samples": 1000, "grid": 7, "p": 0.5, "segments": 50}


def build_model(torch, name: str):
    """``nearfree``: 4x4 average pool + linear to 10 logits; ``resnet50``: the ResNet-50-shaped CNN (1000 logits)."""
    if name == "resnet50":
        from perturbx.models.resnet50 import resnet50_shaped

        return resnet50_shaped(1000, random_state=0)
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(3 * (SIZE // 4) ** 2, 10)).eval()


class Setup:
    """The near-free model (wrapped to count rows and time its forward), the image, target and segments."""

    def __init__(self, threads: int, batch: int, cfg: dict, superpixels: bool, model: str = "nearfree",
                 device: str = "cpu") -> None:
        import torch
        from threadpoolctl import threadpool_limits

        from perturbx.datasets import make_shapes

        torch.set_num_threads(threads)
        threadpool_limits(limits=threads)  # numpy's BLAS too (lime, shap and our own fits use it)
        self.torch, self.batch, self.cfg, self.device = torch, batch, cfg, device
        self.inner = build_model(torch, model).to(device)
        self.n_classes = int(self.inner(torch.zeros(1, 3, SIZE, SIZE, device=device)).shape[1])
        self.rows, self.model_seconds = 0, 0.0
        self.net = _counted(torch, self.inner, self)
        self.x = make_shapes(1, size=SIZE, random_state=0).images[0]
        with torch.inference_mode():
            self.target = int(self.inner(self.tensor(self.x[None])).argmax())
        self.segments = self.fudged = None
        if superpixels:
            from bench_lime_shap import slic_with

            from perturbx.segmentation import segment_mean

            self.segments = slic_with(cfg["segments"], self.x)
            self.fudged = segment_mean(self.x, self.segments).astype(np.float32)

    def tensor(self, a: np.ndarray):
        """``a`` as a float32 tensor on the device."""
        return self.torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=self.device)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def logits(self, images_hwc: np.ndarray) -> np.ndarray:
        """The target's logit for numpy images ``(n, H, W, 3)`` (what the numpy-based peers hand over), in batches."""
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(images_hwc), self.batch):
                part = self.tensor(np.asarray(images_hwc[i:i + self.batch]).transpose(0, 3, 1, 2))
                out.append(self.net(part)[:, self.target].cpu().numpy().astype(np.float64))
        return np.concatenate(out)

    def floor(self, n_rows: int) -> tuple[float, float]:
        """Wall and CPU seconds the model alone takes for ``n_rows`` rows in batches of ``batch`` (medians of 3)."""
        torch, b = self.torch, self.batch
        full = self.tensor(np.repeat(self.x[None], b, axis=0))
        part = full[:n_rows % b].contiguous()
        walls, cpus = [], []
        with torch.inference_mode():
            self.inner(full)
            self.sync()
            for _ in range(3):
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(n_rows // b):
                    self.inner(full)
                if len(part):
                    self.inner(part)
                self.sync()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
        return float(np.median(walls)), float(np.median(cpus))


def _counted(torch, inner, owner: Setup):
    class Counted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            t0 = time.perf_counter()
            out = self.inner(x)
            owner.model_seconds += time.perf_counter() - t0
            owner.rows += int(x.shape[0])
            return out

    return Counted().eval()


# ---- perturbx ------------------------------------------------------------------------------------------------


def _adapter(s: Setup):
    from perturbx.adapters import Torch

    return Torch(s.net, batch_size=s.batch, device=s.device)


def run_perturbx_occlusion(s: Setup) -> np.ndarray:
    import perturbx

    return perturbx.Occlusion(window=s.cfg["window"], stride=s.cfg["stride"]).explain(
        _adapter(s), s.x, target=s.target).attributions


def run_perturbx_rise(s: Setup) -> np.ndarray:
    import perturbx

    return perturbx.RISE(n_masks=s.cfg["n_masks"], grid_size=s.cfg["grid"], p_keep=s.cfg["p"],
                         random_state=0).explain(_adapter(s), s.x, target=s.target).attributions


def run_perturbx_lime(s: Setup) -> np.ndarray:
    from perturbx.explainers.lime import LIME

    return LIME(n_samples=s.cfg["n_samples"], segmentation=s.segments, random_state=0).explain(
        _adapter(s), s.x, target=s.target).extras["segment_weights"][0]


def run_perturbx_lime_plain(s: Setup) -> np.ndarray:
    """lime's own estimator: the weighted ridge alone, without the logistic control variate."""
    from perturbx.explainers.lime import LIME

    return LIME(n_samples=s.cfg["n_samples"], segmentation=s.segments, control_variate=False,
                random_state=0).explain(_adapter(s), s.x, target=s.target).extras["segment_weights"][0]


def run_perturbx_kernelshap(s: Setup) -> np.ndarray:
    from perturbx.explainers.kernel_shap import KernelSHAP

    return KernelSHAP(n_samples=s.cfg["n_samples"], segmentation=s.segments, random_state=0).explain(
        _adapter(s), s.x, target=s.target).extras["segment_weights"][0]


def run_perturbx_kernelshap_plain(s: Setup) -> np.ndarray:
    """shap's own estimator: the linear Shapley regression alone (no control variate, no third-order fit)."""
    from perturbx.explainers.kernel_shap import KernelSHAP

    return KernelSHAP(n_samples=s.cfg["n_samples"], segmentation=s.segments, control_variate=False,
                      interactions=False, random_state=0).explain(
        _adapter(s), s.x, target=s.target).extras["segment_weights"][0]


# ---- peers -------------------------------------------------------------------------------------------------


def run_captum_occlusion(s: Setup) -> np.ndarray:
    from captum.attr import Occlusion

    w, st = s.cfg["window"], s.cfg["stride"]
    with s.torch.no_grad():
        a = Occlusion(s.net).attribute(s.tensor(s.x[None]), sliding_window_shapes=(3, w, w),
                                       strides=(3, st, st), target=s.target, baselines=0.0,
                                       perturbations_per_eval=s.batch)
    return a[0].sum(0).cpu().numpy()


def run_rise_recipe(s: Setup) -> np.ndarray:
    """The RISE authors' recipe: every mask made up front (skimage resize per mask), batched forwards."""
    from skimage.transform import resize

    torch, n, g, p = s.torch, s.cfg["n_masks"], s.cfg["grid"], s.cfg["p"]
    rng = np.random.default_rng(0)
    cell = math.ceil(SIZE / g)
    grid = (rng.random((n, g, g)) < p).astype(np.float32)
    masks = np.empty((n, SIZE, SIZE), dtype=np.float32)
    for i in range(n):
        dy, dx = rng.integers(0, cell, size=2)
        masks[i] = resize(grid[i], ((g + 1) * cell,) * 2, order=1, mode="reflect",
                          anti_aliasing=False)[dy:dy + SIZE, dx:dx + SIZE]
    masks_t, xt = s.tensor(masks)[:, None], s.tensor(s.x)
    scores = []
    with torch.inference_mode():
        for i in range(0, n, s.batch):
            scores.append(s.net(masks_t[i:i + s.batch] * xt)[:, s.target])
        sal = torch.cat(scores) @ masks_t.view(n, -1) / n / p
    return sal.view(SIZE, SIZE).cpu().numpy()


def _xaitk_blackbox(s: Setup):
    from smqtk_classifier.interfaces.classify_image import ClassifyImage

    class Blackbox(ClassifyImage):
        """The model as xaitk's black box: images one by one in, a dict per image out; batched here."""

        def get_labels(self):
            return list(range(s.n_classes))

        def classify_images(self, img_iter):
            pending = []
            for img in img_iter:
                pending.append(img)
                if len(pending) == s.batch:
                    yield from self._run(pending)
                    pending = []
            if pending:
                yield from self._run(pending)

        def _run(self, images):
            with s.torch.inference_mode():
                out = s.net(s.tensor(np.stack(images).transpose(0, 3, 1, 2))).cpu().numpy()
            return [dict(enumerate(row.tolist())) for row in out]

        def get_config(self) -> dict:
            return {}

    return Blackbox()


def run_xaitk_sliding_window(s: Setup) -> np.ndarray:
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.slidingwindow import SlidingWindowStack

    w, st = s.cfg["window"], s.cfg["stride"]
    sal = SlidingWindowStack(window_size=(w, w), stride=(st, st)).generate(
        np.ascontiguousarray(s.x.transpose(1, 2, 0)), _xaitk_blackbox(s))
    return np.asarray(sal)[s.target]


def run_xaitk_rise(s: Setup) -> np.ndarray:
    from xaitk_saliency.impls.gen_image_classifier_blackbox_sal.rise import RISEStack

    sal = RISEStack(n=s.cfg["n_masks"], s=s.cfg["grid"], p1=s.cfg["p"], seed=0).generate(
        np.ascontiguousarray(s.x.transpose(1, 2, 0)), _xaitk_blackbox(s))
    return np.asarray(sal)[s.target]


def run_lime(s: Setup) -> np.ndarray:
    from lime.lime_image import LimeImageExplainer

    exp = LimeImageExplainer(random_state=0).explain_instance(
        s.x.transpose(1, 2, 0).astype(np.float64), lambda images: s.logits(images)[:, None], labels=(0,),
        top_labels=None, hide_color=None, num_samples=s.cfg["n_samples"], batch_size=s.batch,
        segmentation_fn=lambda image: s.segments)
    w = np.zeros(int(s.segments.max()) + 1)
    for feature, weight in exp.local_exp[0]:
        w[feature] = weight
    return w


def run_shap_kernel(s: Setup) -> np.ndarray:
    import shap
    from bench_lime_shap import mask_image

    image, background = s.x.transpose(1, 2, 0), s.fudged.transpose(1, 2, 0)
    m = int(s.segments.max()) + 1
    np.random.seed(0)
    explainer = shap.KernelExplainer(lambda z: s.logits(mask_image(z, s.segments, image, background)),
                                     np.zeros((1, m)))
    return np.asarray(explainer.shap_values(np.ones((1, m)), nsamples=s.cfg["n_samples"] - 2, silent=True)).ravel()


def _captum_superpixels(cls, s: Setup) -> np.ndarray:
    torch = s.torch
    mask = torch.as_tensor(s.segments, device=s.device)[None, None]
    with torch.no_grad():
        attr = cls(s.net).attribute(s.tensor(s.x[None]), target=s.target, feature_mask=mask,
                                    baselines=s.tensor(s.fudged[None]), n_samples=s.cfg["n_samples"],
                                    perturbations_per_eval=s.batch)
    flat = attr[0, 0].cpu().numpy().ravel()
    return np.array([flat[np.flatnonzero(s.segments.ravel() == j)[0]] for j in range(int(s.segments.max()) + 1)])


def run_captum_lime(s: Setup) -> np.ndarray:
    from captum.attr import Lime

    return _captum_superpixels(Lime, s)


def run_captum_kernelshap(s: Setup) -> np.ndarray:
    from captum.attr import KernelShap

    return _captum_superpixels(KernelShap, s)


def run_model_only(s: Setup) -> np.ndarray:
    """No explanation: the reference process for memory (the floor's forward passes on RISE's rows)."""
    s.floor(s.cfg["n_masks"] + 1)
    return np.zeros(1)


run_model_only_superpixels = run_model_only  # the same, after the superpixels' setup (skimage's SLIC)
SUPERPIXELS = (*METHODS["LIME"], *METHODS["KernelSHAP"], "model_only_superpixels")


# ---- driver ------------------------------------------------------------------------------------------------


def child(ns) -> None:
    warnings.filterwarnings("ignore")
    slow = ns.child in SLOW
    s = Setup(ns.threads, ns.batch, settings(ns.quick or slow), ns.child in SUPERPIXELS,
              ns.model, ns.device)
    fn = globals()[f"run_{ns.child}"]
    fn(s)  # warm-up (a slow runner's on the --quick sizes)
    s.sync()
    s.cfg = settings(ns.quick, ns.rise_masks)
    before, walls, cpus, inside, rows = rss_mb(), [], [], [], 0
    for _ in range(ns.slow_repeats if slow else ns.repeats):
        s.rows, s.model_seconds = 0, 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        attr = fn(s)
        s.sync()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        inside.append(s.model_seconds)
        rows = s.rows
    peak = peak_rss_mb()  # before the floor's own batches
    np.save(ns.out, np.asarray(attr, dtype=np.float64))
    floor, floor_cpu = s.floor(rows) if rows else (0.0, 0.0)
    print(json.dumps({"runner": ns.child, "queries": rows, "wall": float(np.median(walls)),
                      "inside": float(np.median(inside)), "walls": walls, "cpu": float(np.median(cpus)),
                      "floor": floor, "floor_cpu": floor_cpu, "rss_before": before, "peak_rss": peak}))


#: where perturbx's time goes: (component, cProfile entries (file suffix, function) whose cumulative time it is)
PROFILE_PARTS = (
    ("reference query, target binding", (("perturbx/explainer.py", "_requests"),)),
    ("plan: sampler, estimator, renderer setup", (("perturbx/explainers/", "_plan"),)),
    ("masks: chunk.materialize", (("perturbx/samplers/", "materialize"),)),
    ("render: BlendRenderer into the pooled buffer", (("perturbx/engine.py", "render"),)),
    ("model forward", (("benchmarks/bench_overhead.py", "forward"),)),
    ("adapter: output to numpy, checks, target select", (("perturbx/engine.py", "_score_one_batch"),)),
    ("estimator update", (("perturbx/engine.py", "fold"),)),
    ("estimator finalize, extras", (("perturbx/estimators/", "finalize"),)),
)


def profile_child(ns) -> None:
    """One run of a perturbx runner under cProfile, after a warm-up: CPU ms per query by component.

    The profiler's clock is the process's CPU time, so other processes on the cores change the
    figures little; with ``--threads 1`` they add up to the run's own CPU time.
    """
    import cProfile
    import pstats

    s = Setup(ns.threads, ns.batch, settings(ns.quick, ns.rise_masks),
              ns.child in SUPERPIXELS, ns.model, ns.device)
    fn = globals()[f"run_{ns.child}"]
    fn(s)
    s.rows = 0
    prof = cProfile.Profile(time.process_time)
    t0 = time.process_time()
    prof.runcall(fn, s)
    wall = time.process_time() - t0
    cum: dict[str, float] = {}
    for (file, _, name), (_, _, _, ct, _) in pstats.Stats(prof).stats.items():
        for part, entries in PROFILE_PARTS:
            if any(file.replace(os.sep, "/").find(f) >= 0 and name == n for f, n in entries):
                cum[part] = cum.get(part, 0.0) + ct
    parts = {p: cum.get(p, 0.0) for p, _ in PROFILE_PARTS}
    parts["render: BlendRenderer into the pooled buffer"] -= parts["masks: chunk.materialize"]
    parts["adapter: output to numpy, checks, target select"] -= parts["model forward"]
    parts["rest: engine loop, explanation"] = wall - sum(parts.values())
    print(json.dumps({"runner": ns.child, "queries": s.rows, "wall": wall,
                      "ms_per_query": {k: v / s.rows * 1e3 for k, v in parts.items()}}))


def profile_table(ns) -> None:
    runners = [r for r in ns.runners.split(",") if r.startswith("perturbx_")]
    rows = {r: spawn(r, ns, profile=True) for r in runners}
    print("| CPU ms per query (one run under cProfile) | " + " | ".join(r.removeprefix("perturbx_") for r in rows)
          + " |")
    print("|---|" + "---|" * len(rows))
    for part in next(iter(rows.values()))["ms_per_query"]:
        print(f"| {part} | " + " | ".join(f"{row['ms_per_query'][part]:.3f}" for row in rows.values()) + " |")
    print("| **total (CPU time / queries)** | " + " | ".join(f"**{row['wall'] / row['queries'] * 1e3:.3f}**"
                                                             for row in rows.values()) + " |")
    print("| **own: total - model forward** | " + " | ".join(
        f"**{(row['wall'] / row['queries'] * 1e3 - row['ms_per_query']['model forward']):.3f}**"
        for row in rows.values()) + " |")


def spawn(runner: str, ns, profile: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", runner, "--threads", str(ns.threads), "--batch", str(ns.batch),
           "--repeats", str(ns.repeats), "--slow-repeats", str(ns.slow_repeats), "--model", ns.model,
           "--device", ns.device, "--rise-masks", str(ns.rise_masks),
           "--out", os.path.join(ns.tmp, f"bench_overhead_{runner}.npy")]
    cmd += ["--quick"] if ns.quick else []
    cmd += ["--profile"] if profile else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"runner {runner} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: dict, bases: dict | None, ns) -> None:
    print("| method | runner | queries | wall s | model-only floor s | wall / floor | own ms/query "
          "(wall - model in run) | own CPU ms/query | peak RSS MB (after warm-up) | above model-only MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for method, runners in METHODS.items():
        for r in runners:
            if r not in rows:
                continue
            row = rows[r]
            own = (row["wall"] - row["floor"]) / row["queries"] * 1e3
            # on a GPU the forward returns before the kernels ran: time inside it means nothing
            in_run = "n/a" if ns.device != "cpu" else f"{(row['wall'] - row['inside']) / row['queries'] * 1e3:.3f}"
            base = None if bases is None else bases["superpixels" if r in SUPERPIXELS else "plain"]
            above = "" if base is None else f"{row['peak_rss'] - base['peak_rss']:.0f}"
            cpu = (row["cpu"] - row["floor_cpu"]) / row["queries"] * 1e3
            print(f"| {method} | {r} | {row['queries']} | {row['wall']:.3f} | {row['floor']:.3f} | "
                  f"{row['wall'] / row['floor']:.3f} | **{own:.3f}** ({in_run}) | {cpu:.3f} | {row['peak_rss']:.0f} "
                  f"({row['rss_before']:.0f}) | {above} |")
    if bases is not None:
        print(f"\nmodel-only process: peak RSS {bases['plain']['peak_rss']:.0f} MB "
              f"({bases['superpixels']['peak_rss']:.0f} MB after the superpixels' setup, the reference of LIME and "
              f"KernelSHAP)")
    print()
    for runners in METHODS.values():
        pairs = [(o, p) for o in runners if o.startswith("perturbx_") for p in runners if not p.startswith("perturbx_")]
        for ours, peer in pairs:
            if ours in rows and peer in rows:
                a = np.load(os.path.join(ns.tmp, f"bench_overhead_{ours}.npy")).ravel()
                b = np.load(os.path.join(ns.tmp, f"bench_overhead_{peer}.npy")).ravel()
                corr = f"{np.corrcoef(a, b)[0, 1]:.3f}" if a.std() > 0 and b.std() > 0 else "n/a (a constant map)"
                print(f"{ours} / {peer}: own cost ratio "
                      f"{(rows[ours]['wall'] - rows[ours]['floor']) / (rows[peer]['wall'] - rows[peer]['floor']):.3f},"
                      f" map Pearson {corr}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slow-repeats", type=int, default=1, help=f"timed runs of {', '.join(SLOW)}")
    ap.add_argument("--model", choices=("nearfree", "resnet50"), default="nearfree")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rise-masks", type=int, default=2000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="where perturbx's time goes: one run of each perturbx runner under cProfile")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--child", choices=(*RUNNERS, "model_only", "model_only_superpixels"))
    ap.add_argument("--out", default="/tmp/bench_overhead.npy")
    ns = ap.parse_args()
    if ns.child:
        (profile_child if ns.profile else child)(ns)
        return
    if ns.profile:
        print(f"model={ns.model} threads={ns.threads} batch={ns.batch} load average {os.getloadavg()[0]:.2f}\n")
        profile_table(ns)
        return
    print(f"model={ns.model} device={ns.device} threads={ns.threads} batch={ns.batch} repeats={ns.repeats} (median; "
          f"{', '.join(SLOW)}: {ns.slow_repeats}) quick={ns.quick} load average before: {os.getloadavg()[0]:.2f}\n",
          flush=True)
    base = {"plain": spawn("model_only", ns), "superpixels": spawn("model_only_superpixels", ns)}
    rows = {}
    for runner in ns.runners.split(","):
        rows[runner] = spawn(runner, ns)
        print(f"  {runner}: {json.dumps(rows[runner])} (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    report(rows, base, ns)


if __name__ == "__main__":
    main()
