"""Run Quantus 0.6 on saved inputs, in the venv of tests/quantus/setup_quantus.sh (numpy < 2.4).

Usage: python runner.py IN.npz OUT.npz

IN holds the images ``x`` (N, 1, 16, 16), labels ``y``, maps ``a`` (N, 16, 16), masks ``s``,
the CNN's weights (``w:<name>``), a class-kernel ``K`` (classes, 1, 16, 16) for the
deterministic explainer ``a(x, c) = x[0] * K[c, 0]``, and the inputs of the failure cases.
OUT holds every Quantus result and the random draws Quantus made (recorded), so that the
project's tests compute perturbx's numbers on the same draws. Every metric runs with
``normalise=False`` (Quantus's default divides maps by the batch's maximum) and, unless
the test says otherwise, ``abs=False``.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import quantus
import torch
from nets import make_net
from quantus.helpers.utils import get_superpixel_segments

warnings.filterwarnings("ignore")
torch.set_num_threads(1)
COMMON = {"normalise": False, "disable_warnings": True, "display_progressbar": False}


def main(src: str, dst: str) -> None:
    d = dict(np.load(src))
    net = make_net({k[2:]: v for k, v in d.items() if k.startswith("w:")})
    x, y, a, s, kern = d["x"], d["y"], d["a"], d["s"], d["K"]
    out: dict[str, np.ndarray] = {}
    out.update(localisation(x, y, a, s))
    out.update(faithfulness(net, x, y, a))
    out.update(robustness(net, x, y, kern))
    out.update(failures(net, d))
    np.savez(dst, **out)


def localisation(x, y, a, s) -> dict:
    kw = {"model": None, "x_batch": x, "y_batch": y, "a_batch": a[:, None], "s_batch": s[:, None]}
    return {
        "pointing_game": np.array(quantus.PointingGame(**COMMON, abs=False)(**kw), dtype=float),
        "attribution_localisation": np.array(quantus.AttributionLocalisation(**COMMON, abs=False,
                                                                             positive_attributions=True)(**kw)),
        "relevance_rank_accuracy": np.array(quantus.RelevanceRankAccuracy(**COMMON, abs=False)(**kw)),
        "top_k_intersection": np.array(quantus.TopKIntersection(**COMMON, abs=False, k=20)(**kw)),
        "auc": np.array(quantus.AUC(**COMMON, abs=False)(**kw)),
        "sparseness": np.array(quantus.Sparseness(**COMMON, abs=True)(**kw)),
        "complexity": np.array(quantus.Complexity(**COMMON, abs=True)(**kw)),
    }


def _recording_choice(store: list):
    original = np.random.choice

    def choice(*args, **kwargs):
        out = original(*args, **kwargs)
        store.append(np.array(out))
        return out

    return original, choice


def faithfulness(net, x, y, a) -> dict:
    kw = {"model": net, "x_batch": x, "y_batch": y, "a_batch": a[:, None], "softmax": False}
    draws: list = []
    original, np.random.choice = _recording_choice(draws)
    try:
        corr = quantus.FaithfulnessCorrelation(**COMMON, nr_runs=20, subset_size=12, perturb_baseline=0.0,
                                               return_aggregate=False)(**kw)
    finally:
        np.random.choice = original
    n = len(x)
    subsets = np.stack(draws).reshape(20, n, 12).transpose(1, 0, 2)  # per run, one draw per image
    est = quantus.FaithfulnessEstimate(**COMMON, features_in_step=16, perturb_baseline=0.0)(**kw)
    mono = quantus.Monotonicity(**COMMON, abs=False, features_in_step=16, perturb_baseline=0.0)(**kw)
    road = quantus.ROAD(**COMMON, noise=0.0, percentages=[5, 20, 35, 50, 65, 80, 95])(**kw)
    # IROF divides by the probability: softmax, and a numeric baseline (its "mean" drifts, see test_quantus)
    irof = quantus.IROF(**COMMON, perturb_baseline=0.0, return_aggregate=False)(
        **{**kw, "softmax": True}, batch_size=1)
    segments = np.stack([get_superpixel_segments(np.moveaxis(xi, 0, -1).astype("double"), "slic") for xi in x])
    road_per_sample = quantus.ROAD(**COMMON, noise=0.0, percentages=[5, 20, 35, 50, 65, 80, 95])
    per = [list(road_per_sample(**{**kw, "x_batch": x[i:i + 1], "y_batch": y[i:i + 1],
                                   "a_batch": a[i:i + 1, None]}).values()) for i in range(n)]
    return {"faithfulness_correlation": np.array(corr), "fc_subsets": subsets,
            "faithfulness_estimate": np.array(est), "monotonicity": np.array(mono, dtype=float),
            "road_mean": np.array(list(road.values())), "road_per_sample": np.array(per),
            "irof": np.array(irof), "irof_segments": segments}


def robustness(net, x, y, kern) -> dict:
    seen: list = []

    def explain(model, inputs, targets, **kwargs):
        inputs = np.asarray(inputs)
        seen.append((inputs.copy(), np.asarray(targets).copy()))
        maps = [xi[0] * kern[int(t), 0] for xi, t in zip(inputs, np.atleast_1d(targets), strict=True)]
        return np.stack(maps)[:, None]

    a0 = explain(None, x, y)
    out = {}
    metrics = {
        "avg_sensitivity": quantus.AvgSensitivity(**COMMON, nr_samples=4, lower_bound=0.05),
        "local_lipschitz": quantus.LocalLipschitzEstimate(**COMMON, nr_samples=4, perturb_std=0.1),
        "ris": quantus.RelativeInputStability(**COMMON, nr_samples=4, return_nan_when_prediction_changes=False),
        "ros": quantus.RelativeOutputStability(**COMMON, nr_samples=4, return_nan_when_prediction_changes=False),
        "rrs": quantus.RelativeRepresentationStability(**COMMON, nr_samples=4, layer_names=["4"],
                                                       return_nan_when_prediction_changes=False),
    }
    for name, metric in metrics.items():
        seen.clear()
        out[name] = np.array(metric(model=net, x_batch=x, y_batch=y, a_batch=a0, explain_func=explain,
                                    softmax=False))
        out[f"{name}_inputs"] = np.stack([inp for inp, _ in seen])
    seen.clear()
    out["random_logit"] = np.array(quantus.RandomLogit(**COMMON, num_classes=4, seed=42)(
        model=net, x_batch=x, y_batch=y, a_batch=a0, explain_func=explain, softmax=False))
    out["random_logit_other"] = np.concatenate([t for _, t in seen])
    return out


def failures(net, d) -> dict:
    out = {}
    # an empty mask: Quantus scores a hit
    a, s = d["a"][:1, None], np.zeros_like(d["s"][:1, None])
    out["pg_empty_mask"] = np.array(quantus.PointingGame(**COMMON)(model=None, x_batch=d["x"][:1], y_batch=d["y"][:1],
                                                                   a_batch=a, s_batch=s), dtype=float)
    # the weighted localisation of the same image in batches of different sizes
    wl = quantus.AttributionLocalisation(**COMMON, weighted=True, abs=False)
    out["weighted_by_batch"] = np.array([wl(model=None, x_batch=d["x"][:k], y_batch=d["y"][:k],
                                            a_batch=np.abs(d["a"][:k, None]), s_batch=d["s"][:k, None])[0]
                                         for k in (3, 4, 6)])
    # infidelity under two global seeds: one deterministic sweep, so the same number
    inf = []
    for seed in (0, 1):
        np.random.seed(seed)
        inf.append(quantus.Infidelity(**COMMON, n_perturb_samples=3, perturb_patch_sizes=[4])(
            model=net, x_batch=d["x"][:2], y_batch=d["y"][:2], a_batch=d["a"][:2, None], softmax=False))
    out["infidelity_seeds"] = np.array(inf)
    # pixel flipping on a 3-channel image whose map is tied across channels: record the model's inputs
    net3 = make_net({k[3:]: v for k, v in d.items() if k.startswith("w3:")}, channels=3)
    inputs: list = []
    net3.register_forward_hook(lambda _m, inp, _o: inputs.append(inp[0].detach().numpy().copy()))
    quantus.PixelFlipping(**COMMON, features_in_step=16, perturb_baseline=0.0)(
        model=net3, x_batch=d["x3"], y_batch=d["y"][:1], a_batch=d["a3"][:, None], softmax=False)
    out["pf_inputs"] = np.concatenate(inputs)
    # completeness of an exact map of a linear model: equal up to float rounding
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    lin.load_state_dict({"1.weight": torch.as_tensor(d["lin_w"]), "1.bias": torch.as_tensor(d["lin_b"])})
    out["completeness"] = np.array(quantus.Completeness(**COMMON, abs=False, perturb_baseline=0.0)(
        model=lin.eval(), x_batch=d["x"][:3], y_batch=np.zeros(3, int), a_batch=d["lin_maps"][:, None],
        softmax=False), dtype=float)
    return out


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
