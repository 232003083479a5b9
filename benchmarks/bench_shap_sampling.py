"""KernelSHAP coalition samplers compared per model query, on the demo CNN (issue 8).

For each of 20 held-out images of the built-in shapes data (target: the label), the
game ``v(z) = f(x with the superpixels outside z replaced by their mean colour)`` of the
demo CNN is explained with ``perturbx.KernelSHAP(sampling=...)`` at 64 .. 2048 queries
and with ``shap.KernelExplainer`` at its default ``nsamples = 2 M + 2048``, for the
target's probability and its logit (one run explains both: the adapter returns the two
as two outputs). Agreement with the truth: Pearson correlation over the superpixels and
relative L2 error ``||phi_hat - phi|| / ||phi||``, mean over images and seeds.

* ``small``: M = 14 SLIC superpixels; every one of the ``2**14`` coalitions is scored once
  and the exact Shapley values come from enumeration; the explainers read the table.
* ``large``: about 50 SLIC superpixels, the model in the loop; the truth is a reference
  KernelSHAP run with 20 x 2048 queries (stratified design, its own seed).
  It then runs ``KernelSHAP(n_samples=2048, tolerance=t)`` on the same games: queries
  used, whether it converged, its estimated error, and its agreement with the reference.

Usage::

    python benchmarks/bench_shap_sampling.py small --images 20 --seeds 3
    python benchmarks/bench_shap_sampling.py large --images 20 --seeds 3
    python benchmarks/bench_shap_sampling.py small --images 2 --seeds 1   # quick check
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

BUDGETS = (64, 128, 256, 512, 1024, 2048)
SAMPLERS = ("stratified", "leverage-stratified", "kernel", "leverage")
OUTPUTS = ("probability", "logit")


def slic_with(m: int, x: np.ndarray, at_most: bool) -> np.ndarray:
    """SLIC superpixels of ``x`` (3, H, W), the first setting giving ``m`` of them, else ``m - 1``, ``m - 2``
    (``at_most``: for enumeration) or ``m +- 1, 2, 3``."""
    from perturbx._utils import Layout
    from perturbx.segmentation import SLIC, compute_segments

    for tol in range(4 if not at_most else 3):
        for compactness in (10.0, 20.0, 5.0, 40.0):
            for n_segments in range(m // 2, 3 * m):
                segments = compute_segments(SLIC(n_segments, compactness), x, Layout("CHW"), "benchmark")
                got = segments.max() + 1
                if got == m - tol or (not at_most and got == m + tol):
                    return segments
    raise RuntimeError(f"no SLIC setting gives {m} superpixels for this image")


class Game:
    """One image's superpixel game: coalitions (n, M) -> [logit, probability] of the target (n, 2)."""

    def __init__(self, net, x: np.ndarray, target: int, segments: np.ndarray) -> None:
        import torch

        from perturbx.segmentation import segment_mean

        self.torch, self.net, self.target = torch, net, target
        self.x, self.segments = x, segments
        self.m = int(segments.max()) + 1
        self.base = segment_mean(x, segments).astype(np.float32)
        self.queries = 0

    def __call__(self, z: np.ndarray, batch: int = 1024) -> np.ndarray:
        z = np.rint(np.asarray(z)).astype(np.float32)
        out = []
        with self.torch.inference_mode():
            for i in range(0, len(z), batch):
                zi = z[i:i + batch]
                images = self.base[None] + zi[:, self.segments][:, None] * (self.x - self.base)[None]
                logits = self.net(self.torch.as_tensor(images)).double()
                probs = self.torch.softmax(logits, dim=1)
                out.append(np.stack([logits[:, self.target].numpy(), probs[:, self.target].numpy()], axis=1))
        self.queries += len(z)
        return np.concatenate(out)


def table_game(values: np.ndarray):
    """A lookup ``z (n, M) -> values[code] (n, 2)`` of a fully scored game."""
    m = len(values).bit_length() - 1

    def f(z):
        return values[(np.rint(np.asarray(z)).astype(np.int64) << np.arange(m)).sum(axis=1)]

    return f


