"""Every Python block of README.md runs as written.

The rule (for whoever adds a README section):

- The Python blocks (fenced with three backticks and ``python``) are grouped by their ``## ``
  section; a ``### `` subsection belongs to the ``## `` section above it.
- Each section runs as one script, in a fresh interpreter, in an empty temporary folder (files a
  block writes, such as ``report.html``, land there), with matplotlib's non-interactive backend.
- The script is the blocks of "## Python API" followed by the section's own blocks in order. So
  a block may use what the Python API block defines (``np``, ``torch``, ``perturbx``,
  ``Callable``, ``Torch``, ``data`` (built-in synthetic shapes), ``x``, ``net`` (the demo CNN),
  ``model``) and what earlier blocks of its own section define, never names of another section.
- Use the built-in data and models (``perturbx.datasets``, ``perturbx.models``), nothing from the
  network; a section must finish within :data:`TIMEOUT` seconds on a 2-core CPU.

A failing block is reported with its README line numbers. Blocks of other languages (bash) are
not run.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: the section whose blocks every other section's script starts with
PRELUDE = "Python API"
#: seconds per section (the demo CNN may be trained first when it is not cached: about 30 s)
TIMEOUT = 420

_FENCE = re.compile(r"^```(\w*)\s*$")


def python_blocks(text: str) -> list[tuple[str, int, str]]:
    """``(section, first line number, code)`` of every Python block, in order."""
    blocks, section, lang, start, lines = [], "", None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE.match(line)
        if lang is None:
            if line.startswith("## "):
                section = line[3:].strip()
            elif fence:
                lang, start, lines = fence.group(1), number + 1, []
        elif line.strip() == "```":
            if lang == "python":
                blocks.append((section, start, "\n".join(lines)))
            lang = None
        else:
            lines.append(line)
    assert lang is None, "README.md has an unclosed code block"
    return blocks


def sections() -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for section, start, code in python_blocks(README.read_text(encoding="utf-8")):
        out.setdefault(section, []).append((start, code))
    return out


def script(blocks: list[tuple[int, str]]) -> str:
    """One script that runs each block compiled under its README line numbers (tracebacks point at README.md)."""
    parts = ["import matplotlib\nmatplotlib.use('Agg')\n"]
    for start, code in blocks:
        padded = "\n" * (start - 1) + code  # line numbers in tracebacks are README.md's
        parts.append(f"exec(compile({padded!r}, {str(README)!r}, 'exec'))\n")
    return "".join(parts)


SECTIONS = sections()


def test_the_readme_has_python_blocks_and_the_prelude_comes_first():
    names = list(SECTIONS)
    assert PRELUDE in names and names[0] == PRELUDE, names
    assert len(python_blocks(README.read_text(encoding="utf-8"))) >= 8


def test_the_parser_groups_blocks_by_section_and_skips_other_languages():
    text = ("## A\n```python\na = 1\n```\n```bash\nls\n```\n"
            "### A.1\n```python\nb = a\n```\n## B\n```python\nc = 2\n```\n")
    assert python_blocks(text) == [("A", 3, "a = 1"), ("A", 10, "b = a"), ("B", 14, "c = 2")]


@pytest.mark.parametrize("section", list(SECTIONS))
def test_readme_section_runs(section, tmp_path):
    pytest.importorskip("torch")       # the Python API block uses the demo CNN
    pytest.importorskip("matplotlib")
    blocks = SECTIONS[PRELUDE] + ([] if section == PRELUDE else SECTIONS[section])
    env = {**os.environ, "MPLBACKEND": "Agg"}
    try:
        done = subprocess.run([sys.executable, "-c", script(blocks)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"README section {section!r} ran for more than {TIMEOUT} s")
    lines = ", ".join(f"line {start}" for start, _ in blocks)
    assert done.returncode == 0, (f"README section {section!r} (blocks at {lines}) failed:\n"
                                  f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


#: import name -> distribution name, where they differ
DISTRIBUTIONS = {"PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn"}


def third_party_imports() -> dict[str, str]:
    """Top-level modules outside the standard library that perturbx's code imports -> a file importing each."""
    found: dict[str, str] = {}
    for path in sorted([*(ROOT / "perturbx").rglob("*.py"), *(ROOT / "adapters").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "perturbx":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_pyproject_declares_every_package_the_code_imports():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    names = {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in declared}
    imports = third_party_imports()
    assert {"PIL", "threadpoolctl", "jinja2", "numpy"} <= set(imports)   # the scan sees lazy imports too
    missing = {m: f for m, f in imports.items() if DISTRIBUTIONS.get(m, m).lower() not in names}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


# -- the first run: one thread choice (README, "Threads") -------------------------------------------------
def test_default_threads_is_half_the_cores_or_the_environment_variable(monkeypatch):
    from perturbx.dataset_runs import THREADS_ENV, default_threads, worker_threads

    monkeypatch.delenv(THREADS_ENV, raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_threads() == max(1, cores // 2)
    monkeypatch.setenv(THREADS_ENV, "6")
    assert default_threads() == 6
    assert worker_threads(1, None) is None                     # one process: the caller's torch setting stands
    assert worker_threads(2, None) == worker_threads(2, "threading") == 3
    assert worker_threads(4, "loky") == 1 and worker_threads(8, None) == 1
    assert worker_threads(2, "dask") == 0                       # a cluster worker decides on its own machine
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=rf"environment variable PERTURBX_THREADS must be an int >= 1.*"
                                             rf"Got {bad!r}"):
            default_threads()


def test_the_test_run_uses_one_thread_choice():
    from perturbx.dataset_runs import default_threads

    from .conftest import THREADS

    assert default_threads() == THREADS and os.environ["OMP_NUM_THREADS"] == str(THREADS)
    if "torch" in sys.modules:
        assert sys.modules["torch"].get_num_threads() == THREADS


class ThreadCount:
    """A torch module (made on first use) scoring (mean of x, torch threads of the process that runs it)."""

    def __new__(cls):
        import torch

        class Module(torch.nn.Module):
            def forward(self, x):
                return torch.stack([x.mean(dim=(1, 2, 3)), torch.full((len(x),), float(torch.get_num_threads()))], 1)

        return Module()


@pytest.mark.parametrize("backend", [None, "threading"])
def test_explain_dataset_workers_run_torch_on_their_share_of_the_threads(backend, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from perturbx import Occlusion, explain_dataset
    from perturbx.adapters import Torch
    from perturbx.dataset_runs import THREADS_ENV

    monkeypatch.setenv(THREADS_ENV, "4")
    before = torch.get_num_threads()
    images = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    res = explain_dataset(Occlusion(window=4, stride=4), Torch(ThreadCount()), images, tmp_path, n_jobs=2,
                          backend=backend, target=1)
    assert [float(e.scores[0]) for e in res] == [2.0] * 4      # 4 threads shared by 2 workers
    assert torch.get_num_threads() == before                    # this process's setting is restored
