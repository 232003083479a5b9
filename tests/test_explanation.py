"""Explanation: shapes, extras and plotting."""

from __future__ import annotations

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
