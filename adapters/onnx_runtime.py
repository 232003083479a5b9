"""Adapter for an ONNX model run by ONNX Runtime (extra ``onnx``)."""

from __future__ import annotations

import os

import numpy as np

from perturbx._utils import check_sample_shape, layout_mismatch

from .base import Adapter

_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_ACCELERATORS = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider")
#: SessionOptions settings carried over when the adapter is pickled (SessionOptions itself cannot be)
_OPTION_FIELDS = ("intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
                  "enable_cpu_mem_arena", "enable_mem_pattern", "use_deterministic_compute", "log_severity_level")


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError("perturbx.adapters.ONNX needs ONNX Runtime: pip install 'perturbx[onnx]' "
                          "(or onnxruntime-gpu for CUDA)") from exc
    return onnxruntime


class ONNX(Adapter):
    """Run an ONNX model with ONNX Runtime.

    The input name, the sample shape and the dtype are read from the model. A model with
    a dynamic batch axis gets up to ``batch_size`` rows per run; a model exported with a
    fixed batch of ``k`` rows is run ``k`` rows at a time (the last run padded with copies
    of its final row, whose scores are dropped), so a fixed batch of 1 works one row per run.

    Parameters
    ----------
    path_or_session : str, os.PathLike, bytes or onnxruntime.InferenceSession
        An ``.onnx`` file, the serialized model, or a session already made.
    batch_size : int, default 64
        Rows per call from the explainer (and per run for a dynamic-batch model).
    input_layout : {"CHW", "HWC", "HW"}, default "CHW"
        Layout of one sample as the model takes it. A model whose declared sample shape
        looks like the other channel order (``(224, 224, 3)`` for "CHW") is refused.
    providers : list of str, optional
        ONNX Runtime execution providers, in order of preference. By default the available
        accelerators (CUDA, ROCm, DirectML) and then the CPU. Not allowed with a session.
    output_name : str, sequence of str or "*", optional
        Output holding the scores ``(N, n_classes)``; the first output by default. Several
        names (or ``"*"`` for all of them) return a dict name -> array, for a model with
        several outputs (a detector's boxes, scores and labels), read by a
        :mod:`perturbx.targets` target.
    input_name : str, optional
        Input to feed, for a model with several inputs; the only input by default.
    session_options : onnxruntime.SessionOptions, optional
        Passed to ``InferenceSession`` (threads, graph optimisations). When the adapter is
        pickled (joblib or Dask workers) the settings in ``_OPTION_FIELDS`` travel with it.
    """

    def __init__(self, path_or_session, *, batch_size: int = 64, input_layout: str = "CHW",
                 providers: list[str] | None = None, output_name: str | list[str] | None = None,
                 input_name: str | None = None, session_options=None) -> None:
        super().__init__(batch_size=batch_size, input_layout=input_layout)
        self._source = _check_source(path_or_session, providers)
        self.providers = providers
        self._session_options = session_options
        self.session = path_or_session if self._source is None else self._open()
        self._bind(input_name, output_name)

    def _open(self):
        ort = _ort()
        providers = self.providers
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in _ACCELERATORS if p in available] + ["CPUExecutionProvider"]
        source = self._source if isinstance(self._source, bytes) else os.fspath(self._source)
        return ort.InferenceSession(source, sess_options=self._session_options, providers=providers)

    def _bind(self, input_name: str | None, output_name: str | list[str] | None) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if input_name is None and len(inputs) != 1:
            raise ValueError(f"The ONNX model has {len(inputs)} inputs {sorted(inputs)}; pass input_name= to "
                             f"say which one takes the images.")
        name = input_name if input_name is not None else next(iter(inputs))
        if name not in inputs:
            raise ValueError(f"The 'input_name' parameter of ONNX must be one of {sorted(inputs)}. Got {name!r}.")
        if output_name == "*":
            output_name = list(outputs)
        wanted = [output_name] if isinstance(output_name, str) else list(output_name or [])
        if any(name not in outputs for name in wanted) or (output_name is not None and not wanted):
            raise ValueError(f"The 'output_name' parameter of ONNX must be one of {outputs}, a list of them or '*'. "
                             f"Got {output_name!r}.")
        meta = inputs[name]
        if meta.type not in _DTYPES:
            raise TypeError(f"The ONNX model's input {name!r} has type {meta.type}; ONNX adapts float, "
                            f"double and float16 image inputs only.")
        shape = list(meta.shape)
        if len(shape) != self.layout.ndim + 1:
            raise ValueError(f"The ONNX model's input {name!r} has shape {shape} ({len(shape)} axes) but "
                             f"input_layout={self.input_layout!r} needs {self.layout.ndim + 1} (batch first); "
                             f"set input_layout to the model's layout.")
        self.input_name, self.output_name = name, output_name
        self._input_dtype = _DTYPES[meta.type]
        if self._input_dtype == np.float64:
            self.dtype = np.float64
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        dims = shape[1:]
        self._sample_shape = None
        if all(isinstance(d, int) and d > 0 for d in dims):
            self._sample_shape = check_sample_shape(dims, self.layout, "ONNX")
            guess = layout_mismatch(self._sample_shape, self.layout)
            if guess is not None:
                raise ValueError(f"The ONNX model's input {name!r} takes samples of shape {self._sample_shape}, which "
                                 f"looks like input_layout={guess!r}, but the adapter's input_layout is "
                                 f"{self.input_layout!r}; make it with ONNX(..., input_layout={guess!r}).")

    @property
    def sample_shape(self) -> tuple[int, ...] | None:
        return self._sample_shape

    def _run(self, rows: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """One session run: the output asked for, or a dict of the named outputs."""
        if self.output_name is None or isinstance(self.output_name, str):
            names = None if self.output_name is None else [self.output_name]
            return np.asarray(self.session.run(names, {self.input_name: rows})[0])
        values = self.session.run(list(self.output_name), {self.input_name: rows})
        return {name: np.asarray(v) for name, v in zip(self.output_name, values, strict=True)}

    def _forward(self, batch: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        batch = np.asarray(batch, dtype=self._input_dtype)
        k = self.fixed_batch
        if k is None:
            return self._run(batch)
        parts = []
        for start in range(0, len(batch), k):
            rows = batch[start:start + k]
            pad = k - len(rows)
            if pad:
                rows = np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)])
            out = self._run(rows)
            parts.append({n: v[:k - pad] for n, v in out.items()} if isinstance(out, dict) else out[:k - pad])
        if not parts:
            return np.zeros((0, 1))
        if isinstance(parts[0], dict):
            return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
        return np.concatenate(parts)

    def __getstate__(self) -> dict:
        if self._source is None:
            raise TypeError("An ONNX adapter made from an InferenceSession cannot be pickled (for joblib or Dask "
                            "workers); make it from the .onnx path or the model bytes instead.")
        state = self.__dict__.copy()
        state["session"] = None
        options = self._session_options
        state["_session_options"] = None if options is None else {f: getattr(options, f) for f in _OPTION_FIELDS}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if isinstance(self._session_options, dict):
            options = _ort().SessionOptions()
            for name, value in self._session_options.items():
                setattr(options, name, value)
            self._session_options = options
        self.session = self._open()

    def __repr__(self) -> str:
        source = "session" if self._source is None else (
            f"<{len(self._source)} bytes>" if isinstance(self._source, bytes) else repr(os.fspath(self._source)))
        return (f"ONNX({source}, batch_size={self.batch_size}, input_layout={self.input_layout!r}, "
                f"input={self.input_name!r}, fixed_batch={self.fixed_batch})")


def _check_source(path_or_session, providers):
    """The path or bytes to (re)open, or None for a session given as is."""
    if isinstance(path_or_session, (str, os.PathLike)):
        if not os.path.isfile(path_or_session):
            raise ValueError(f"The 'path_or_session' parameter of ONNX must be an existing .onnx file, model bytes "
                             f"or an onnxruntime.InferenceSession. No file at {os.fspath(path_or_session)!r}.")
        return path_or_session
    if isinstance(path_or_session, (bytes, bytearray)):
        return bytes(path_or_session)
    if hasattr(path_or_session, "run") and hasattr(path_or_session, "get_inputs"):
        if providers is not None:
            raise ValueError("The 'providers' parameter of ONNX applies when ONNX opens the model; a session "
                             "already has its providers. Pass the path instead, or leave providers=None.")
        return None
    raise TypeError(f"The 'path_or_session' parameter of ONNX must be a path, model bytes or an "
                    f"onnxruntime.InferenceSession. Got {type(path_or_session).__name__} instead.")
