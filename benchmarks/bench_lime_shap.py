"""LIME and KernelSHAP on superpixels: perturbx against lime, shap and Captum, in one run.

Speed (``speed``): the ResNet-18-shaped CNN (random init) on one 224x224 image of the
built-in shapes data, 50 SLIC superpixels (skimage; the first setting that yields
exactly 50, see ``slic_with``), the top class's
probability, the same number of model queries for every runner, each runner in its own
process after a small warm-up. Printed per runner: queries actually made, wall seconds
(median of --repeats), the model's own forward time for the same number of queries at
its best batch size (the floor), their ratio, wall over the time the runner's own
queries spent in the model (measured in the same run, so robust on a busy machine), the
time outside the model per query, and peak RSS (RSS before the call in brackets). Runners:

* perturbx LIME and KernelSHAP (``Torch`` adapter, ``batch_size=--batch``);
* lime 0.2 ``LimeImageExplainer`` (same segments, hide colour = segment mean, batch_size);
* shap ``KernelExplainer`` superpixel recipe from shap's image examples (a per-sample
  ``mask_image`` loop; the model function returns the explained class only);
* shap ``Partition`` explainer with a ``blur(16,16)`` image masker (its own hierarchy,
  no superpixels), ``max_evals`` = queries;
* Captum ``Lime`` and ``KernelShap`` with the segments as ``feature_mask`` and the
  segment-mean image as baseline, ``perturbations_per_eval`` = batch.

Accuracy (``accuracy``): a 16-superpixel game of the demo CNN (the probability of the
top class of the first held-out image, 16 SLIC superpixels hidden by their mean colour;
``--game-segments grid`` and ``--game-output logits`` give other games). All 2**16
coalitions are scored once through the model and the exact Shapley values computed by
enumeration; each estimator then queries that table (the same numbers the model
returns) so that many seeds are cheap. Printed: relative L2 error
``||phi_hat - phi|| / ||phi||`` (root mean square over --seeds) as the budget grows, for
perturbx KernelSHAP (with its mean reported standard error), shap ``KernelExplainer``
with ``l1_reg=False`` (plain KernelSHAP) and with its default ``l1_reg`` (keeps 10
features), which estimate perturbx kept (linear, logistic control variate, third-order),
perturbx restricted to the linear fit (its design alone: stratified, paired, without
replacement), and the queries perturbx needs to reach shap's error (log-log interpolation).

    python benchmarks/bench_lime_shap.py                 # both tables (about 15 min on 2 cores)
    python benchmarks/bench_lime_shap.py speed --queries 1000 --repeats 3
    python benchmarks/bench_lime_shap.py accuracy --seeds 20
    python benchmarks/bench_lime_shap.py speed --quick   # small sizes, to check it runs
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import warnings

import numpy as np
from _memory import peak_rss_mb, rss_mb

RUNNERS = ("perturbx_lime", "lime", "captum_lime", "perturbx_kernelshap", "shap_kernel", "captum_kernelshap",
           "shap_partition")


def slic_with(m: int, x: np.ndarray) -> np.ndarray:
    """SLIC superpixels of ``x`` (3, H, W), exactly ``m`` of them.

    The first setting that gives ``m``, trying ``compactness`` 10, 20, 5, 40 in turn and
    for each ``n_segments`` from ``m / 2`` up.
    """
    from perturbx._utils import Layout
    from perturbx.segmentation import SLIC, compute_segments

    for compactness in (10.0, 20.0, 5.0, 40.0):
        for n_segments in range(m // 2, 4 * m):
            segments = compute_segments(SLIC(n_segments, compactness), x, Layout("CHW"), "benchmark")
            if segments.max() + 1 == m:
                return segments
    raise RuntimeError(f"no SLIC setting gives {m} superpixels for this image")


class Setup:
    """Model (wrapped to count rows and time its forward), image, segments, target, baseline."""

    def __init__(self, size: int, threads: int) -> None:
        import torch

        from perturbx.datasets import make_shapes
        from perturbx.models import resnet18_shaped
        from perturbx.segmentation import segment_mean

        torch.set_num_threads(threads)
        self.torch = torch
        self.inner = resnet18_shaped(1000, random_state=0).eval()
        self.rows, self.model_seconds = 0, 0.0
        outer = self

        class Counted(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                t0 = time.perf_counter()
                out = torch.softmax(self.net(x), dim=1)
                outer.model_seconds += time.perf_counter() - t0
                outer.rows += int(x.shape[0])
                return out

        self.net = Counted(self.inner).eval()
        self.x = make_shapes(1, size=size, random_state=0).images[0]
        self.segments = slic_with(50, self.x)
        self.m = int(self.segments.max()) + 1
        self.fudged = segment_mean(self.x, self.segments).astype(np.float32)
        with torch.inference_mode():
            self.target = int(self.inner(torch.as_tensor(self.x[None])).argmax())

    def probs(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        """Target-class probability of numpy images (n, 3, H, W), in batches."""
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(batch), batch_size):
                part = self.torch.as_tensor(np.ascontiguousarray(batch[i:i + batch_size], dtype=np.float32))
                out.append(self.net(part)[:, self.target].numpy())
        return np.concatenate(out)


def run_perturbx_lime(s: Setup, n: int, batch: int) -> np.ndarray:
    import perturbx
    from perturbx.explainers.lime import LIME

    e = LIME(n_samples=n, segmentation=s.segments, random_state=0).explain(
        perturbx.adapters.Torch(s.net, batch_size=batch), s.x, target=s.target)
    return e.segment_weights[0]


def run_perturbx_kernelshap(s: Setup, n: int, batch: int) -> np.ndarray:
    import perturbx
    from perturbx.explainers.kernel_shap import KernelSHAP

    e = KernelSHAP(n_samples=n, segmentation=s.segments, random_state=0).explain(
        perturbx.adapters.Torch(s.net, batch_size=batch), s.x, target=s.target)
    return e.segment_weights[0]


def run_lime(s: Setup, n: int, batch: int) -> np.ndarray:
    from lime.lime_image import LimeImageExplainer

    def classifier_fn(images):  # (n, H, W, 3) float64
        return s.probs(np.asarray(images).transpose(0, 3, 1, 2), batch)[:, None]

    exp = LimeImageExplainer(random_state=0).explain_instance(
        s.x.transpose(1, 2, 0).astype(np.float64), classifier_fn, labels=(0,), top_labels=None,
        hide_color=None, num_samples=n, batch_size=batch, segmentation_fn=lambda image: s.segments)
    w = np.zeros(s.m)
    for feature, weight in exp.local_exp[0]:
        w[feature] = weight
    return w


def mask_image(zs: np.ndarray, segmentation: np.ndarray, image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """shap's image-example recipe (per sample, per segment), channels last, float64."""
    out = np.zeros((zs.shape[0], image.shape[0], image.shape[1], image.shape[2]))
    for i in range(zs.shape[0]):
        out[i, :, :, :] = image
        for j in range(zs.shape[1]):
            if zs[i, j] == 0:
                out[i][segmentation == j, :] = background[segmentation == j, :]
    return out


