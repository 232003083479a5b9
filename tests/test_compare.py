"""compare(): rows, aggregation, outputs, parallel runs, errors; the demo CNN's pointing game."""

from __future__ import annotations

import csv
import itertools
import re

import numpy as np
import pytest

from perturbx import RISE, Occlusion
from perturbx.adapters import Callable
from perturbx.compare import NEGLIGIBLE, Comparison, MapScale, compare, mean_interval
from perturbx.datasets import make_shapes
from perturbx.metrics import deletion, pointing_game
from perturbx.metrics.specs import Deletion, Insertion, PointingGame

from .conftest import linear_model

torch = pytest.importorskip("torch")
from perturbx.adapters import Torch  # noqa: E402


@pytest.fixture(scope="module")
def demo():
    models = pytest.importorskip("perturbx.models")
    return models.load_demo_model(), models.DEMO_TEST_SEED


@pytest.fixture(scope="module")
def ten(demo) -> tuple[Comparison, object]:
    from perturbx.gradients import Saliency

    net, seed = demo
    data = make_shapes(10, random_state=seed)
    explainers = {"Occlusion": Occlusion(window=16, stride=8), "RISE": RISE(100, random_state=0),
                  "Saliency": Saliency()}
    metrics = [Deletion(step=256), Insertion(step=256), "pointing_game", "energy_pointing"]
    comp = compare(Torch(net, batch_size=256, output="probs"), data.images, explainers, metrics=metrics,
                   ground_truth=data.masks, targets=data.labels, class_names=data.class_names)
    return comp, data


def test_compare_ten_images_three_methods_rows(ten):
    comp, data = ten
    assert comp.methods == ["Occlusion", "RISE", "Saliency"]
    assert comp.columns == ["deletion_auc", "insertion_auc", "pointing_game", "energy_pointing", "queries", "seconds"]
    assert [(r["image"], r["method"]) for r in comp.rows] == [(i, m) for i in range(10) for m in comp.methods]
    assert [r["target"] for r in comp.rows[::3]] == data.labels.tolist()
    queries = {m: {r["queries"] for r in comp.rows if r["method"] == m} for m in comp.methods}
    assert queries == {"Occlusion": {1 + 7 * 7}, "RISE": {101}, "Saliency": {2}}   # Saliency: f(x) and one gradient row
    summary = comp.summary()
    assert [s["method"] for s in summary] == comp.methods and all(s["n"] == 10 for s in summary)
    for s in summary:
        for col in comp.columns:
            values = np.array([r[col] for r in comp.rows if r["method"] == s["method"]])
            assert s[col] == pytest.approx(values.mean())
            assert (s[col], s[f"{col}_lo"], s[f"{col}_hi"]) == pytest.approx(mean_interval(values))
            assert values.min() <= s[f"{col}_lo"] <= s[col] <= s[f"{col}_hi"] <= values.max()
        assert 0 <= s["pointing_game_lo"] <= s["pointing_game_hi"] <= 1  # a share stays a share
    assert comp.maps["RISE"].shape == (10, 64, 64) and comp.ground_truth.shape == (10, 64, 64)


def test_compare_rows_are_the_metrics_of_each_explanation(ten, demo):
    comp, data = ten
    row = comp.rows[3 * 4]  # image 4, Occlusion
    model = Torch(demo[0], output="probs")
    e = Occlusion(window=16, stride=8).explain(model, data.images[4], int(data.labels[4]))
    assert row["deletion_auc"] == pytest.approx(deletion(model, data.images[4], e, step=256).auc)
    assert row["pointing_game"] == float(pointing_game(e, data.masks[4]))
    np.testing.assert_allclose(comp.maps["Occlusion"][4], e.attributions, rtol=1e-5, atol=1e-7)