def exact_shapley(values: np.ndarray) -> np.ndarray:
    """Shapley values (T, M) of a game given on every coalition, ``values[code]`` (2**M, T)."""
    import math

    n, _ = values.shape
    m = n.bit_length() - 1
    codes = np.arange(n)
    sizes = np.array([bin(c).count("1") for c in codes])
    weight = np.array([math.factorial(k) * math.factorial(m - k - 1) / math.factorial(m) for k in range(m)])
    phi = np.zeros((values.shape[1], m))
    for j in range(m):
        out = codes[(codes >> j) & 1 == 0]
        phi[:, j] = (weight[sizes[out]] * (values[out | (1 << j)] - values[out]).T).sum(axis=1)
    return phi


def perturbx_values(fn, m: int, n: int, sampling: str, seed: int, **kw):
    """``KernelSHAP`` on the game ``fn`` (coalitions -> (n, 2)); the Explanation (targets: logit, probability)."""
    from perturbx.adapters import Callable
    from perturbx.explainers.kernel_shap import KernelSHAP

    adapter = Callable(lambda b: fn(b.reshape(len(b), m)), input_layout="HW", batch_size=1024)
    return KernelSHAP(n_samples=n, segmentation=np.arange(m)[None], baseline=0.0, sampling=sampling,
                      random_state=seed, **kw).explain(adapter, np.ones((1, m), np.float32), target=[0, 1])


def shap_values(fn, m: int, seed: int, l1_reg) -> tuple[np.ndarray, int]:
    """shap.KernelExplainer at its default nsamples on the same game: values (2, M) and queries."""
    import shap

    calls = [0]

    def f(z):
        calls[0] += len(z)
        return fn(z)

    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        phi = shap.KernelExplainer(f, np.zeros((1, m))).shap_values(np.ones((1, m)), l1_reg=l1_reg, silent=True)
    phi = np.asarray(phi, dtype=np.float64).reshape(-1, m, 2) if not isinstance(phi, list) else \
        np.stack([np.ravel(p) for p in phi], axis=-1)[None]
    return phi.reshape(m, 2).T, calls[0]