def run_shap_kernel(s: Setup, n: int, batch: int) -> np.ndarray:
    import shap

    image, background = s.x.transpose(1, 2, 0), s.fudged.transpose(1, 2, 0)

    def f(z):
        return s.probs(mask_image(z, s.segments, image, background).transpose(0, 3, 1, 2), batch)

    np.random.seed(0)
    explainer = shap.KernelExplainer(f, np.zeros((1, s.m)))
    return np.asarray(explainer.shap_values(np.ones((1, s.m)), nsamples=n - 2, silent=True)).ravel()


def run_shap_partition(s: Setup, n: int, batch: int) -> np.ndarray:
    import shap

    masker = shap.maskers.Image("blur(16,16)", s.x.transpose(1, 2, 0).shape)

    def f(images):  # (n, H, W, 3)
        return s.probs(np.asarray(images).transpose(0, 3, 1, 2), batch)[:, None]

    explainer = shap.Explainer(f, masker)
    out = explainer(s.x.transpose(1, 2, 0)[None], max_evals=n, batch_size=batch, silent=True)
    values = np.asarray(out.values)[0, ..., 0].sum(axis=-1)  # (H, W)
    return np.bincount(s.segments.ravel(), weights=values.ravel(), minlength=s.m)


def _captum(cls, s: Setup, n: int, batch: int) -> np.ndarray:
    torch = s.torch
    xt = torch.as_tensor(s.x[None])
    mask = torch.as_tensor(s.segments)[None, None]
    with torch.no_grad():
        attr = cls(s.net).attribute(xt, target=s.target, feature_mask=mask, baselines=torch.as_tensor(s.fudged[None]),
                                    n_samples=n, perturbations_per_eval=batch)
    flat = attr[0, 0].numpy().ravel()
    return np.array([flat[np.flatnonzero(s.segments.ravel() == j)[0]] for j in range(s.m)])


