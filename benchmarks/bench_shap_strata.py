"""How much any split of KernelSHAP's samples over coalition sizes could save, per image (issue 20).

KernelSHAP's error comes from the part of the game that its linear fit leaves, the residual
``r(z) = v(z) - v(0) - z . phi``. With the samples stratified by coalition size ``s`` (as
perturbx's default and shap both do), the error variance of a value is about

    sum_s W_s^2 a_s sigma_s^2 / n_s,    a_s = s (M - s) / M^2,

with ``W_s`` the Shapley kernel's mass of size ``s`` (proportional to ``1 / (s (M - s))``),
``sigma_s`` the residual's spread among coalitions of size ``s`` and ``n_s`` the samples given
to it. For a total of ``N`` samples the best split (Neyman's, ``n_s`` proportional to
``W_s sqrt(a_s) sigma_s``) has variance ``(sum_s W_s sqrt(a_s) sigma_s)^2 / N``; the kernel's
own split (``n_s`` proportional to ``W_s``, perturbx's ``"stratified"`` and shap's) has
``sum_s W_s . sum_s W_s a_s sigma_s^2 / N``, and equal shares (``"leverage-stratified"``)
``S sum_s W_s^2 a_s sigma_s^2 / N`` over ``S`` sizes. Their ratios bound what any allocation over
sizes can save at the same budget (the sizes 1 and M - 1, enumerated by both, are left out).

For each image: ``phi`` from ``KernelSHAP(n_samples=--phi-samples, control_variate=False)``,
then ``--per-size`` random coalitions of every size, scored on the same game as
``bench_queries.py``'s shap runner (the true class's probability, hidden superpixels at their
mean colour). Printed: the residual's spread by size (relative to its largest) and the two
variance ratios against the kernel's split (below 1: that split is better by the factor's
inverse). The residual is the plain linear fit's; perturbx's logistic control variate, where
it is chosen, changes it.

With ``--surrogates``, also what is left of that residual by surrogates a control variate could
use, each fitted on 1,000 kernel-drawn coalitions (in complementary pairs) and measured on 1,000
others, as a share of the linear fit's residual variance: a logistic link on the target; every
class's log-probability additive, through the softmax (the model's whole output); and every pair
of superpixels added to the linear fit by ridge regression (the best of four penalties). The
linear fit's own residual is given as a share of the score's variance.

    python benchmarks/bench_shap_strata.py --model resnet --images 5
    python benchmarks/bench_shap_strata.py --model demo --images 5
    python benchmarks/bench_shap_strata.py --model resnet --images 5 --surrogates --no-allocation
"""

from __future__ import annotations

import argparse

import numpy as np


def residual_spread(case, phi: np.ndarray, per_size: int, rng: np.random.Generator) -> np.ndarray:
    """Standard deviation of ``v(z) - v(0) - z . phi`` among ``per_size`` random coalitions of each size 1 .. M-1."""
    from bench_queries import superpixel_game

    m = int(case.segments.max()) + 1
    every = superpixel_game(case)

    def game(z: np.ndarray) -> np.ndarray:
        return every(z)[:, case.target].astype(np.float64)

    empty = game(np.zeros((1, m), np.uint8))[0]
    spread = []
    for s in range(1, m):
        z = np.zeros((per_size, m), np.uint8)
        for row in z:
            row[rng.choice(m, s, replace=False)] = 1
        spread.append(float(np.std(game(z) - empty - z @ phi)))
    return np.array(spread)


def surrogate_shares(case, n: int = 1000, seed: int = 0) -> dict[str, float]:
    """Out-of-sample residual variance of each surrogate over that of the linear fit (see the module docstring)."""
    from bench_queries import superpixel_game

    from perturbx.amortized.game import sample_coalitions

    m = int(case.segments.max()) + 1
    z = sample_coalitions(np.random.default_rng(seed), n, m)
    probs = superpixel_game(case)(z).astype(np.float64)
    p, z = probs[:, case.target], z.astype(np.float64)
    x = np.hstack([np.ones((len(z), 1)), z])
    fit, test = slice(0, n), slice(n, 2 * n)
    ys = np.column_stack([p, np.log(p) - np.log1p(-p), np.log(probs)])
    coef = np.linalg.lstsq(x[fit], ys[fit], rcond=None)[0]
    linear = p - x @ coef[:, 0]
    logits = x[test] @ coef[:, 2:]
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    left = {"logistic": p[test] - 1 / (1 + np.exp(-x[test] @ coef[:, 1])),
            "softmax of additive log-probabilities": p[test] - softmax[:, case.target] / softmax.sum(1)}
    pairs = np.triu_indices(m, 1)
    z2 = (z[:, pairs[0]] * z[:, pairs[1]])
    z2 = z2 - z2[fit].mean(0)
    target = linear[fit] - linear[fit].mean()
    best = np.inf
    for penalty in (0.1, 1.0, 10.0, 100.0):
        b = np.linalg.solve(z2[fit].T @ z2[fit] + penalty * np.eye(z2.shape[1]), z2[fit].T @ target)
        best = min(best, float(np.var(linear[test] - linear[fit].mean() - z2[test] @ b)))
    base = float(np.var(linear[test]))
    out = {"linear (of the score's variance)": base / float(np.var(p[test]))}
    out.update({k: float(np.var(v)) / base for k, v in left.items()})
    out["linear + every pair (ridge)"] = best / base
    return out


def allocation_ratios(spread: np.ndarray) -> tuple[float, float]:
    """(Neyman, equal shares) variance over the kernel split's, for the residual spread of sizes 1 .. M-1."""
    m = len(spread) + 1
    s = np.arange(2, m - 1)  # 1 and M - 1 are enumerated
    sigma = spread[1:-1]
    w, a = 1.0 / (s * (m - s)), s * (m - s) / m ** 2
    kernel = w.sum() * (w * a * sigma ** 2).sum()
    neyman = (w * np.sqrt(a) * sigma).sum() ** 2
    equal = len(s) * (w ** 2 * a * sigma ** 2).sum()
    return neyman / kernel, equal / kernel


def main() -> None:
    import torch
    from bench_queries import build_cases

    import perturbx

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("demo", "textured", "resnet"), default="resnet")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--per-size", type=int, default=64, help="random coalitions scored per size")
    ap.add_argument("--phi-samples", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--surrogates", action="store_true", help="also the residual left by three surrogates")
    ap.add_argument("--no-allocation", action="store_true", help="skip the table of splits over sizes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cases = build_cases(args.model, args.images, 128, size=args.size)
    print(f"{args.model}, {args.size} px: residual spread by size and the variance of two splits over the kernel's")
    print("| image | M | Neyman / kernel | equal / kernel | spread by size, 1 .. M-1 (of its largest) |")
    print("|---|---|---|---|---|")
    for i, case in enumerate([] if args.no_allocation else cases):
        phi = perturbx.KernelSHAP(args.phi_samples, case.segments, control_variate=False, random_state=5).explain(
            case.adapter, case.x, case.target).segment_weights[0]
        spread = residual_spread(case, phi, args.per_size, np.random.default_rng(i))
        neyman, equal = allocation_ratios(spread)
        shape = " ".join(f"{v:.2f}" for v in spread / spread.max())
        print(f"| {i} | {len(spread) + 1} | {neyman:.3f} | {equal:.3f} | {shape} |", flush=True)
    if args.surrogates:
        print("\nresidual variance left out of sample, over the linear fit's")
        for i, case in enumerate(cases):
            shares = surrogate_shares(case)
            print(f"image {i}: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()), flush=True)


if __name__ == "__main__":
    main()