def agreement(est: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Pearson and relative L2 error of est (M,) against ref (M,)."""
    r = float(np.corrcoef(est, ref)[0, 1]) if est.std() > 0 and ref.std() > 0 else float("nan")
    return r, float(np.linalg.norm(est - ref) / np.linalg.norm(ref))


def setup(n_images: int, m: int, at_most: bool):
    import torch

    from perturbx.datasets import make_shapes
    from perturbx.models import DEMO_TEST_SEED, load_demo_model

    torch.set_num_threads(1)
    net = load_demo_model().eval()
    data = make_shapes(n_images, random_state=DEMO_TEST_SEED)
    pairs = zip(data.images, data.labels, strict=True)
    return [Game(net, x, int(label), slic_with(m, x, at_most)) for x, label in pairs]


def record(rows: list, key: tuple, est: np.ndarray, ref: np.ndarray, queries: int, extra: dict | None = None) -> None:
    for o, name in enumerate(OUTPUTS):  # column 0 of the game is the logit, 1 the probability
        col = 1 - o
        r, l2 = agreement(est[col], ref[col])
        rows.append({"key": list(key), "output": name, "pearson": r, "rel_l2": l2, "queries": queries, **(extra or {})})


def compare(games, truths, ns, label: str) -> list:
    rows = []
    for i, (game, fn, truth) in enumerate(zip(games, ns.fns, truths, strict=True)):
        t0 = time.perf_counter()
        for seed in range(ns.seeds):
            for sampling in ns.samplers:
                for n in ns.budgets:
                    if n < 2 * game.m + 2:  # too few queries to determine M values
                        continue
                    e = perturbx_values(fn, game.m, n, sampling, 1000 * seed + 7, **ns.kw)
                    record(rows, (sampling, n), e.segment_weights, truth, e.n_queries,
                           {"estimate": list(map(str, e.estimate))})
            for l1 in ns.shap_l1:
                phi, q = shap_values(fn, game.m, seed, l1)
                record(rows, (f"shap l1_reg={l1}", "2M+2048"), phi, truth, q)
        print(f"[{label}] image {i}: M = {game.m}, {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def summarise(rows: list, title: str) -> None:
    keys = []
    for r in rows:
        if tuple(r["key"]) not in keys:
            keys.append(tuple(r["key"]))
    print(f"\n### {title}\n")
    print("| sampler | queries | Pearson (probability) | rel. L2 (probability) | Pearson (logit) | rel. L2 (logit) |")
    print("|---|---|---|---|---|---|")
    for key in keys:
        cells = []
        for out in OUTPUTS:
            sel = [r for r in rows if tuple(r["key"]) == key and r["output"] == out]
            cells += [np.nanmean([r["pearson"] for r in sel]), np.mean([r["rel_l2"] for r in sel])]
        q = int(np.mean([r["queries"] for r in rows if tuple(r["key"]) == key]))
        print(f"| {key[0]} | {q} | {cells[0]:.4f} | {cells[1]:.4f} | {cells[2]:.4f} | {cells[3]:.4f} |")


def run_small(ns) -> list:
    games = setup(ns.images, ns.m_small, at_most=True)
    truths, ns.fns = [], []
    for game in games:
        m = game.m
        codes = np.arange(2 ** m)
        values = game(((codes[:, None] >> np.arange(m)) & 1).astype(np.float32))
        ns.fns.append(table_game(values))
        truths.append(exact_shapley(values))
    rows = compare(games, truths, ns, "small")
    summarise(rows, f"M = {ns.m_small} superpixels, truth = exact Shapley values (enumeration), "
                    f"{ns.images} images x {ns.seeds} seeds")
    return rows


def run_large(ns) -> list:
    games = setup(ns.images, ns.m_large, at_most=False)
    truths, ns.fns = [], []
    for game in games:
        ref = perturbx_values(game, game.m, 20 * 2048, "stratified", 123_457, **ns.kw)
        truths.append(ref.segment_weights)
        ns.fns.append(game)
    rows = compare(games, truths, ns, "large")
    ms = sorted({g.m for g in games})
    summarise(rows, f"M = {ms[0]}..{ms[-1]} superpixels, truth = KernelSHAP at 40,960 queries, "
                    f"{ns.images} images x {ns.seeds} seeds")
    stops = [r for game, ref in zip(games, truths, strict=True) for r in stopping_rows(game, ref, ns)]
    summarise_stopping(stops, ns.tolerances)
    return rows + stops


def stopping_rows(game, ref: np.ndarray, ns) -> list:
    """``KernelSHAP(n_samples=2048, tolerance=...)`` on one game: queries used and agreement with ``ref``."""
    rows = []
    for tol in ns.tolerances:
        e = perturbx_values(game, game.m, 2048, "stratified", 7, tolerance=tol, **ns.kw)
        record(rows, (f"tolerance={tol}", 0), e.segment_weights, ref, e.n_queries,
               {"converged": bool(e.extras["converged"]), "estimated": float(e.extras["estimated_error"])})
    return rows


def summarise_stopping(rows: list, tolerances) -> None:
    print("\n### Early stopping: KernelSHAP(n_samples=2048, tolerance=t), mean over images\n")
    print("| tolerance | queries (mean) | converged | estimated error | Pearson (probability) | rel. L2 (probability) "
          "| Pearson (logit) | rel. L2 (logit) |")
    print("|---|---|---|---|---|---|---|---|")
    for tol in tolerances:
        sel = [r for r in rows if r["key"][0] == f"tolerance={tol}"]
        cells = []
        for out in OUTPUTS:
            part = [r for r in sel if r["output"] == out]
            cells += [np.nanmean([r["pearson"] for r in part]), np.mean([r["rel_l2"] for r in part])]
        print(f"| {tol} | {np.mean([r['queries'] for r in sel]):.0f} | {np.mean([r['converged'] for r in sel]):.2f} "
              f"| {np.mean([r['estimated'] for r in sel]):.3f} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("small", "large"))
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--m-small", type=int, default=14)
    ap.add_argument("--m-large", type=int, default=50)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    ap.add_argument("--linear-only", action="store_true",
                    help="interactions=False, control_variate=False: the design alone")
    ap.add_argument("--no-shap", action="store_true")
    ap.add_argument("--tolerances", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    ap.add_argument("--out", default=None, help="write the raw rows as JSON here")
    ns = ap.parse_args()
    ns.kw = {"interactions": False, "control_variate": False} if ns.linear_only else {}
    ns.shap_l1 = [] if ns.no_shap else ["num_features(10)", False]
    t0 = time.perf_counter()
    rows = {"small": run_small, "large": run_large}[ns.what](ns)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    if ns.out:
        with open(ns.out, "w") as fh:
            json.dump(rows, fh)


if __name__ == "__main__":
    main()
