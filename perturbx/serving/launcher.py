"""``perturbx serve CONFIG [CONFIG ...]``: start MLServer with the perturbx runtime, without writing its files by hand.

Each CONFIG is either the explainer's configuration alone (what goes in ``parameters.extra``,
plus an optional ``"name"``; the file's stem by default) or a whole model-settings.json (of the
perturbx runtime or of any other MLServer runtime, e.g. the predictor itself). The launcher
writes an MLServer model repository (``settings.json`` and one ``<name>/model-settings.json``
per CONFIG) into a temporary folder (or ``--workdir``) and runs ``mlserver start`` on it until
it is stopped. Relative paths in a CONFIG are taken from the CONFIG's folder; a CONFIG named
``model-settings.json`` is linked with its whole folder, so a custom runtime's code beside it
(``"implementation": "my_runtime.MyModel"``) is found as MLServer finds it there (a whole
model-settings.json under another name is copied: its runtime must be importable).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .config import ServingConfig

IMPLEMENTATION = "perturbx.serving.PerturbxRuntime"


class LaunchError(Exception):
    """A problem with the files or the environment of ``perturbx serve``; printed without a traceback."""


def model_settings(path: Path) -> dict[str, Any]:
    """The model-settings.json content for one CONFIG file, validated when it is a perturbx explainer."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LaunchError(f"CONFIG {str(path)!r} cannot be read as JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LaunchError(f"CONFIG {str(path)!r} must hold a JSON object. Got {type(data).__name__}.")
    folder = str(path.resolve().parent)
    if "implementation" not in data:  # the explainer's configuration alone
        extra = {k: v for k, v in data.items() if k != "name"}
        data = {"name": data.get("name", path.stem), "implementation": IMPLEMENTATION, "parameters": {"extra": extra}}
    data.setdefault("name", path.resolve().parent.name)
    params = data.setdefault("parameters", {})
    uri = params.get("uri")
    if isinstance(uri, str) and "://" not in uri and not os.path.isabs(uri):
        params["uri"] = str(Path(folder) / uri)
    if data["implementation"] == IMPLEMENTATION:
        extra = params.setdefault("extra", {})
        extra.setdefault("base_dir", folder)
        ServingConfig.from_dict(extra)  # a ConfigError names the wrong field before MLServer starts
    return data


def write_repository(configs: list[Path], root: Path, *, host: str, http_port: int, grpc_port: int,
                     metrics_port: int, workers: int) -> list[str]:
    """Write the MLServer repository of ``configs`` into ``root``; returns the model names."""
    names: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    for path in configs:
        settings = model_settings(path)
        name = settings["name"]
        if name in names:
            raise LaunchError(f"Two CONFIGs are named {name!r}; give each a different 'name'.")
        names.append(name)
        folder = root / name
        if path.name == "model-settings.json":  # its folder as it is: the runtime's code, relative paths
            folder.symlink_to(path.resolve().parent, target_is_directory=True)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    server = {"host": host, "http_port": http_port, "grpc_port": grpc_port, "metrics_port": metrics_port,
              "parallel_workers": workers, "server_name": "perturbx"}
    (root / "settings.json").write_text(json.dumps(server, indent=2))
    return names


def find_mlserver() -> str:
    """The ``mlserver`` executable of this Python environment, else the one on the PATH."""
    here = Path(sys.executable).parent / "mlserver"
    if os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("mlserver")
    if found is None:
        raise LaunchError("MLServer is not installed in this environment: pip install 'perturbx[serve]' "
                          "(it pins protobuf < 7, so a virtual environment of its own is best).")
    return found


def serve(configs: list[str], *, host: str = "127.0.0.1", http_port: int = 8080, grpc_port: int = 8081,
          metrics_port: int = 8082, workers: int = 0, workdir: str | None = None, dry_run: bool = False) -> int:
    """Run MLServer on the repository of ``configs`` until it stops; its exit status.

    Parameters
    ----------
    configs : list of str
        CONFIG files (see the module docstring).
    host : str
        Address to listen on; 0.0.0.0 in a container.
    http_port, grpc_port, metrics_port : int
        MLServer's ports (V2 REST, V2 gRPC, Prometheus metrics).
    workers : int
        MLServer's ``parallel_workers`` (0: requests are explained in the server process, in threads).
    workdir : str, optional
        Where to write the repository (kept); a temporary folder (removed at the end) by default.
    dry_run : bool
        Write the repository and print the command instead of running it.
    """
    paths = [Path(c) for c in configs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise LaunchError(f"CONFIG file(s) not found: {missing}.")
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="perturbx-serve-"))
    try:
        names = write_repository(paths, root, host=host, http_port=http_port, grpc_port=grpc_port,
                                 metrics_port=metrics_port, workers=workers)
        command = [find_mlserver() if not dry_run else "mlserver", "start", str(root)]
        print(f"perturbx serve: models {names} at http://{host}:{http_port}/v2/models/<name>/infer", flush=True)
        if dry_run:
            print(" ".join(command), flush=True)
            return 0
        return _run(command)
    finally:
        if not workdir and not dry_run:
            shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str]) -> int:
    """Run ``command``, passing SIGTERM and SIGINT on to it; its exit status."""
    proc = subprocess.Popen(command)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
