"""Start a real MLServer on 127.0.0.1 serving an ONNX classifier, for tests and benchmarks.

MLServer runs from its own venv (``tests/servers/setup_mlserver.sh``), found through
``$PERTURBX_MLSERVER`` (the ``mlserver`` executable), ``$PERTURBX_MLSERVER_VENV/bin/mlserver``
(default venv: ``~/.cache/perturbx/venv-mlserver``) or ``mlserver`` on the PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUNTIME_DIR = Path(__file__).with_name("mlserver_onnx")
MODEL_NAME = "demo-cnn"


def find_mlserver() -> str | None:
    """Path of the mlserver executable, or None."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    venv = os.environ.get("PERTURBX_MLSERVER_VENV") or os.path.join(cache, "perturbx", "venv-mlserver")
    candidates = [os.environ.get("PERTURBX_MLSERVER"), os.path.join(venv, "bin", "mlserver"), shutil.which("mlserver")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def require(found: str | None, what: str = "mlserver") -> None:
    """Skip the calling test where ``found`` (a server executable) is None; fail it instead where
    ``$PERTURBX_REQUIRE_MLSERVER`` is set (CI must not skip the tests against a real server)."""
    if found is not None:
        return
    import pytest

    if os.environ.get("PERTURBX_REQUIRE_MLSERVER"):
        pytest.fail(f"PERTURBX_REQUIRE_MLSERVER is set but {what} was not found; run tests/servers/setup_mlserver.sh")
    pytest.skip(f"{what} not installed: run tests/servers/setup_mlserver.sh")


def export_onnx(net, sample_shape: tuple[int, ...], path: str | os.PathLike) -> str:
    """``net`` written to ``path`` as ONNX with a dynamic batch axis, input "image" and output "logits" (what
    the servers here load); returns the path as a string."""
    import torch

    path = str(path)
    torch.onnx.export(net, (torch.rand(2, *sample_shape),), path, input_names=["image"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), dynamo=True,
                      external_data=False, verbose=False, optimize=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_onnx(onnx_path: str | os.PathLike, workdir: str | os.PathLike, *, parallel_workers: int = 0,
               latency_ms: float = 0.0, startup_timeout: float = 180.0) -> Iterator[str]:
    """Run MLServer serving ``onnx_path`` as model "demo-cnn"; yields its base URL.

    ``latency_ms`` delays every answer (a stand-in for a network round trip). The server is
    stopped (SIGTERM, then SIGKILL of its process group) on exit.
    """
    exe = find_mlserver()
    if exe is None:
        raise FileNotFoundError("mlserver not found: run tests/servers/setup_mlserver.sh or set PERTURBX_MLSERVER")
    root = Path(workdir)
    model_dir = root / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNTIME_DIR / "onnx_model.py", model_dir / "onnx_model.py")
    model_settings = json.loads((RUNTIME_DIR / "model-settings.json").read_text())
    model_settings["parameters"]["extra"] = {"latency_ms": latency_ms}
    (model_dir / "model-settings.json").write_text(json.dumps(model_settings))
    shutil.copy(onnx_path, model_dir / "model.onnx")
    http_port = free_port()
    settings = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": free_port(),
                "metrics_port": free_port(), "parallel_workers": parallel_workers, "debug": False}
    (root / "settings.json").write_text(json.dumps(settings))
    log = open(root / "mlserver.log", "wb")  # noqa: SIM115 - closed below, after the process
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    proc = subprocess.Popen([exe, "start", str(root)], cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(url, proc, startup_timeout, root / "mlserver.log")
        yield url
    finally:
        _stop(proc)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlserver exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/models/{MODEL_NAME}/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"mlserver not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