def run_captum_lime(s: Setup, n: int, batch: int) -> np.ndarray:
    from captum.attr import Lime

    return _captum(Lime, s, n, batch)


def run_captum_kernelshap(s: Setup, n: int, batch: int) -> np.ndarray:
    from captum.attr import KernelShap

    return _captum(KernelShap, s, n, batch)


def forward_floor(s: Setup, n_queries: int, batches=(16, 32, 64)) -> float:
    """Seconds the model alone needs for ``n_queries`` rows at its best batch size."""
    torch, best = s.torch, math.inf
    xt = torch.as_tensor(s.x)
    with torch.inference_mode():
        for b in batches:
            inp = xt[None].repeat(b, 1, 1, 1).contiguous()
            torch.softmax(s.inner(inp), dim=1)
            reps = max(2, int(96 / b))
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.softmax(s.inner(inp), dim=1)
            best = min(best, (time.perf_counter() - t0) / (reps * b))
    return best * n_queries


def child(ns) -> None:
    warnings.filterwarnings("ignore")
    s = Setup(ns.size, ns.threads)
    fn = globals()[f"run_{ns.child}"]
    fn(s, max(2 * s.m + 2, 110), ns.batch)  # warm-up (imports, first calls), kept small
    before = rss_mb()
    walls, outside = [], []
    for _ in range(ns.repeats):
        s.rows, s.model_seconds = 0, 0.0
        t0 = time.perf_counter()
        weights = fn(s, ns.queries, ns.batch)
        walls.append(time.perf_counter() - t0)
        outside.append(walls[-1] - s.model_seconds)
    np.save(ns.out, weights)
    print(json.dumps({"runner": ns.child, "queries": s.rows, "wall": float(np.median(walls)),
                      "outside": float(np.median(outside)), "floor": forward_floor(s, s.rows), "m": s.m,
                      "rss_before": before, "peak_rss": peak_rss_mb()}))


