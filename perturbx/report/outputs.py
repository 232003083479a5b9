"""The files of a report folder, written alike by ``perturbx demo`` and ``perturbx compare``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from perturbx.compare import Comparison

__all__ = ["OUTPUT_FILES", "write_outputs"]

#: File name -> what it holds
OUTPUT_FILES = {
    "results.csv": "one row per image and method: every metric, queries and seconds",
    "summary.csv": "one row per method: mean and interval of every column",
    "report.md": "the summary table and the per-image rows in markdown",
    "maps.png": "images x methods, every map on its own scale symmetric about zero",
    "curves.png": "mean deletion and insertion curves (with those metrics)",
    "report.html": "one self-contained page: tables, every map with its scale, curves, parameters, versions",
}


def write_outputs(comp: Comparison, folder: str | Path, *, title: str = "perturbx comparison",
                  n_images: int | None = None, extra_figures: Sequence[tuple[str, bytes]] = ()) -> list[Path]:
    """Write :data:`OUTPUT_FILES` into ``folder`` (created); the CSV and markdown files first.

    Parameters
    ----------
    comp : Comparison
    folder : str or Path
    title : str
        Title of ``report.md`` and ``report.html``.
    n_images : int or None, default None
        Images drawn in ``maps.png`` and the HTML maps (the first ones; None: all).
    extra_figures : sequence of (title, PNG bytes)
        Added to the page (see :func:`perturbx.report.write_html`) and written as ``figure-<k>.png``.

    Returns
    -------
    list of Path
        The files written (``curves.png`` only with curve metrics).

    Raises
    ------
    ImportError
        matplotlib or jinja2 is missing; the CSV and markdown files are written by then.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = [comp.to_csv(folder / "results.csv"), comp.to_csv(folder / "summary.csv", summary=True)]
    (folder / "report.md").write_text(f"# {title}\n\n" + comp.to_markdown(per_image=True), encoding="utf-8")
    out.append(folder / "report.md")
    out += comp.save_figures(folder, n_images=n_images, grid="maps.png", curves="curves.png")
    for k, (_title, png) in enumerate(extra_figures, start=1):
        (folder / f"figure-{k}.png").write_bytes(png)
        out.append(folder / f"figure-{k}.png")
    out.append(comp.to_html(folder / "report.html", title=title, n_images=n_images, extra_figures=extra_figures))
    return out
