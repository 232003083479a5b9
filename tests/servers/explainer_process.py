"""Start ``perturbx serve`` (MLServer with the perturbx runtime) on 127.0.0.1, for tests and benchmarks.

The explainer runs from the MLServer venv (``tests/servers/setup_mlserver.sh`` installs perturbx
into it), whose ``perturbx`` executable sits next to its ``mlserver``. Each configuration is
written to a JSON file and passed as one CONFIG, so one process serves every explainer asked for.
:func:`onnx_predictor` lays out the folder of the demo CNN's predictor (the ONNX runtime of
``mlserver_onnx/``), which ``perturbx serve .../model-settings.json`` serves as MLServer would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from .mlserver_process import RUNTIME_DIR, find_mlserver, free_port

REPO = Path(__file__).resolve().parents[2]


def find_perturbx_serve() -> str | None:
    """The ``perturbx`` executable of the MLServer venv, or None."""
    mlserver = find_mlserver()
    if mlserver is None:
        return None
    exe = Path(mlserver).with_name("perturbx")
    return str(exe) if os.access(exe, os.X_OK) else None


@contextmanager
def serve_explainers(configs: Mapping[str, dict], workdir: str | os.PathLike, *, env: Mapping[str, str] | None = None,
                     startup_timeout: float = 300.0) -> Iterator[tuple[str, Path]]:
    """Run ``perturbx serve`` on ``configs`` (name -> explainer configuration); yields (base URL, log path).

    ``env`` adds environment variables (a token) to the server's. The server is stopped (SIGTERM,
    then SIGKILL of its process group) on exit.
    """
    root = Path(workdir)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    files = []
    for name, config in configs.items():
        path = root / "configs" / f"{name}.json"
        path.write_text(json.dumps({"name": name, **config}))
        files.append(path)
    with serve_files(files, root, env=env, startup_timeout=startup_timeout) as served:
        yield served


@contextmanager
def serve_files(files: list[Path], workdir: str | os.PathLike, *, env: Mapping[str, str] | None = None,
                startup_timeout: float = 300.0) -> Iterator[tuple[str, Path]]:
    """Run ``perturbx serve FILE ...`` (explainer configurations or model-settings.json); yields (URL, log path)."""
    exe = find_perturbx_serve()
    if exe is None:
        raise FileNotFoundError("perturbx is not installed in the MLServer venv: run tests/servers/setup_mlserver.sh")
    root = Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [exe, "serve", *map(str, files), "--port", str(port), "--grpc-port", str(free_port()),
               "--metrics-port", str(free_port()), "--workdir", str(root / "repository")]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    full_env.update({"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **(env or {})})
    log_path = root / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below, after the process
    proc = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=full_env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, startup_timeout, log_path)
        yield url, log_path
    finally:
        stop(proc)
        log.close()


def onnx_predictor(onnx_path: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """A predictor's folder: model-settings.json ("demo-cnn", the ONNX runtime beside it) and model.onnx."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(RUNTIME_DIR / "onnx_model.py", folder / "onnx_model.py")
    shutil.copy(RUNTIME_DIR / "model-settings.json", folder / "model-settings.json")
    shutil.copy(onnx_path, folder / "model.onnx")
    return folder / "model-settings.json"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Until ``/v2/health/ready`` answers 200 (every model loaded); an error with the log's tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"perturbx serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"perturbx serve not ready after {timeout} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
