"""The HTML report: one self-contained page rendered from the jinja2 templates in ``templates/``.

:func:`write_html` gathers what a :class:`~perturbx.compare.Comparison` computed into plain
values (strings, numbers, PNG data URIs) and renders ``report.html.j2``; the template
decides the layout, ``report.css`` the look. Everything is escaped by jinja2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from perturbx.compare import (
    CONFIDENCE,
    N_RESAMPLES,
    NEGLIGIBLE,
    Comparison,
    column_label,
    format_cell,
    format_scale,
    format_value,
)

from .figures import figure_png, target_name
from .tiles import colourbar_css, image_tile, map_tile

__all__ = ["DEFINITIONS", "write_html"]

DEFINITIONS = {
    "deletion_auc": "area under the deletion curve: pixels removed in decreasing order of attribution "
                    "(Petsiuk et al. 2018); lower is better",
    "insertion_auc": "area under the insertion curve: pixels inserted into the substrate in the same order; "
                     "higher is better",
    "pointing_game": "share of images whose map maximum lies within 15 px of the object (Zhang et al. 2016)",
    "energy_pointing": "share of the positive attribution that lies on the object",
    "infidelity": "mean squared error between the map's prediction of score drops and the drops under random "
                  "removals, map optimally scaled (Yeh et al. 2019); lower is better",
    "max_sensitivity": "largest relative change of the map under small uniform input noise (Yeh et al. 2019)",
    "randomization_spearman": "Spearman correlation with the map of the fully randomised model "
                              "(Adebayo et al. 2018); near 0 means the map depends on the model",
    "queries": "model rows evaluated per explanation",
    "seconds": "wall-clock seconds per explanation (Explanation.seconds; the metrics not included)",
}


def _environment():
    try:
        import jinja2
    except ImportError as exc:
        raise ImportError("The HTML report needs jinja2: pip install 'perturbx[viz]'") from exc
    return jinja2.Environment(loader=jinja2.PackageLoader("perturbx.report", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def write_html(comp: Comparison, path: str | Path, *, title: str = "perturbx comparison",
               n_images: int | None = 8, extra_figures: Sequence[tuple[str, bytes]] = ()) -> Path:
    """Write the report of ``comp`` to ``path``: one HTML file, figures embedded as PNG, no scripts.

    Parameters
    ----------
    comp : Comparison
    path : str or Path
    title : str
    n_images : int or None, default 8
        Images whose maps are shown (the first ones; None: all). The tables cover all.
    extra_figures : sequence of (title, PNG bytes)
        More figures, one titled section each after the curves: for example the class models
        of :func:`perturbx.visualize.class_models` (``("Class models", vis.to_png())``).

    Returns
    -------
    Path
    """
    path = Path(path)
    env = _environment()
    extras = [{"title": str(t), "uri": _uri(png)} for t, png in _checked_figures(extra_figures)]
    page = env.get_template("report.html.j2").render(**context(comp, title=title, n_images=n_images),
                                                     extra_figures=extras, css=env.get_template("report.css").render())
    path.write_text(page, encoding="utf-8")
    return path


def context(comp: Comparison, *, title: str, n_images: int | None) -> dict[str, Any]:
    """Every value the template shows, as strings, numbers and data URIs."""
    shown = comp.n_images if n_images is None else max(1, min(int(n_images), comp.n_images))
    curves = figure_png(comp, "curves")
    run = comp.params.get("compare", {})
    return {
        "title": title, "model": str(comp.params.get("model", "")), "date": comp.versions.get("date", ""),
        "n_images": comp.n_images, "n_methods": len(comp.methods), "shown": shown,
        "wall_seconds": format_value(run.get("wall_seconds"), 1),
        "confidence": f"{100 * CONFIDENCE:.0f}", "n_resamples": N_RESAMPLES,
        "negligible_pct": f"{100 * NEGLIGIBLE:g}",
        "summary": _summary(comp), "images": [_image(comp, i) for i in range(shown)],
        "colourbar": colourbar_css(), "has_truth": comp.ground_truth is not None,
        "curves": None if curves is None else _uri(curves),
        "definitions": _definitions(comp), "groups": _group_spans(comp),
        "rows": _rows(comp), "notes": dict(comp.params.get("notes", {})),
        "explainers": _json_rows(comp.params.get("explainers", {})),
        "metrics": _json_rows(comp.params.get("metrics", {})),
        "run": json.dumps({k: v for k, v in comp.params.items() if k not in ("explainers", "metrics", "notes")},
                          indent=1, default=str),
        "versions": comp.versions,
    }


def _checked_figures(figures: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out = list(figures)
    for item in out:
        ok = isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], (bytes, bytearray))
        if not ok or not bytes(item[1]).startswith(b"\x89PNG"):
            raise ValueError(f"The 'extra_figures' argument must be (title, PNG bytes) pairs, e.g. "
                             f"('Class models', vis.to_png()). Got {type(item).__name__}.")
    return out


def _uri(png: bytes) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _column_info(comp: Comparison) -> dict[str, dict[str, str]]:
    return comp.params.get("columns", {})


def _group_spans(comp: Comparison) -> list[tuple[str, int]]:
    """(property, number of adjacent summary columns) over the metric and cost columns, for the header."""
    info, spans = _column_info(comp), []
    for c in comp.columns:
        group = info.get(c, {}).get("group", "")
        if spans and spans[-1][0] == group:
            spans[-1] = (group, spans[-1][1] + 1)
        else:
            spans.append((group, 1))
    return spans


def _definitions(comp: Comparison) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per property (in the order of perturbx.metrics.specs.GROUPS): each column and how to read it."""
    from perturbx.metrics.specs import GROUPS

    info, by_group = _column_info(comp), {}
    for c in comp.columns:
        text = DEFINITIONS.get(c) or info.get(c, {}).get("guide", "")
        by_group.setdefault(info.get(c, {}).get("group", "") or "other", []).append((c, text))
    order = [*GROUPS, "cost", "other"]
    return sorted(by_group.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def _summary(comp: Comparison) -> dict[str, Any]:
    summary = comp.summary()
    best = {c: set(comp.best_methods(c, summary=summary)) for c in comp.columns}
    rows = []
    for row in summary:
        cells = []
        for c in comp.columns:
            mean, interval = format_cell(row, c)
            cells.append({"mean": mean, "interval": interval, "best": row["method"] in best[c]})
        rows.append({"method": row["method"], "n": row["n"], "cells": cells})
    return {"header": [column_label(c) for c in comp.columns], "rows": rows}


def _image(comp: Comparison, i: int) -> dict[str, Any]:
    name = target_name(comp, i)
    score = float("nan") if comp.scores is None else float(comp.scores[i])
    maps = []
    for method in comp.methods:
        scale = comp.map_scale(method, i)
        relative = scale.relative
        maps.append({"method": method, "tile": map_tile(comp, method, i), "scale": format_scale(scale.max_abs),
                     "relative": "" if relative != relative else f"{100 * relative:.2g} %",
                     "negligible": bool(scale.negligible), "zero": scale.max_abs == 0, "units": scale.units})
    target = comp.rows[i * len(comp.methods)]["target"]
    note = f"(target {target})" if isinstance(target, (int, np.integer)) else ""
    return {"index": i, "name": name, "target": target, "target_note": note, "score": format_value(score, 3),
            "tile": image_tile(comp, i), "maps": maps}


def _rows(comp: Comparison) -> dict[str, Any]:
    keys = ["image", "method", "target", *comp.columns]
    body = [[str(r[k]) for k in keys[:3]] + [format_value(r[k], 4) for k in keys[3:]] for r in comp.rows]
    return {"header": keys, "body": body}


def _json_rows(params: dict) -> list[tuple[str, str]]:
    return [(str(name), json.dumps(p, default=str)) for name, p in params.items()]
