"""The layering rules of the package, read from the source (every import, lazy ones included).

- ``import perturbx`` never imports torch, matplotlib or jinja2;
- the shared ground (``_utils``, ``backend``, ``errors``, ``explanation``, ``targets``) imports nothing above it;
- adapters import only the shared ground: never the engine, a sampler, an estimator, a method or a metric;
- samplers, renderers and estimators never import the engine or a method; the engine never imports a method;
- methods and metrics never import compare or the report; the report is imported only by the CLI, the demos
  and compare.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("perturbx._utils", "perturbx.backend", "perturbx.errors", "perturbx.explanation", "perturbx.targets")
METHODS = ("perturbx.explainer", "perturbx.explainers", "perturbx.optimize", "perturbx.gradients",
           "perturbx.visualize")
ABOVE_ADAPTERS = ("perturbx.engine", "perturbx.samplers", "perturbx.renderers", "perturbx.estimators",
                  "perturbx.metrics", "perturbx.compare", "perturbx.report", "perturbx.registry", *METHODS)


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "adapters":
        parts = ["perturbx", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, name: str) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def all_modules() -> dict[str, set[str]]:
    files = [*ROOT.joinpath("perturbx").rglob("*.py"), *ROOT.joinpath("adapters").rglob("*.py")]
    return {module_name(p): imports_of(p, module_name(p)) for p in files}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(importers: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for mod, names in all_modules().items():
        if not within(mod, importers) or within(mod, allowed):
            continue
        bad += [f"{mod} imports {n}" for n in sorted(names) if within(n, forbidden)]
    return bad


def test_import_perturbx_stays_light():
    code = "import sys, perturbx; bad = [m for m in ('torch', 'matplotlib', 'jinja2') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_shared_ground_imports_nothing_above_it():
    above = ("perturbx.adapters", "perturbx.engine", "perturbx.samplers", "perturbx.renderers",
             "perturbx.estimators", "perturbx.metrics", "perturbx.compare", "perturbx.report", *METHODS)
    assert violations(SHARED, above) == []


def test_adapters_import_only_the_shared_ground():
    assert violations(("perturbx.adapters",), ABOVE_ADAPTERS) == []


def test_parts_and_engine_never_import_a_method():
    parts = ("perturbx.samplers", "perturbx.renderers", "perturbx.estimators")
    assert violations(parts, ("perturbx.engine", *METHODS, "perturbx.compare", "perturbx.report")) == []
    assert violations(("perturbx.engine",), METHODS) == []


def test_report_is_imported_only_by_cli_demo_and_compare():
    importers = ("perturbx",)
    allowed = ("perturbx.cli", "perturbx.demo", "perturbx.demo_detection", "perturbx.compare", "perturbx.report")
    assert violations(importers, ("perturbx.report",), allowed) == []
    assert violations((*METHODS, "perturbx.metrics"), ("perturbx.compare", "perturbx.report")) == []


def test_the_rules_see_a_violation(tmp_path, monkeypatch):
    """The checker itself: an adapter importing the engine is reported."""
    fake = tmp_path / "adapters"
    fake.mkdir()
    (fake / "bad.py").write_text("from perturbx.engine import run\n")
    (tmp_path / "perturbx").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations(("perturbx.adapters",), ABOVE_ADAPTERS) == ["perturbx.adapters.bad imports perturbx.engine",
                                                                   "perturbx.adapters.bad imports perturbx.engine.run"]


@pytest.mark.parametrize("module", ["perturbx.targets", "perturbx.errors", "perturbx.explanation"])
def test_shared_modules_import_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