def spawn(runner: str, ns) -> dict:
    cmd = [sys.executable, __file__, "speed", "--child", runner, "--queries", str(ns.queries), "--batch",
           str(ns.batch), "--threads", str(ns.threads), "--repeats", str(ns.repeats), "--size", str(ns.size),
           "--out", f"/tmp/bench_lime_shap_{runner}.npy"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def speed(ns) -> None:
    print(f"## Speed: ResNet-18-shaped CNN at {ns.size}x{ns.size}, SLIC superpixels, {ns.queries} queries, "
          f"batch {ns.batch}, {ns.threads} threads, median of {ns.repeats}\n")
    print("| runner | queries | wall s | floor s | wall/floor | wall/own model time | outside model ms/query "
          "| peak RSS MB (before) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = {}
    for runner in ns.runners.split(","):
        row = rows[runner] = spawn(runner, ns)
        print(f"| {runner} | {row['queries']} | {row['wall']:.2f} | {row['floor']:.2f} | "
              f"{row['wall'] / row['floor']:.3f} | {row['wall'] / (row['wall'] - row['outside']):.3f} | "
              f"{row['outside'] / row['queries'] * 1e3:.2f} | {row['peak_rss']:.0f} ({row['rss_before']:.0f}) |",
              flush=True)
    print(f"\nsuperpixels: {next(iter(rows.values()))['m']}")
    for ours, peers in (("perturbx_lime", ("lime", "captum_lime")),
                        ("perturbx_kernelshap", ("shap_kernel", "captum_kernelshap", "shap_partition"))):
        for peer in peers:
            if ours in rows and peer in rows:
                a, b = np.load(f"/tmp/bench_lime_shap_{ours}.npy"), np.load(f"/tmp/bench_lime_shap_{peer}.npy")
                print(f"{ours} / {peer}: wall ratio {rows[ours]['wall'] / rows[peer]['wall']:.3f}, "
                      f"superpixel weights Pearson {np.corrcoef(a, b)[0, 1]:.3f}")


# ---- accuracy per query --------------------------------------------------------------------------------


def demo_game(segmentation: str = "slic", output: str = "probs") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of every coalition of a 16-superpixel game of the demo CNN; exact Shapley values.

    ``segmentation``: 16 SLIC superpixels or a 4 x 4 grid; ``output``: the top class's
    probability or logit.
    """
    import perturbx
    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model
    from perturbx.segmentation import segment_mean

    x = make_shapes(1, random_state=DEMO_TEST_SEED).images[0]
    from perturbx.segmentation import Grid

    segments = slic_with(16, x) if segmentation == "slic" else Grid((4, 4))(np.zeros(x.shape[1:]))
    adapter = perturbx.adapters.Torch(load_demo_model(), batch_size=1024, output=output)
    target = int(adapter.predict(x[None]).argmax())
    base = segment_mean(x, segments).astype(np.float32)
    codes = np.arange(2 ** 16)
    values = np.empty(len(codes))
    for i in range(0, len(codes), 4096):
        z = ((codes[i:i + 4096, None] >> np.arange(16)) & 1).astype(np.float32)
        values[i:i + 4096] = adapter.predict(base[None] + z[:, segments][:, None] * (x - base)[None])[:, target]
    return values, segments, exact_shapley(values)


def exact_shapley(values: np.ndarray) -> np.ndarray:
    m = len(values).bit_length() - 1
    codes = np.arange(len(values))
    sizes = np.array([bin(c).count("1") for c in codes])
    weight = np.array([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)])
    phi = np.zeros(m)
    for j in range(m):
        out = codes[(codes >> j) & 1 == 0]
        phi[j] = weight[sizes[out]] @ (values[out | (1 << j)] - values[out])
    return phi


def accuracy(ns) -> None:
    import shap

    from perturbx.adapters import Callable
    from perturbx.explainers.kernel_shap import KernelSHAP

    warnings.filterwarnings("ignore")
    values, segments, phi = demo_game(ns.game_segments, ns.game_output)
    m, norm = 16, np.linalg.norm(phi)
    first = [np.flatnonzero(segments.ravel() == j)[0] for j in range(m)]

    def lookup(z):
        return values[(np.rint(z).astype(np.int64) << np.arange(m)).sum(axis=1)]

    adapter = Callable(lambda b: lookup(b.reshape(len(b), -1)[:, first])[:, None], input_layout="HW",
                       batch_size=4096)
    ones = np.ones(segments.shape, np.float32)
    print(f"## Accuracy per query: 16-superpixel game of the demo CNN ({ns.game_segments}, {ns.game_output}), "
          f"relative L2 error, RMS over {ns.seeds} seeds\n")
    print(f"f(x) = {values[-1]:.4f}, f(baseline) = {values[0]:.4f}, ||phi|| = {norm:.4f}\n")
    print("| queries | perturbx KernelSHAP | (its reported error) | (estimate kept) | perturbx linear only "
          "| shap l1_reg=False | shap default l1_reg |")
    print("|---|---|---|---|---|---|---|")
    budgets = [b for b in (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536) if b <= ns.max_budget]
    table = {}
    for n in budgets:
        ours, reported, plain, default, kept, linear = [], [], [], [], [], []
        for seed in range(ns.seeds):
            e = KernelSHAP(n_samples=n, segmentation=segments, baseline=0.0, random_state=seed).explain(
                adapter, ones, target=0)
            ours.append(np.linalg.norm(e.segment_weights[0] - phi) / norm)
            reported.append(np.sqrt((e.errors[0] ** 2).sum()) / norm)
            kept.append("exact" if e.exact else str(e.estimate[0]))
            lin = KernelSHAP(n_samples=n, segmentation=segments, baseline=0.0, interactions=False,
                             control_variate=False, random_state=seed).explain(adapter, ones, target=0)
            linear.append(np.linalg.norm(lin.segment_weights[0] - phi) / norm)
            for l1, out in ((False, plain), ("num_features(10)", default)):
                np.random.seed(seed)
                est = shap.KernelExplainer(lookup, np.zeros((1, m))).shap_values(
                    np.ones((1, m)), nsamples=n - 2, l1_reg=l1, silent=True)
                out.append(np.linalg.norm(np.ravel(est) - phi) / norm)
        table[n] = [float(np.sqrt(np.mean(np.square(v)))) for v in (ours, reported, plain, default, linear)]
        counts = ", ".join(f"{k} {kept.count(k)}" for k in sorted(set(kept)))
        print(f"| {n} | {table[n][0]:.6f} | {table[n][1]:.6f} | {counts} | {table[n][4]:.6f} | {table[n][2]:.6f} "
              f"| {table[n][3]:.6f} |", flush=True)
    ns_ = np.array(budgets, float)
    ours_err = np.array([table[n][0] for n in budgets])
    print("\nQueries perturbx needs for shap's (l1_reg=False) error at n, by log-log interpolation:\n")
    for n in budgets[:-1]:
        target = table[n][2]
        ok = ours_err <= target
        if not ok.any():
            print(f"- n = {n}: not reached")
            continue
        k = int(np.argmax(ok))
        if k == 0:
            print(f"- n = {n}: perturbx needs <= {budgets[0]} (<= {budgets[0] / n:.2f} of shap's queries)")
            continue
        t = (np.log(target) - np.log(ours_err[k - 1])) / (np.log(ours_err[k]) - np.log(ours_err[k - 1]))
        need = float(np.exp(np.log(ns_[k - 1]) + t * (np.log(ns_[k]) - np.log(ns_[k - 1]))))
        print(f"- n = {n}: perturbx needs {need:.0f} ({need / n:.2f} of shap's queries)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=("all", "speed", "accuracy"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--runners", default=",".join(RUNNERS))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--max-budget", type=int, default=32768)
    ap.add_argument("--game-segments", default="slic", choices=("slic", "grid"))
    ap.add_argument("--game-output", default="probs", choices=("probs", "logits"))
    ap.add_argument("--quick", action="store_true", help="64x64 images, 150 queries, 2 seeds")
    ap.add_argument("--child", choices=RUNNERS)
    ap.add_argument("--out", default="/tmp/bench_lime_shap.npy")
    ns = ap.parse_args()
    if ns.quick:
        ns.size, ns.queries, ns.seeds, ns.max_budget = 64, 150, 2, 1024
    if ns.child:
        child(ns)
        return
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}; " + time.strftime("%Y-%m-%d %H:%M") + "\n")
    if ns.what in ("all", "speed"):
        speed(ns)
        print()
    if ns.what in ("all", "accuracy"):
        accuracy(ns)


if __name__ == "__main__":
    main()
