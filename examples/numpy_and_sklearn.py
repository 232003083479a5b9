"""Explain models that are not PyTorch: a plain numpy function and a scikit-learn classifier.

perturbx only needs a function from a batch of samples to scores. Here:

1. a numpy function (a linear template matcher on 8 x 8 digit images) through
   ``perturbx.adapters.Callable``; for a linear model the exact attribution of a pixel is
   ``w * x``, and occlusion with 1-pixel windows reproduces it;
2. a scikit-learn pipeline (scaling + logistic regression) on flattened digits through
   ``perturbx.adapters.SKLearn``, which reshapes each sample to the flat row the estimator takes.

Uses scikit-learn's bundled digits (no download), no torch. Run:
``python examples/numpy_and_sklearn.py [OUT_DIR]`` (a few seconds).
"""
# requires: matplotlib

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import perturbx
from perturbx.adapters import Callable, SKLearn


def main(out: Path) -> None:
    digits = load_digits()
    images = (digits.images / 16).astype(np.float32)        # (1797, 8, 8) in [0, 1]: layout "HW"
    train, test = slice(0, 1500), slice(1500, None)

    # 1. a numpy function: score of class k = <w_k, x> with w_k the class's mean image minus the overall mean
    templates = np.stack([images[train][digits.target[train] == k].mean(axis=0) for k in range(10)])
    weights = templates - templates.mean(axis=0)

    def template_scores(batch: np.ndarray) -> np.ndarray:   # (N, 8, 8) -> (N, 10)
        return np.einsum("nhw,khw->nk", batch, weights)

    model = Callable(template_scores, batch_size=256, input_layout="HW")
    x = images[test][0]
    label = int(template_scores(x[None]).argmax())
    e = perturbx.Occlusion(window=(1, 1), stride=(1, 1)).explain(model, x, target=label)
    exact = weights[label] * x                                # drop of the score when a pixel becomes 0
    print(f"numpy function: explains digit {label}; {e!r}")
    print(f"  occlusion vs the exact w * x: max difference {np.abs(e.attributions - exact).max():.2e}")
    assert np.allclose(e.attributions, exact, atol=1e-5)
    shap = perturbx.KernelSHAP(n_samples=2048, segmentation="grid", baseline=0.0, random_state=0).explain(
        model, x, target=label)
    print(f"  KernelSHAP on {shap.segment_weights.shape[1]} grid cells: efficiency gap "
          f"{abs(shap.segment_weights.sum() - (shap.scores[0] - shap.base_value[0])):.2e}")

    # 2. a scikit-learn pipeline over flat rows of 64 features
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(images[train].reshape(1500, -1), digits.target[train])
    accuracy = clf.score(images[test].reshape(-1, 64), digits.target[test])
    model = SKLearn(clf, sample_shape=(8, 8))                 # "HW" layout, predict_proba scores
    maps = {}
    for name, explainer in {"Occlusion": perturbx.Occlusion(window=(2, 2), stride=(1, 1)),
                            "RISE": perturbx.RISE(n_masks=1000, grid_size=4, random_state=0),
                            "LIME": perturbx.LIME(n_samples=500, segmentation="grid", baseline=0.0,
                                                  random_state=0)}.items():
        maps[name] = explainer.explain(model, x)              # the predicted class
        print(f"scikit-learn (test accuracy {accuracy:.3f}): {maps[name]!r}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), layout="constrained")
    e.plot(axes[0], title="numpy function: occlusion")
    for ax, (name, m) in zip(axes[1:], maps.items(), strict=True):
        m.plot(ax, title=f"scikit-learn: {name}")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "numpy_and_sklearn.png", dpi=80)
    print(f"figure: {out / 'numpy_and_sklearn.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output"))
