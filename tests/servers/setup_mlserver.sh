#!/usr/bin/env bash
# Create (once) the virtual environment that runs MLServer for tests/test_remote.py,
# tests/test_serving*.py, benchmarks/bench_remote.py and benchmarks/bench_serving.py.
#
# MLServer lives in its own venv because it pins protobuf < 7 (onnx/onnxruntime in the project's
# venv use protobuf 7) and brings ~50 server packages (uvicorn, gevent, grpc, ...) that perturbx
# does not need. The served model is the demo CNN exported to ONNX, run by the custom runtime in
# tests/servers/mlserver_onnx/onnx_model.py, so this venv needs MLServer, onnxruntime and numpy:
# no torch. The perturbx runtime (perturbx.serving, `perturbx serve`) runs in it too: perturbx is
# installed into it in editable mode from this repository, with its runtime dependencies and the
# 'serve' extra (scipy, scikit-image, scikit-learn, ...; still no torch).
#
# Usage:  bash tests/servers/setup_mlserver.sh            # venv at $PERTURBX_MLSERVER_VENV
# Env:    PERTURBX_MLSERVER_VENV  where the venv goes (default ~/.cache/perturbx/venv-mlserver,
#                                 outside the repository so that linters and pytest never walk it)
#         PYTHON                  interpreter to build it from (default python3)
# Prints the path of the mlserver executable on its last line. Idempotent: a venv that already
# has the pinned versions and imports perturbx.serving from this repository is left as it is.
set -euo pipefail

VENV="${PERTURBX_MLSERVER_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/perturbx/venv-mlserver}"
PYTHON="${PYTHON:-python3}"
PINS=(mlserver==1.7.1 onnxruntime==1.31.1 numpy==2.4.6)
REPO="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

have_pins() {
    [ -x "$VENV/bin/mlserver" ] || return 1
    "$VENV/bin/python" - "${PINS[@]}" <<'PY' || return 1
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    if version(name) != want:
        sys.exit(1)
PY
}

if ! have_pins; then
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
fi

have_perturbx() {  # perturbx.serving imports, from this repository's working tree
    "$VENV/bin/python" - "$REPO" <<'PY' 2>/dev/null || return 1
import sys
from pathlib import Path
import perturbx.serving.runtime
import perturbx
sys.exit(Path(perturbx.__file__).resolve().parent != Path(sys.argv[1], "perturbx").resolve())
PY
}

if ! have_perturbx; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO[serve]" "${PINS[@]}" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    have_perturbx || { echo "perturbx.serving does not import in $VENV" >&2; exit 1; }
fi
"$VENV/bin/mlserver" --version >/dev/null
echo "$VENV/bin/mlserver"
