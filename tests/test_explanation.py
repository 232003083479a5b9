"""Explanation: shapes, extras and plotting."""

from __future__ import annotations

import numpy as np
import pytest

import perturbx

from .conftest import linear_model


def test_fields_and_plot(rng, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    f = linear_model(rng.normal(size=(3, 3, 16, 16)))
    e = perturbx.RISE(n_masks=64, random_state=0).explain(f, rng.random((3, 16, 16)), target=[0, 2])
    assert e.attributions.shape == (2, 16, 16) and e.maps().shape == (2, 16, 16)
    assert e.targets.tolist() == [0, 2] and e.n_queries == 65 and e.seconds > 0
    assert e.method == "RISE" and e.params["n_masks"] == 64 and e.scores.shape == (2,)
    ax = e.plot(target_index=1)
    ax.figure.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 0
    with pytest.raises(AttributeError, match="has no attribute 'segments'"):
        _ = e.segments


def test_get_params_round_trip():
    rise = perturbx.RISE(n_masks=10, grid_size=(4, 5), p_keep=0.3, baseline="blur", random_state=3)
    again = perturbx.RISE(**rise.get_params())
    assert again.get_params() == rise.get_params()
    assert "n_masks=10" in repr(rise)


def _three_targets(rng):
    f = linear_model(rng.normal(size=(3, 3, 16, 16)))
    return perturbx.Occlusion((4, 4), (4, 4)).explain(f, rng.random((3, 16, 16)), target=[0, 1, 2])


def test_plot_draws_every_target_with_its_own_colour_bar(rng):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    e = _three_targets(rng)
    axes = e.plot()
    assert axes.shape == (3,) and len({id(a.figure) for a in axes}) == 1
    fig = axes[0].figure
    for ax, name, heat in zip(axes, e.target_names, e.maps(), strict=True):
        assert name in ax.get_title()
        image = ax.get_images()[-1]
        lim = np.abs(heat).max()
        assert image.get_clim() == pytest.approx((-lim, lim))      # each map on its own scale, symmetric about 0
        assert image.colorbar is not None and image.colorbar.ax in fig.axes
    assert len(fig.axes) == 6                                       # three maps, three colour bars
    single = e.plot(target_index=2)
    lim = np.abs(e.maps()[2]).max()
    assert single.get_images()[-1].get_clim() == pytest.approx((-lim, lim))
    assert "class 2" in single.get_title()


def test_plot_wraps_many_targets_into_rows_and_takes_given_axes(rng):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = linear_model(rng.normal(size=(6, 3, 16, 16)))
    e = perturbx.Occlusion((4, 4), (4, 4)).explain(f, rng.random((3, 16, 16)), target=list(range(6)))
    axes = e.plot(overlay=False, colorbar=False)
    grid = axes[0].figure.axes
    assert len(axes) == 6 and len(grid) == 8                       # a 2 x 4 grid, two panels left empty
    assert sum(a.get_subplotspec().rowspan.start == 1 for a in axes) == 2
    _, mine = plt.subplots(1, 6)
    assert list(e.plot(mine)) == list(mine)
    with pytest.raises(ValueError, match=r"'ax' parameter of Explanation.plot must hold one Axes per map drawn "
                                         r"\(6\). Got 1; pass target_index="):
        e.plot(mine[0])
    with pytest.raises(ValueError, match=r"'target_index' parameter of Explanation.plot must be an int in \[0, 6\)"
                                         r".*Got 6"):
        e.plot(target_index=6)
    plt.close("all")


def test_repr_is_one_line_naming_method_shape_and_targets(rng):
    e = _three_targets(rng)
    text = repr(e)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("Explanation(Occlusion, attributions (3, 16, 16), targets [class 0, class 1, class 2], ")
    assert f"{e.n_queries} queries" in text and f"{e.scores[0]:.4g}" in text
    f = linear_model(rng.normal(size=(10, 3, 16, 16)))
    many = perturbx.Occlusion((8, 8), (8, 8)).explain(f, rng.random((3, 16, 16)), target=list(range(10)))
    assert "class 3, ... (10 in all)]" in repr(many) and "\n" not in repr(many) and len(repr(many)) < 200
