"""The comparison report: figures (matplotlib) and one self-contained HTML page (jinja2).

:class:`perturbx.compare.Comparison` computes; this package only draws and writes what it
computed. It is imported by ``Comparison``'s ``plot``, ``plot_curves``, ``save_figures``
and ``to_html`` methods, by the command line and by the demo, never by ``import
perturbx``. matplotlib and jinja2 are imported when a figure or a page is made
(``pip install 'perturbx[viz]'``).

- :func:`write_outputs`: every file of a report folder (:data:`OUTPUT_FILES`), the same for
  ``perturbx demo`` and ``perturbx compare``;
- :func:`write_html`: the HTML page; :func:`maps_figure`, :func:`curves_figure`,
  :func:`save_figures`: the figures.
"""

from __future__ import annotations

from .figures import curves_figure, maps_figure, save_figures
from .html import write_html
from .outputs import OUTPUT_FILES, write_outputs

__all__ = ["OUTPUT_FILES", "curves_figure", "maps_figure", "save_figures", "write_html", "write_outputs"]