def test_markdown_and_csv(ten, tmp_path):
    comp, _ = ten
    md = comp.to_markdown().splitlines()
    assert len(md) == 2 + 3 and md[0].startswith("| method | n | deletion_auc ↓ | insertion_auc ↑")
    rise = next(s for s in comp.summary() if s["method"] == "RISE")
    assert md[3].startswith("| RISE | 10 |")
    interval = f"[{rise['deletion_auc_lo']:.3f}, {rise['deletion_auc_hi']:.3f}]"
    assert f"{rise['deletion_auc']:.3f}" in md[3] and interval in md[3]
    assert len(comp.to_markdown(per_image=True).splitlines()) == 5 + 1 + 2 + 30
    with comp.to_csv(tmp_path / "rows.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30 and float(rows[5]["seconds"]) == pytest.approx(comp.rows[5]["seconds"])
    with comp.to_csv(tmp_path / "summary.csv", summary=True).open() as fh:
        summary = list(csv.DictReader(fh))
    assert [s["method"] for s in summary] == comp.methods
    assert {"pointing_game_lo", "pointing_game_hi"} <= set(summary[0])


def test_html_report_is_self_contained(ten, tmp_path):
    comp, _ = ten
    text = comp.to_html(tmp_path / "r.html").read_text()
    assert text.count('src="data:image/png;base64,') == 8 * (1 + 3) + 1  # 8 images: input and maps; curves
    assert "http://" not in text and "https://" not in text and "<script" not in text
    for needle in ("window", "n_masks", "numpy", np.__version__, torch.__version__, "pointing_game", "Saliency"):
        assert needle in text
    assert text.count("<tr>") >= 1 + 3 + 1 + 30  # summary, per-image rows


def test_plot_grid_has_images_times_methods_panels(ten):
    comp, _ = ten
    fig = comp.plot(n_images=4)
    assert len(fig.axes) == 4 * (1 + 3)
    assert len(comp.plot_curves().axes) == 2


def test_pointing_game_of_occlusion_and_rise_on_fifty_images(demo):
    net, seed = demo
    data = make_shapes(50, random_state=seed)
    comp = compare(Torch(net, batch_size=256), data.images,
                   {"Occlusion": Occlusion(window=16, stride=8), "RISE": RISE(200, random_state=0)},
                   metrics=[PointingGame(), PointingGame(tolerance=0)], ground_truth=data.masks, targets=data.labels)
    scores = {s["method"]: (s["pointing_game"], s["pointing_game_0px"]) for s in comp.summary()}
    assert scores["Occlusion"][0] >= 0.9 and scores["RISE"][0] >= 0.9, scores
    # at 64 px, 15 px of tolerance is generous: always pointing at the centre scores 0.90 here;
    # on the object itself the centre scores 0.24, and the maps must do far better
    centre = np.zeros((64, 64))
    centre[32, 32] = 1.0
    assert np.mean([pointing_game(centre, m, tolerance=0) for m in data.masks]) < 0.3
    assert scores["Occlusion"][1] >= 0.5 and scores["RISE"][1] >= 0.5, scores


def _small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3, padding=1, stride=2), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()


def test_parallel_run_gives_the_same_rows(rng):
    images = rng.random((5, 3, 16, 16)).astype(np.float32)
    kw = {"metrics": ["deletion", "infidelity"]}
    names = ["occlusion", "gradcam", "ig"]
    one = compare(Torch(_small_net()), images, names, n_jobs=1, **kw)
    two = compare(Torch(_small_net()), images, names, n_jobs=2, **kw)
    assert [r["image"] for r in two.rows] == [r["image"] for r in one.rows]
    for a, b in zip(one.rows, two.rows, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in b.items() if k != "seconds"})
    for m in one.methods:
        np.testing.assert_allclose(one.maps[m], two.maps[m], rtol=1e-5, atol=1e-6)


def test_all_metrics_run_on_a_torch_model(rng):
    data = make_shapes(2, size=32, random_state=5)
    comp = compare(Torch(_small_net(), output="probs"), data.images, {"RISE": RISE(50, random_state=0)},
                   metrics="all", ground_truth=data.masks)
    assert comp.columns[:7] == ["deletion_auc", "insertion_auc", "pointing_game", "energy_pointing", "infidelity",
                                "max_sensitivity", "randomization_spearman"]
    assert all(np.isfinite(r[c]) for r in comp.rows for c in comp.columns if c != "energy_pointing")


