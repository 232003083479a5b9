#!/usr/bin/env bash
# Create (once) the virtual environment that runs Quantus for tests/test_quantus*.py and
# benchmarks/bench_metrics.py.
#
# Quantus 0.6 lives in its own venv because it calls np.trapz, which numpy 2.4 (the project's
# venv) no longer has: every AUC-based Quantus metric fails there. This venv pins numpy < 2.4,
# Quantus and the CPU build of torch (Quantus wraps torch models; torchvision is not needed).
# perturbx itself is not installed here: the tests run Quantus in a subprocess on .npy inputs
# (tests/quantus/runner.py) and compare its numbers with perturbx's in the project's venv.
#
# Usage:  bash tests/quantus/setup_quantus.sh           # venv at $PERTURBX_QUANTUS_VENV
# Env:    PERTURBX_QUANTUS_VENV  where the venv goes (default ~/.cache/perturbx/venv-quantus,
#                                outside the repository so that linters and pytest never walk it)
#         PYTHON                 interpreter to build it from (default python3)
# Prints the path of the venv's python on its last line. Idempotent: a venv that already has
# the pinned versions is left as it is.
set -euo pipefail

VENV="${PERTURBX_QUANTUS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/perturbx/venv-quantus}"
PYTHON="${PYTHON:-python3}"
PINS=(quantus==0.6.0 numpy==2.3.5 torch==2.13.0)

have_pins() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - "${PINS[@]}" <<'PY' || return 1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name).split("+")[0] != want:
        sys.exit(1)
import quantus  # noqa: F401  (the import itself must work: cv2, pandas, ...)
PY
}

if ! have_pins; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    have_pins || { echo "setup_quantus.sh: the venv at $VENV does not import quantus" >&2; exit 1; }
fi
echo "$VENV/bin/python"
