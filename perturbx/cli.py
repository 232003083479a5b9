"""Command line: ``perturbx demo`` and ``perturbx compare``.

``perturbx compare`` loads a user's model (a torch factory ``PACKAGE.MODULE:FACTORY`` or
``path/to/file.py:FACTORY``, an ``.onnx`` file, or, with ``--allow-pickle``, a pickled
torch module), reads a folder of images, runs :func:`perturbx.compare.compare` and writes
the report. Every problem the user can fix (a missing file, a factory that is not
callable, an unreadable image, an unknown method) ends with one line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from .images import IMAGE_SUFFIXES, image_files, read_image


class CLIError(Exception):
    """A problem with the command's arguments or files; printed without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perturbx", description="Fast perturbation-based explanations.")
    sub = parser.add_subparsers(dest="command", required=True)
    _demo_parser(sub)
    _compare_parser(sub)
    _serve_parser(sub)
    sub.add_parser("methods", help="list the methods available in this installation",
                   description="List the method names that --methods accepts here.")
    return parser


def _demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="compare every method on held-out images of the built-in synthetic data",
                          description="Train (once, cached) the demo CNN on the built-in synthetic shapes, explain "
                                      "held-out images with every available method, score the maps and write an "
                                      "HTML report, markdown and CSV tables and figures (the files of 'perturbx "
                                      "compare').")
    demo.add_argument("--out", default="perturbx-demo", help="output folder (default: %(default)s)")
    demo.add_argument("--n-images", type=int, default=6, help="held-out images to explain (default: %(default)s)")
    demo.add_argument("--cache-dir", default=None, help="where the trained demo CNN is cached "
                                                        "(default: $PERTURBX_CACHE or ~/.cache/perturbx)")
    demo.add_argument("--seed", type=int, default=0, help="random_state of the sampling methods")
    demo.add_argument("--methods", default=None,
                      help="comma-separated method names or 'all' (default: every available one except the "
                           "mask-optimisation methods, which take minutes per image on a CPU)")
    demo.add_argument("--task", choices=("classification", "detection"), default="classification",
                      help="classification: the demo CNN and every method; detection: the built-in object "
                           "detector, every detection of held-out scenes explained by D-RISE, occlusion and "
                           "KernelSHAP, boxes drawn over the maps in detections.png (default: %(default)s)")
    demo.add_argument("--all-metrics", action="store_true",
                      help="also max-sensitivity and the model-randomisation check (several times slower)")