def _exact_percentile_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the exact bootstrap distribution of the mean (all n**n resamples)."""
    means = np.sort([np.mean(r) for r in itertools.product(values, repeat=len(values))])
    cdf = np.arange(1, len(means) + 1) / len(means)
    tail = (1 - confidence) / 2
    return float(means[np.searchsorted(cdf, tail)]), float(means[np.searchsorted(cdf, 1 - tail)])


@pytest.mark.parametrize("values", [[0.0, 0.0, 1.0], [0.0, 1.0, 2.0, 3.0], [0.2, 0.9, 0.9, 1.0]])
def test_bootstrap_interval_equals_the_exact_bootstrap_distribution(values):
    # at these points the exact distribution is far from a step, so 2000 resamples land on the same values
    mean, lo, hi = mean_interval(np.array([*values, np.nan]))
    assert mean == pytest.approx(np.mean(values))
    assert (lo, hi) == pytest.approx(_exact_percentile_interval(values))


def test_bootstrap_interval_edge_cases():
    assert mean_interval(np.array([0.4, 0.4, 0.4])) == (0.4, 0.4, 0.4)
    mean, lo, hi = mean_interval(np.array([4.0]))
    assert mean == 4.0 and np.isnan(lo) and np.isnan(hi)
    assert all(np.isnan(mean_interval(np.array([np.nan, np.inf]))))
    a, b = mean_interval(np.arange(10.0), random_state=1), mean_interval(np.arange(10.0), random_state=1)
    assert a == b and a != mean_interval(np.arange(10.0), random_state=2)  # seeded


def _hand_made(means: dict[str, float], column: str = "deletion_auc", n: int = 2) -> Comparison:
    rows = [{"image": i, "method": m, "target": 0, column: v} for i in range(n) for m, v in means.items()]
    maps = {m: np.zeros((n, 4, 4), np.float32) for m in means}
    return Comparison(rows, list(means), [column], maps, np.zeros((n, 4, 4), np.float32))


def test_best_highlights_every_tie_at_the_printed_precision():
    comp = _hand_made({"a": 0.1234, "b": 0.1231, "c": 0.1236, "d": 0.5})  # a, b print as 0.123; c as 0.124
    assert comp.best_methods("deletion_auc") == ["a", "b"]  # lower is better
    assert comp.best_methods("deletion_auc", digits=2) == ["a", "b", "c"]
    md = comp.to_markdown()
    assert "| a | 2 | **0.123** |" in md and "| b | 2 | **0.123** |" in md and "| c | 2 | 0.124 |" in md
    assert _hand_made({"a": 1.0, "b": 1.0, "c": 0.8333}, "pointing_game").best_methods("pointing_game") == ["a", "b"]
    spearman = _hand_made({"a": -0.01, "b": 0.01, "c": 0.3}, "randomization_spearman")
    assert spearman.best_methods("randomization_spearman") == ["a", "b"]  # closest to 0
    assert _hand_made({"a": 1.0}).best_methods("deletion_auc") == []  # nothing to compare with


def test_html_highlights_every_tie(tmp_path):
    pytest.importorskip("jinja2")
    text = _hand_made({"a": 0.1234, "b": 0.1231, "c": 0.1236}).to_html(tmp_path / "r.html").read_text()
    best = re.findall(r"<tr><td>(\w)</td><td>2</td><td class=\"best\">", text)
    assert best == ["a", "b"]


def test_map_scale_flags_a_negligible_range_exactly():
    rows = [{"image": i, "method": m, "target": 0, "queries": 1.0} for i in range(3) for m in ("occ", "grad")]
    maps = {"occ": np.array([[[0.0, 0.0098]], [[-0.0102, 0.0]], [[0.0, 0.0]]], np.float32),
            "grad": np.array([[[0.0, 1e-6]], [[0.0, 0.5]], [[0.0, 0.0]]], np.float32)}
    comp = Comparison(rows, ["occ", "grad"], ["queries"], maps, np.zeros((3, 1, 2), np.float32),
                      scores=np.array([1.0, -1.0, np.nan]), map_units={"occ": "score", "grad": "other"})
    assert comp.map_scale("occ", 0) == MapScale(pytest.approx(0.0098), 1.0, "score", NEGLIGIBLE)
    assert NEGLIGIBLE == 0.01
    assert [comp.map_scale("occ", i).negligible for i in range(3)] == [True, False, None]  # 0.98 %, 1.02 %, f(x)?
    assert comp.map_scale("occ", 1).relative == pytest.approx(0.0102)
    assert [comp.map_scale("grad", i).negligible for i in range(3)] == [None, None, None]  # other units: not judged
    assert comp.map_scale("occ", 0, threshold=0.005).negligible is False


def test_map_units_and_scores_of_a_comparison(ten, demo):
    comp, data = ten
    assert comp.map_units == {"Occlusion": "score", "RISE": "score", "Saliency": "other"}
    probs = Torch(demo[0], output="probs").predict(data.images)
    np.testing.assert_allclose(comp.scores, probs[np.arange(10), data.labels], rtol=1e-5, atol=1e-6)
    scale = comp.map_scale("Occlusion", 2)
    assert scale.max_abs == pytest.approx(np.abs(comp.maps["Occlusion"][2]).max())
    assert scale.score == pytest.approx(comp.scores[2])


def test_import_perturbx_imports_no_report_library():
    import subprocess
    import sys

    code = ("import sys, perturbx, perturbx.compare, perturbx.images, perturbx.cli, perturbx.demo; "
            "print(sorted(m for m in ('jinja2', 'matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_compare_errors(rng):
    model = Callable(linear_model(rng.normal(size=(2, 1, 8, 8))))
    x = rng.random((3, 1, 8, 8))
    occ = Occlusion(window=4, stride=4)
    with pytest.raises(ValueError, match="pass ground_truth="):
        compare(model, x, [occ], metrics=["pointing_game"])
    with pytest.raises(ValueError, match="masks of shape \\(N, H, W\\) = \\(3, 8, 8\\)"):
        compare(model, x, [occ], ground_truth=np.ones((3, 8, 7), bool))
    with pytest.raises(ValueError, match="both named 'Occlusion'"):
        compare(model, x, [occ, occ])
    with pytest.raises(ValueError, match="Unknown method 'nope'"):
        compare(model, x, ["nope"])
    with pytest.raises(ValueError, match="Unknown metric 'no_such_metric'"):
        compare(model, x, [occ], metrics=["no_such_metric"])
    with pytest.raises(ValueError, match="'n_jobs' argument of compare"):
        compare(model, x, [occ], n_jobs=0)
    with pytest.raises(ValueError, match="3 class indices"):
        compare(model, x, [occ], targets=[0, 1])
    with pytest.raises(ValueError, match="is empty"):
        compare(model, x[:0], [occ])
    with pytest.raises(TypeError, match="explain\\(model, x, target\\)"):
        compare(model, x, {"bad": object()})


def test_compare_explains_a_detection_per_image_and_reports_it(tmp_path):
    """Targets other than classes: one Detection box per image, through every metric and the report."""
    from perturbx.targets import Detection
    from tests.servers.toy_models import TOY_BOXES, toy_detector

    xs = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    boxes = [Detection(TOY_BOXES[i % 2]) for i in range(3)]
    comp = compare(Callable(toy_detector, batch_size=64), xs, {"occ": Occlusion(window=8, stride=4),
                                                             "rise": RISE(n_masks=200, grid_size=4, random_state=0)},
                   targets=boxes)
    assert [r["target"] for r in comp.rows[::2]] == ["label 0 at (4, 4, 12, 12)", "label 1 at (18, 14, 28, 26)",
                                                     "label 0 at (4, 4, 12, 12)"]
    assert all(np.isfinite(r["deletion_auc"]) and np.isfinite(r["insertion_auc"]) for r in comp.rows)
    page = comp.to_html(tmp_path / "report.html").read_text()
    assert "label 1 at (18, 14, 28, 26)" in page
    with pytest.raises(ValueError, match="compare explains one scalar per image, but target Detection"):
        compare(Callable(toy_detector), xs[:1], [Occlusion(window=8, stride=4)], targets=Detection(min_score=0.0))


def test_extra_figures_join_the_report(tmp_path):
    """Feature visualisations (or any PNG) become titled sections of the page and files of the folder."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perturbx.report import write_outputs

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    xs = np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)
    model = Callable(lambda b: b.reshape(len(b), 3, -1).mean(-1))
    comp = compare(model, xs, [Occlusion(window=8, stride=8)], metrics=[])
    files = write_outputs(comp, tmp_path, extra_figures=[("Class models (perturbx.visualize)", buf.getvalue())])
    assert tmp_path / "figure-1.png" in files and (tmp_path / "figure-1.png").read_bytes() == buf.getvalue()
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Class models (perturbx.visualize)</h2>" in page and page.count("data:image/png;base64") >= 3
    with pytest.raises(ValueError, match="'extra_figures' argument must be \\(title, PNG bytes\\) pairs"):
        comp.to_html(tmp_path / "x.html", extra_figures=[("no png", b"GIF89a")])
