"""Every script in examples/ runs to the end (each checks its own results with asserts) and is listed in its README.

Each example runs as a subprocess, in a temporary folder that it writes its outputs into,
with a timeout that only guards against a hang (the examples take well under a minute each on
a 2-core CPU; they are not timed here). An example names the modules it needs on a line
``# requires: torch, onnxruntime, ...``; it is skipped when one is not installed. ``mlserver``
means the MLServer executable of ``tests/servers/setup_mlserver.sh``: the model-server example
is skipped without it unless ``PERTURBX_REQUIRE_MLSERVER`` is set, as in tests/test_remote.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .servers.mlserver_process import find_mlserver, require

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
#: seconds before an example counts as hung
TIMEOUT = 600


def requirements(script: Path) -> list[str]:
    match = re.search(r"^# requires: (.+)$", script.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return [name.strip() for name in match.group(1).split(",")] if match else []


def skip_unless_installed(script: Path) -> None:
    for name in requirements(script):
        if name == "mlserver":
            require(find_mlserver())
        elif importlib.util.find_spec(name) is None:
            pytest.skip(f"{script.name} needs {name}")


def test_there_are_examples_and_the_readme_lists_each():
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert len(SCRIPTS) >= 6
    missing = [s.name for s in SCRIPTS if f"`{s.name}`" not in readme]
    assert not missing, f"examples/README.md does not list {missing}"
    for script in SCRIPTS:
        assert script.read_text(encoding="utf-8").startswith('"""'), f"{script.name} needs a docstring"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_example_runs(script, tmp_path):
    skip_unless_installed(script)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    try:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "out")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} ran for more than {TIMEOUT} s")
    assert done.returncode == 0, f"{script.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert any((tmp_path / "out").iterdir()), f"{script.name} wrote nothing into its output folder"