def _compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare", help="compare methods on your own model and images",
        description="Explain every image of a folder with several methods and write a comparison report "
                    "(report.html, report.md, results.csv, summary.csv, maps.png, curves.png).",
        epilog="Examples:\n  perturbx compare --model mypkg.nets:make_net --checkpoint net.pt --images imgs/ "
               "--methods rise,lime,gradcam --out report/\n  perturbx compare --model model.onnx --images imgs/ "
               "--size 224 224 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out report/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="PACKAGE.MODULE:FACTORY or path/to/file.py:FACTORY (a callable returning a torch.nn.Module), "
                        "an .onnx file, or a pickled torch module .pt/.pth (needs --allow-pickle)")
    p.add_argument("--images", required=True,
                   help="folder of images (png, jpg, jpeg, bmp, gif, tif, tiff, webp, or .npy arrays CHW/HWC), read "
                        "as RGB in [0, 1] by perturbx.images.read_image, as explain_dataset reads them")
    p.add_argument("--methods", default="occlusion,rise",
                   help="comma-separated method names, or 'all' (see 'perturbx methods'; default: %(default)s)")
    p.add_argument("--out", default="perturbx-compare", help="output folder (default: %(default)s)")
    p.add_argument("--metrics", default="default",
                   help="comma-separated metrics (deletion, insertion, pointing_game, energy_pointing, infidelity, "
                        "max_sensitivity, randomization), 'default' or 'all' (default: %(default)s)")
    p.add_argument("--checkpoint", default=None,
                   help="weights for the factory's module, loaded with torch.load(weights_only=True)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow loading files that unpickle arbitrary Python objects (runs code from the file: "
                        "only for files you trust)")
    p.add_argument("--masks", default=None,
                   help="folder of ground-truth masks with the images' file names (nonzero = object); enables "
                        "the pointing game and energy pointing")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="resize every image to H x W (default: keep; all images must then have one size)")
    p.add_argument("--mean", default=None, help="per-channel mean subtracted inside the model, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", default=None, help="per-channel std divided inside the model, e.g. 0.229,0.224,0.225")
    p.add_argument("--output", choices=("probs", "logits"), default="probs",
                   help="score the model's softmax probabilities or its raw outputs (default: %(default)s)")
    p.add_argument("--target", type=int, default=None, help="class to explain in every image (default: top class)")
    p.add_argument("--class-names", default=None, help="text file with one class name per line")
    p.add_argument("--batch-size", type=int, default=64, help="rows per model call (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: the module's)")
    p.add_argument("--max-images", type=int, default=None, help="use only the first N images (sorted by name)")
    p.add_argument("--n-jobs", type=int, default=1, help="images explained in parallel (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random_state of the sampling methods")


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="serve explanations over the Open Inference Protocol (an MLServer runtime)",
        description="Start MLServer with the perturbx runtime: each CONFIG is an explainer configuration (method, "
                    "params, target, model: the predictor's url and model name or a local model, limits; see "
                    "perturbx.serving.config) or a whole model-settings.json. Needs pip install 'perturbx[serve]'.",
        epilog="Example (the predictor on MLServer's default ports 8080-8082):\n  perturbx serve explainer.json "
               "--port 9080 --grpc-port 9081 --metrics-port 9082\n  curl -s localhost:9080/v2/models/explainer/infer "
               "-d '{\"inputs\": [{\"name\": \"image\", \"shape\": [1, 3, 64, 64], \"datatype\": \"FP32\", "
               "\"data\": [...]}]}'",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="explainer configuration(s) or model-settings.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 in a container "
                                                       "(default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="V2 REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8081, help="V2 gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8082, help="Prometheus metrics port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0,
                   help="MLServer parallel_workers; 0 explains in the server process, in threads "
                        "(default: %(default)s)")
    p.add_argument("--workdir", default=None, help="write MLServer's settings here and keep them (default: a "
                                                   "temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="write the settings and print the command only")


def _run_serve(args) -> int:
    from .serving import ConfigError
    from .serving.launcher import LaunchError, serve

    try:
        return serve(args.configs, host=args.host, http_port=args.port, grpc_port=args.grpc_port,
                     metrics_port=args.metrics_port, workers=args.workers, workdir=args.workdir,
                     dry_run=args.dry_run)
    except (ConfigError, LaunchError) as exc:
        raise CLIError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``perturbx`` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _run_demo(args)
        if args.command == "methods":
            return _run_methods()
        if args.command == "serve":
            return _run_serve(args)
        return _run_compare(args)
    except CLIError as exc:
        print(f"perturbx {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _run_methods() -> int:
    from .registry import METHODS, available_methods

    for name in available_methods():
        print(f"{name:<16} {METHODS[name].kind:<13} {METHODS[name].module}.{METHODS[name].cls}")
    return 0


def _run_demo(args) -> int:
    if args.n_images < 1:
        raise CLIError(f"--n-images must be >= 1. Got {args.n_images}.")
    from .demo import DEMO_METRICS, run_demo

    methods = _method_list(args.methods) if args.methods else None
    metrics = "all" if args.all_metrics else DEMO_METRICS
    try:
        if args.task == "detection":
            from .demo_detection import DETECTION_METRICS, run_detection_demo

            out = args.out if args.out != "perturbx-demo" else "perturbx-demo-detection"
            run_detection_demo(out, args.n_images, cache_dir=args.cache_dir, random_state=args.seed,
                               methods=methods, metrics="all" if args.all_metrics else DETECTION_METRICS)
            return 0
        run_demo(args.out, args.n_images, cache_dir=args.cache_dir, random_state=args.seed, methods=methods,
                 metrics=metrics)
    except ImportError as exc:  # PyTorch (the demo CNN) or matplotlib (the figures) missing
        raise CLIError(f"{exc}. The demo needs: pip install 'perturbx[torch,viz]'") from exc
    return 0


def _method_list(text: str) -> list[str]:
    from .registry import available_methods, canonical_name

    if text.strip().lower() == "all":
        return available_methods()
    try:
        names = [canonical_name(m) for m in text.split(",") if m.strip()]
    except ValueError as exc:
        raise CLIError(f"{exc} Run 'perturbx methods' to list the available ones.") from exc
    missing = [n for n in names if n not in available_methods()]
    if missing:
        raise CLIError(f"method(s) {missing} are not available in this installation (available: "
                       f"{available_methods()}); gradient methods need PyTorch.")
    if not names:
        raise CLIError("--methods names no method.")
    return names


def _run_compare(args) -> int:
    from .compare import compare
    from .registry import METHODS

    methods = _method_list(args.methods)
    files = _image_files(Path(args.images), args.max_images)
    arrays = [_read_image(f, args.size) for f in files]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise CLIError(f"the images have different shapes {shapes} (C, H, W); pass --size H W to resize them "
                       f"to the size the model takes.")
    images = np.stack(arrays)
    masks = _read_masks(Path(args.masks), files, images.shape[-2:]) if args.masks else None
    model, is_torch = _load_model(args, n_channels=images.shape[1])
    gradient = [m for m in methods if METHODS[m].kind == "gradient"]
    if gradient and not is_torch:
        raise CLIError(f"method(s) {gradient} differentiate the model and need a torch model; "
                       f"{args.model} is not one. Use black-box methods (occlusion, rise, lime, kernelshap).")
    metrics = args.metrics if args.metrics in ("default", "all") else [m for m in args.metrics.split(",") if m]
    if args.metrics == "all" and not is_torch:
        metrics = ["deletion", "insertion", "infidelity", "max_sensitivity"]
        metrics += ["pointing_game", "energy_pointing"] if masks is not None else []
    targets = None if args.target is None else np.full(len(files), args.target)
    class_names = _read_lines(Path(args.class_names)) if args.class_names else None
    try:
        comp = compare(model, images, methods, metrics=metrics, ground_truth=masks, n_jobs=args.n_jobs,
                       targets=targets, class_names=class_names, random_state=args.seed)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from exc
    comp.params["compare"]["images"] = [f.name for f in files]
    out = Path(args.out)
    from .report import write_outputs

    try:
        write_outputs(comp, out, n_images=8)
    except ImportError as exc:  # matplotlib or jinja2 missing: the tables are written, the figures cannot be
        raise CLIError(f"{exc} (results.csv, summary.csv and report.md are in {out})") from exc
    print(comp.to_markdown())
    print(f"compare() wall time: {comp.params['compare']['wall_seconds']:.1f} s (explaining and scoring; the report "
          f"shows the same number)")
    print(f"report: {out / 'report.html'}")
    return 0


# --- images ---------------------------------------------------------------------------------------


def _image_files(folder: Path, max_images: int | None) -> list[Path]:
    if not folder.is_dir():
        raise CLIError(f"--images {folder}: no such folder.")
    files = image_files(folder)
    if not files:
        raise CLIError(f"--images {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder.")
    if max_images is not None:
        if max_images < 1:
            raise CLIError(f"--max-images must be >= 1. Got {max_images}.")
        files = files[:max_images]
    return files


def _read_image(path: Path, size: list[int] | None, channels: int | None = 3) -> np.ndarray:
    """One image as float32 CHW (RGB in [0, 1] for image files): :func:`perturbx.images.read_image`."""
    if size is not None and min(size) < 1:
        raise CLIError(f"--size must be two positive ints. Got {size}.")
    try:
        return read_image(path, layout="CHW", channels=channels, size=None if size is None else tuple(size))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def _read_masks(folder: Path, files: list[Path], shape: tuple[int, int]) -> np.ndarray:
    if not folder.is_dir():
        raise CLIError(f"--masks {folder}: no such folder.")
    masks = []
    for f in files:
        candidates = [c for c in image_files(folder) if c.stem == f.stem]
        if not candidates:
            raise CLIError(f"--masks {folder}: no mask for image {f.name} (expected a file named {f.stem}.*).")
        values = _read_image(candidates[0], list(shape), channels=None).max(axis=0)
        masks.append(values > 0.5 * values.max() if values.max() > 0 else np.zeros(shape, dtype=bool))
    return np.stack(masks)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise CLIError(f"--class-names {path}: no such file.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- models ---------------------------------------------------------------------------------------


def _load_model(args, n_channels: int):
    """(adapter, is_torch) for ``--model`` with the normalisation and output settings."""
    spec = args.model
    mean, std = _channel_stats(args.mean, "--mean", n_channels), _channel_stats(args.std, "--std", n_channels)
    if spec.lower().endswith(".onnx"):
        return _onnx_model(Path(spec), args, mean, std), False
    if spec.lower().endswith((".pt", ".pth")) and ":" not in spec:
        module = _pickled_module(Path(spec), args.allow_pickle)
    else:
        module = _factory_module(spec)
        if args.checkpoint:
            _load_checkpoint(module, Path(args.checkpoint), args.allow_pickle)
    from .adapters import Torch

    if mean is not None or std is not None:
        module = _Normalised(module, mean, std)
    return Torch(module, device=args.device, batch_size=args.batch_size, output=args.output), True


def _channel_stats(text: str | None, flag: str, n_channels: int) -> np.ndarray | None:
    if text is None:
        return None
    try:
        values = np.array([float(v) for v in text.split(",")], dtype=np.float32)
    except ValueError as exc:
        raise CLIError(f"{flag} must be comma-separated numbers, e.g. 0.485,0.456,0.406. Got {text!r}.") from exc
    if len(values) not in (1, n_channels):
        raise CLIError(f"{flag} has {len(values)} values but the images have {n_channels} channels.")
    if flag == "--std" and np.any(values <= 0):
        raise CLIError(f"--std values must be > 0. Got {text!r}.")
    return values


def _factory_module(spec: str):
    import torch

    if ":" not in spec:
        raise CLIError(f"--model {spec!r} must be PACKAGE.MODULE:FACTORY, path/to/file.py:FACTORY, an .onnx file "
                       f"or a .pt/.pth file.")
    where, _, name = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise CLIError(f"--model {spec!r}: no such file {path}.")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise CLIError(f"--model {spec!r}: cannot import module {where!r} ({exc}).") from exc
    factory = getattr(module, name, None)
    if factory is None:
        raise CLIError(f"--model {spec!r}: module {where!r} has no attribute {name!r}.")
    if not callable(factory):
        raise CLIError(f"--model {spec!r}: {name!r} is a {type(factory).__name__}, not a callable factory; it must "
                       f"be a function or class that returns a torch.nn.Module when called without arguments.")
    net = factory()
    if not isinstance(net, torch.nn.Module):
        raise CLIError(f"--model {spec!r}: {name}() returned a {type(net).__name__}, not a torch.nn.Module.")
    return net


def _load_checkpoint(module, path: Path, allow_pickle: bool) -> None:
    import pickle

    import torch

    if not path.is_file():
        raise CLIError(f"--checkpoint {path}: no such file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as exc:
        raise CLIError(f"--checkpoint {path} holds more than tensors, and loading it would run pickled code. If you "
                       f"trust the file, pass --allow-pickle; better, save model.state_dict() instead.") from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise CLIError(f"--checkpoint {path}: cannot read it with torch.load ({exc}).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CLIError(f"--checkpoint {path} holds a {type(state).__name__}; expected a state_dict.")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise CLIError(f"--checkpoint {path} does not fit the factory's module: {exc}") from exc


def _pickled_module(path: Path, allow_pickle: bool):
    import torch

    if not path.is_file():
        raise CLIError(f"--model {path}: no such file.")
    if not allow_pickle:
        raise CLIError(f"--model {path}: a whole pickled module can only be loaded by running pickled code. If you "
                       f"trust the file, pass --allow-pickle; otherwise pass --model PACKAGE.MODULE:FACTORY "
                       f"--checkpoint {path} with a state_dict.")
    try:
        net = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CLIError(f"--model {path}: cannot load it ({type(exc).__name__}: {exc}).") from exc
    if not isinstance(net, torch.nn.Module):
        raise CLIError(f"--model {path} holds a {type(net).__name__}, not a torch.nn.Module; for a state_dict use "
                       f"--model PACKAGE.MODULE:FACTORY --checkpoint {path}.")
    return net


def _onnx_model(path: Path, args, mean, std):
    if not path.is_file():
        raise CLIError(f"--model {path}: no such file.")
    try:
        from .adapters import ONNX
    except ImportError:
        try:
            from .adapters.onnx_runtime import ONNX
        except ImportError as exc:
            raise CLIError(f"--model {path}: ONNX models need perturbx.adapters.ONNX and onnxruntime "
                           f"(pip install onnxruntime): {exc}") from exc
    try:
        onnx = ONNX(str(path), batch_size=args.batch_size)
    except ImportError as exc:
        raise CLIError(f"--model {path}: {exc}") from exc
    except Exception as exc:
        raise CLIError(f"--model {path}: cannot open it with ONNX Runtime ({type(exc).__name__}: {exc}).") from exc
    if mean is None and std is None and args.output == "logits":
        return onnx
    from .adapters import Callable

    def predict(batch: np.ndarray) -> np.ndarray:
        x = batch
        if mean is not None:
            x = x - mean.reshape(-1, 1, 1)
        if std is not None:
            x = x / std.reshape(-1, 1, 1)
        scores = onnx.predict(x.astype(np.float32))
        if args.output == "probs":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores /= scores.sum(axis=1, keepdims=True)
        return scores

    return Callable(predict, batch_size=args.batch_size)


def _normalised_class():
    import torch

    class Normalised(torch.nn.Module):
        """``module((x - mean) / std)``: the images stay in [0, 1] for the explainers and the report."""

        def __init__(self, module, mean, std) -> None:
            super().__init__()
            self.module = module
            self.register_buffer("mean", torch.as_tensor(0.0 if mean is None else mean).reshape(-1, 1, 1))
            self.register_buffer("std", torch.as_tensor(1.0 if std is None else std).reshape(-1, 1, 1))

        def forward(self, x):
            return self.module((x - self.mean) / self.std)

    return Normalised


def _Normalised(module, mean, std):  # noqa: N802 - builds the class lazily, so that torch stays optional
    return _normalised_class()(module, mean, std)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
