"""``perturbx.Amortized``: Shapley values of a grid of patches in one forward pass, after training once."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from perturbx._utils import check_float, check_int, check_int_tuple
from perturbx.adapters import Adapter, as_adapter
from perturbx.engine import predict_in_batches
from perturbx.explainer import Explainer, Request, _reference_output
from perturbx.explanation import Explanation
from perturbx.renderers import BlendRenderer
from perturbx.samplers.coalitions import CoalitionChunk, SegmentMap
from perturbx.segmentation import paint
from perturbx.targets import BindInfo, Class, Target

from . import checkpoint as ckpt
from .calibration import Calibration
from .data import baseline_of, holdout_split, training_images
from .fitting import FitPlan, run_fit, to_chw_tensor
from .game import grid_segments, normalise, residual_values, sample_coalitions
from .identity import Identity, baseline_spec, check_amortizable_baseline, target_spec
from .network import Ensemble, ExplainerUNet
from .train import raw_values

__all__ = ["Amortized"]

#: keys a saved explainer must hold
SAVED_KEYS = ("identity", "config", "state_dict", "scale", "calibration", "training_log", "probe", "probe_scores")


class Amortized(Explainer):
    """Amortised Shapley values (FastSHAP, Jethani et al. 2022): train once, then one forward pass per map.

    ``fit(model, data)`` trains a small U-Net (:class:`~perturbx.amortized.network.ExplainerUNet`)
    to output the Shapley values of a ``players`` grid of patches for every trained class
    at once, with the model as a black box: for each training image it queries the model
    on ``coalitions`` coalitions drawn from the Shapley kernel in complementary pairs (the
    patches outside a coalition replaced by the baseline, exactly as KernelSHAP does),
    and minimises KernelSHAP's weighted least-squares objective with the efficiency
    constraint enforced exactly by additive normalisation. Held-out images are explained
    by KernelSHAP (``validation_samples`` queries each) to pick the best epoch and stop
    early, and to calibrate the error estimate.

    ``explain(model, x, target)`` then costs two model queries, ``f(x)`` and
    ``f(baseline)``, and one forward pass of the network; it returns the fields of a
    :class:`~perturbx.KernelSHAP` explanation, with ``sum(segment_weights) = f(x) -
    f(baseline)`` exactly.

    Parameters
    ----------
    players : int or (rows, cols), default (4, 4)
        The grid of patches whose Shapley values are explained
        (:class:`perturbx.segmentation.Grid`). Finer grids need more training images for the
        same agreement with KernelSHAP (benchmarks/results/amortized.md).
    baseline : float, "mean", "blur" or array, default 0.0
        What a hidden patch becomes, as for :class:`~perturbx.KernelSHAP` (``"mean"``: each
        patch's mean colour). It must be reproducible, so ``"noise"`` and callables are
        refused.
    target : None, int, list of int or perturbx.targets.Class, default None
        The classes the network explains (one output channel each): None is every class of
        the model. A ``Class`` may read log-odds (``score="log_odds"``) or a named output.
    coalitions : int, default 128
        Coalitions queried per training image (even: complementary pairs).
    n_images : int, default 3000
        Training images drawn when ``fit`` gets ``data="shapes"``.
    validation : int, default 32
        Held-out images (taken from ``data``) explained by KernelSHAP for the early stop
        and the error calibration.
    validation_samples : int, default 1024
        KernelSHAP's ``n_samples`` on each validation image.
    epochs, patience : int, default 20, 5
        Most epochs; stop after ``patience`` epochs without a better validation Pearson.
    batch_size : int, default 32
        Images per optimisation step.
    learning_rate, weight_decay : float, default 2e-3, 0.0
        AdamW's, with a cosine schedule over ``epochs``.
    top_class_weight : float, default 1.0
        Weight of each training image's top class (its largest score) in the loss, relative
        to its other trained classes: 1 is FastSHAP's objective, where every class counts
        alike. Larger values spend the network's capacity on the class usually explained
        (benchmarks/results/amortized.md measures 10 on the demo CNN). Distillation
        (``distil``) weights its loss the same way.
    width, depth : int, default 16, 4
        The U-Net's first-stage channels and number of stages.
    members : int, default 1
        Networks trained on the same queried games, each from its own seed; the explainer
        averages their values (:class:`~perturbx.amortized.network.Ensemble`; efficiency stays
        exact). No extra queries: training time and the explainer's forward pass grow with
        it (benchmarks/results/amortized.md measures three members). A checkpoint resumed with
        more members trains only the new ones.
    distil : int, default 0
        With ``members >= 2``: epochs of distilling the ensemble into one network (started from
        the first member, fitted to the ensemble's values on the training images, no queries;
        :mod:`perturbx.amortized.distil`), so that explaining costs one forward pass again.
    max_queries : int, optional
        Most model queries of ``fit`` (identity query, validation and training); training
        images beyond what it buys are not used. Too small a budget is a QueryBudgetError.
    checkpoint : str or os.PathLike, optional
        File written after each stage, block of queries and epoch; a ``fit`` with the same
        settings, data, model and ``random_state`` resumes from it. After the fit it is also
        a saved explainer (:meth:`load`).
    verify : int, default 0
        Queries each explanation spends measuring its own error (even, >= 4): fresh
        coalitions of the residual game give an unbiased estimate of the squared distance
        to the Shapley values (:func:`perturbx.amortized.game.residual_values`).
    random_state : int or None, default 0
        Seed of everything random in ``fit`` (coalitions, validation split, initial weights,
        shuffles) and of ``verify``'s coalitions.
    progress : bool or None
    device : str, default "cpu"
        Where the explainer network runs (``"cuda"`` on a GPU).

    Notes
    -----
    Extras of an explanation: ``segments`` (H, W), ``segment_weights`` (T, M),
    ``base_value`` (T,), ``errors`` (T, M), ``exact`` (False), ``estimate`` (T,)
    ("amortized"), ``estimated_error`` (T,): the relative error ``||phi - shapley|| /
    ||phi - mean(phi)||`` (the units of :func:`perturbx.engine.relative_error`, which
    ``errors`` reproduces), ``error_source`` ("calibration" or "verify") and
    ``efficiency_gap`` (T,): how far the network's raw values were from summing to
    ``f(x) - f(baseline)`` before the normalisation (large on images unlike the training data).
    """

    def __init__(self, players: int | tuple[int, int] = (4, 4), *, baseline: object = 0.0, target: object = None,
                 coalitions: int = 128, n_images: int = 3000, validation: int = 32, validation_samples: int = 1024,
                 epochs: int = 20, patience: int = 5, batch_size: int = 32, learning_rate: float = 2e-3,
                 weight_decay: float = 0.0, top_class_weight: float = 1.0, width: int = 16, depth: int = 4,
                 members: int = 1, distil: int = 0, max_queries: int | None = None,
                 checkpoint: str | os.PathLike | None = None, verify: int = 0, random_state: int | None = 0,
                 progress: bool | None = None, device: str = "cpu") -> None:
        owner = "Amortized"
        self.players = check_int_tuple(players, "players", owner)
        self.baseline = baseline
        self._baseline_spec = check_amortizable_baseline(baseline)
        self.target = target
        self._target_spec = target_spec(target)
        self.coalitions = check_int(coalitions, "coalitions", owner, minimum=2)
        if self.coalitions % 2:
            raise ValueError(f"The 'coalitions' parameter of Amortized must be even (complementary pairs). "
                             f"Got {coalitions}; use {coalitions + 1}.")
        self.n_images = check_int(n_images, "n_images", owner, minimum=2)
        self.validation = check_int(validation, "validation", owner, minimum=2)
        self.validation_samples = check_int(validation_samples, "validation_samples", owner, minimum=4)
        m = self.players[0] * self.players[1]
        if self.validation_samples < m + 2:
            raise ValueError(f"The 'validation_samples' parameter of Amortized must be at least players + 2 = {m + 2} "
                             f"(KernelSHAP's reference needs that many coalitions for {m} players). Got "
                             f"{validation_samples}; raise it (1024 is a good value) or use fewer players.")
        self.epochs = check_int(epochs, "epochs", owner)
        self.patience = check_int(patience, "patience", owner)
        self.batch_size = check_int(batch_size, "batch_size", owner, minimum=2)
        self.learning_rate = check_float(learning_rate, "learning_rate", owner, low=0.0, high=float("inf"),
                                         low_open=True, high_open=True)
        self.weight_decay = check_float(weight_decay, "weight_decay", owner, low=0.0, high=float("inf"),
                                        high_open=True)
        self.top_class_weight = check_float(top_class_weight, "top_class_weight", owner, low=0.0,
                                            high=float("inf"), low_open=True, high_open=True)
        self.width = check_int(width, "width", owner)
        self.depth = check_int(depth, "depth", owner)
        self.members = check_int(members, "members", owner)
        self.distil = check_int(distil, "distil", owner, minimum=0)
        if self.distil and self.members < 2:
            raise ValueError(f"The 'distil' parameter of Amortized distils an ensemble into one network and needs "
                             f"members >= 2. Got distil={distil} with members={members}; pass members=3 (say), or "
                             f"distil=0.")
        self.max_queries = None if max_queries is None else check_int(max_queries, "max_queries", owner)
        self.checkpoint = checkpoint
        self.verify = check_int(verify, "verify", owner, minimum=0)
        if self.verify and (self.verify < 4 or self.verify % 2):
            raise ValueError(f"The 'verify' parameter of Amortized must be 0 or an even int >= 4 (pairs of "
                             f"coalitions, at least two). Got {verify!r}.")
        if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, int)
                                         or random_state < 0):
            raise ValueError(f"The 'random_state' parameter of Amortized must be a non-negative int or None (a "
                             f"fit must be repeatable to resume from a checkpoint). Got {random_state!r}.")
        self.random_state = random_state
        self.progress = progress
        self.device = device
        self._fitted: dict[str, Any] | None = None

    # -- training -------------------------------------------------------------------------------------------
    def fit(self, model: object, data: object = "shapes") -> Amortized:
        """Train the explainer network for ``model`` on ``data``; returns ``self``.

        Parameters
        ----------
        model : Adapter, torch.nn.Module or callable
            The model, as for any explainer (any adapter, a model server included).
        data : ndarray (N, *sample_shape), str or os.PathLike, default "shapes"
            Training images: an array, a folder of image files, or ``"shapes"`` (``n_images``
            images of :func:`perturbx.datasets.make_shapes`). ``validation`` of them (a
            seeded random choice) are held out. An array passed here is never changed (its
            training rows are copied); perturbx's own arrays are split without a copy.

        Returns
        -------
        Amortized
            Fitted: ``training_log_`` (queries, seconds, images, epochs, validation Pearson
            per epoch, why it stopped), ``identity_``, ``calibration_``.
        """
        adapter = as_adapter(model)
        seed = int(self.random_state) if self.random_state is not None else int(
            np.random.default_rng().integers(2 ** 31))
        n_draw = self.n_images + self.validation
        images = training_images(data, adapter, n_draw, seed)
        if len(images) < self.validation + 2:
            raise ValueError(f"The 'data' argument of Amortized.fit has {len(images)} images; it needs at least "
                             f"validation + 2 = {self.validation + 2} (validation={self.validation}).")
        train, val = holdout_split(images, data, self.validation, seed)
        hw = adapter.layout.spatial_shape(images[0].shape)
        plan = FitPlan(self, adapter, train, val, seed, grid_segments(hw, self.players))
        self._set_fitted(run_fit(plan))
        if self.checkpoint is not None:  # the finished checkpoint is also a saved explainer
            ckpt.write({**{k: v for k, v in ckpt.read(self.checkpoint).items() if k not in ckpt.HEADER},
                        **self._blob()}, self.checkpoint)
        return self

    def _set_fitted(self, result: dict[str, Any]) -> None:
        result["segments"] = grid_segments(self._hw(result["identity"]), result["identity"].players)
        if isinstance(self._baseline_spec, np.ndarray):
            result["baseline_array"] = self._baseline_spec
        self._fitted = result

    @staticmethod
    def _hw(identity: Identity) -> tuple[int, int]:
        from perturbx._utils import Layout

        return Layout(identity.layout).spatial_shape(identity.sample_shape)

    @property
    def identity_(self) -> Identity:
        """What the explainer was trained for (model output, input shape, classes, players, baseline)."""
        return self._state()["identity"]

    @property
    def calibration_(self) -> Calibration:
        """The error model fitted on the validation images."""
        return self._state()["calibration"]

    @property
    def training_log_(self) -> dict[str, Any]:
        """Queries, seconds, images and epochs of the fit, and the validation Pearson of every epoch."""
        return self._state()["training_log"]

    def _state(self) -> dict[str, Any]:
        if self._fitted is None:
            raise ValueError("This Amortized explainer is not trained: call fit(model, data) or "
                             "Amortized.load(path) first.")
        return self._fitted

    # -- explaining -----------------------------------------------------------------------------------------
    def _check_sample(self, adapter: Adapter, x: object) -> np.ndarray:
        x = adapter.check_sample(x)
        self.identity_.check_sample(x, adapter.layout.name)
        return x

    def _check_target(self, target: Target) -> None:
        self.identity_.check_target(target)

    def _explain(self, request: Request) -> tuple[np.ndarray, dict[str, Any]]:
        return self._explain_requests([request])[0]

    def _shares_batches(self) -> bool:
        return True

    def _explain_many(self, adapter: Adapter, xs: list[np.ndarray], targets: list[object]) -> list[Explanation]:
        """Reference queries in one batch, baseline queries in one batch, one network pass per 64 images."""
        import time

        start, before = time.perf_counter(), adapter.n_queries
        requests = self._requests(adapter, xs, targets)
        results = self._explain_requests(requests)
        elapsed, each = time.perf_counter() - start, (adapter.n_queries - before) / len(requests)
        return [self._explanation(r, maps, extras, round(each), elapsed / len(requests))
                for r, (maps, extras) in zip(requests, results, strict=True)]

    def _explain_requests(self, requests: list[Request]) -> list[tuple[np.ndarray, dict[str, Any]]]:
        """Maps and extras of bound requests: the baselines' query, the network, the error estimate."""
        state, identity = self._state(), self.identity_
        adapter, trained = requests[0].adapter, identity.trained_target()
        columns = [identity.check_bound(r.target) for r in requests]
        spec = baseline_spec(identity.baseline, state.get("baseline_array"))
        bases = np.stack([baseline_of(spec, r.x, adapter, state["segments"]) for r in requests])
        empty = predict_in_batches(adapter, adapter.backend.asarray(bases, adapter.dtype), trained)
        full = np.stack([trained.scores(r.output)[0] for r in requests])
        images = to_chw_tensor(np.stack([r.x for r in requests]), adapter, self.device)
        raw = raw_values(state["network"], images, state["scale"])  # the one forward pass of the network
        phi, gaps = normalise(raw, full - empty), raw.sum(-1) - (full - empty)
        out = []
        for i, (r, cols) in enumerate(zip(requests, columns, strict=True)):
            values, extras = phi[i, cols], self._extras(phi[i, cols], gaps[i, cols], empty[i, cols])
            if self.verify:
                extras.update(self._verify(r, bases[i], values, empty[i, cols]))
            out.append((paint(values, state["segments"]), extras))
        return out

    def _extras(self, values: np.ndarray, gaps: np.ndarray, base_value: np.ndarray) -> dict[str, Any]:
        """KernelSHAP's fields, with the calibrated error estimate spread evenly over the players."""
        m = values.shape[-1]
        rel = self.calibration_.relative_error(values, gaps)
        spread = np.linalg.norm(values - values.mean(-1, keepdims=True), axis=-1)
        errors = np.repeat((np.where(np.isfinite(rel), rel * spread, np.inf) / np.sqrt(m))[:, None], m, axis=1)
        return {"segments": self._state()["segments"], "segment_weights": values, "base_value": base_value,
                "errors": errors, "exact": False, "estimate": np.array(["amortized"] * len(values)),
                "estimated_error": rel, "error_source": "calibration", "efficiency_gap": gaps}

    def _verify(self, request: Request, base: np.ndarray, values: np.ndarray, base_value: np.ndarray
                ) -> dict[str, Any]:
        """``verify`` queries on fresh kernel-drawn pairs: the measured error replaces the calibrated one.

        ``estimated_error`` is ``sqrt(max(sum_j squared_j, 0)) / spread`` from the unbiased
        per-player squares of :func:`~perturbx.amortized.game.residual_values`; ``errors``
        (T, M) are ``sqrt(max(squared_j, 0))`` (clipped one by one, so their squares sum to at
        least the total).
        """
        adapter, segments = request.adapter, self._state()["segments"]
        segmap = SegmentMap(segments)
        z = sample_coalitions(request.rng, self.verify // 2, segmap.n_segments)
        masks = CoalitionChunk(z, None, None, segmap).materialize(adapter.backend, adapter.dtype)
        batch = BlendRenderer(request.x, base, adapter.layout, adapter.backend, adapter.dtype).render(masks)
        v = predict_in_batches(adapter, batch, request.target)
        residual = v - base_value[None, :] - z.astype(np.float64) @ values.T
        _, squared = residual_values(z, residual)
        total = np.sqrt(np.maximum(squared.sum(-1), 0.0))
        spread = np.linalg.norm(values - values.mean(-1, keepdims=True), axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(spread > 0, total / spread, np.where(total > 0, np.inf, 0.0))
        return {"errors": np.sqrt(np.maximum(squared, 0.0)), "estimated_error": rel, "error_source": "verify",
                "verify_queries": len(z)}

    # -- saving, loading, checking the model -----------------------------------------------------------------
    def _blob(self) -> dict[str, Any]:
        state = self._state()
        config = {k: v for k, v in self.get_params().items()
                  if k not in ("players", "baseline", "target", "checkpoint", "verify", "progress", "device")}
        blob = {"identity": state["identity"].to_dict(), "config": config,
                "state_dict": {k: v.cpu() for k, v in state["network"].state_dict().items()},
                "scale": float(state["scale"]), "calibration": state["calibration"].to_dict(),
                "training_log": state["training_log"], "probe": state["probe"], "probe_scores": state["probe_scores"]}
        if isinstance(self._baseline_spec, np.ndarray):
            blob["baseline_array"] = self._baseline_spec
        return blob

    def save(self, path: str | os.PathLike) -> None:
        """Write the trained explainer to ``path`` (``torch.save``, atomic; read it back with :meth:`load`).

        The file holds the network's weights, the value scale, the error calibration, the
        training log and the :attr:`identity_` (input shape and layout, the model's classes,
        the classes explained, players, baseline), plus one validation image and the model's
        scores on it (:meth:`check_model`).
        """
        ckpt.write(self._blob(), path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, verify: int = 0, progress: bool | None = None,
             device: str = "cpu") -> Amortized:
        """An explainer saved by :meth:`save` (or the checkpoint of a finished ``fit``).

        Read with ``torch.load(weights_only=True)``. Raises ValueError naming the file and
        what is wrong when it is missing, unreadable (truncated, corrupt), not an ``Amortized``
        file, the checkpoint of an unfinished fit, or holds weights that do not fit the network
        its identity describes.
        """
        raw = ckpt.read(path, needs=SAVED_KEYS)
        blob = {k: (v if k == "state_dict" else ckpt.from_blob(v)) for k, v in raw.items()}
        try:
            identity = Identity.from_dict(blob["identity"])
            config = dict(blob["config"])
            target = Class(list(identity.labels), output=identity.output, score=identity.score)
            baseline = baseline_spec(identity.baseline, blob.get("baseline_array"))
            explainer = cls(identity.players, baseline=baseline, target=target, verify=verify, progress=progress,
                            device=device, **config)
            network = explainer._network(identity)
            network.load_state_dict(blob["state_dict"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"Cannot load an Amortized explainer from {str(path)!r}: its contents do not describe "
                             f"a network that fits its weights ({type(exc).__name__}: {exc}). The file may be "
                             f"corrupt or from another version; train and save it again.") from exc
        explainer._set_fitted({"identity": identity, "network": network.eval(), "scale": float(blob["scale"]),
                               "calibration": Calibration.from_dict(blob["calibration"]),
                               "training_log": blob["training_log"], "probe": blob["probe"],
                               "probe_scores": np.asarray(blob["probe_scores"]),
                               "baseline_array": blob.get("baseline_array")})
        return explainer

    def _network(self, identity: Identity) -> ExplainerUNet | Ensemble:
        """The network a saved explainer's weights fit: one U-Net, or the ensemble of ``members``."""
        if self.members == 1 or self.distil:
            return self._unet(identity)
        return Ensemble([self._unet(identity) for _ in range(self.members)])

    def _unet(self, identity: Identity) -> ExplainerUNet:
        """One explainer network (fresh weights from torch's global RNG) for ``identity``, on ``device``."""
        from perturbx._utils import Layout

        c, h, w = Layout(identity.layout).to_chw(identity.sample_shape)
        return ExplainerUNet(c, len(identity.labels), (h, w), identity.players, width=self.width,
                             depth=self.depth).to(self.device)

    def check_model(self, model: object, *, rtol: float = 1e-4, atol: float = 1e-6) -> None:
        """Check with one query that ``model`` is the model the explainer was trained for.

        The model's scores of the trained classes on a stored validation image must equal
        those recorded at training (to ``rtol``, ``atol``); a retrained or replaced model
        that returns as many classes passes every other check but not this one.

        Raises
        ------
        ValueError
            The scores differ (the message gives the largest difference).
        """
        state, adapter = self._state(), as_adapter(model)
        probe = self._check_sample(adapter, state["probe"])
        raw = _reference_output(adapter, probe)
        target = Class(list(self.identity_.labels), output=self.identity_.output, score=self.identity_.score)
        scores = target.bind(raw, BindInfo(adapter.layout.spatial_shape(probe.shape), adapter._model_name())
                             ).scores(raw)[0]
        if not np.allclose(scores, state["probe_scores"], rtol=rtol, atol=atol):
            worst = float(np.max(np.abs(scores - state["probe_scores"])))
            raise ValueError(f"The model is not the one this Amortized explainer was trained for: its scores on "
                             f"the stored validation image differ by up to {worst:.3g} (rtol={rtol}, atol={atol}). "
                             f"Train an explainer for this model.")
