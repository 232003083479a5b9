"""``Amortized.fit``: the queries, the validation reference, the training and the checkpoints.

A fit goes through four stages, each saved to the checkpoint (when one is given) as it
completes, so a killed fit resumes where it stopped, with the same result as if it had
never stopped:

1. *identity*: one query (the first validation image) binds the target and fixes what
   the explainer is for (:class:`~perturbx.amortized.identity.Identity`);
2. *validation*: ``f(x)`` and ``f(baseline)`` of the held-out images, then KernelSHAP on
   each (``validation_samples`` queries, same players, baseline and top trained class);
3. *queries*: for each training image ``f(x)``, ``f(baseline)`` and ``coalitions``
   coalitions from the Shapley kernel in complementary pairs, in blocks of
   :data:`BLOCK_IMAGES` images (the checkpoint is written after each block);
4. *training* (:class:`~perturbx.amortized.train.Trainer`), checkpointed every epoch,
   then the error calibration on the validation images.

The query budget (``max_queries``) is split before the first query: the identity query
and the validation come first, the rest buys training images (``2 + coalitions`` queries
each), and a budget that cannot buy two of them is refused at once.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perturbx.adapters import Adapter
from perturbx.engine import progress_enabled
from perturbx.errors import QueryBudgetError
from perturbx.explainer import _reference_output
from perturbx.targets import BindInfo, Class

from . import checkpoint as ckpt
from .calibration import Calibration
from .data import GameTable, baseline_of, image_coalitions, query_games
from .distil import distil
from .game import normalise
from .identity import Identity, baseline_description
from .network import Ensemble, ExplainerUNet
from .train import TrainConfig, Trainer, Validation, raw_values

__all__ = ["BLOCK_IMAGES", "FitPlan", "run_fit"]

#: training images queried between two checkpoint writes
BLOCK_IMAGES = 256


@dataclass
class FitPlan:
    """Everything ``fit`` decided before the first query."""

    owner: Any                      # the Amortized explainer (its parameters)
    adapter: Adapter
    images: np.ndarray              # training images (N, *sample_shape)
    val_images: np.ndarray          # validation images (n, *sample_shape)
    seed: int
    segments: np.ndarray
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return int(self.segments.max()) + 1

    def queries_needed(self) -> tuple[int, int]:
        """(queries of identity and validation, queries per training image)."""
        o = self.owner
        return 1 + len(self.val_images) * (2 + o.validation_samples), 2 + o.coalitions


def plan_budget(plan: FitPlan) -> int:
    """Training images the budget buys (all of them without ``max_queries``); QueryBudgetError if fewer than 2."""
    fixed, per_image = plan.queries_needed()
    budget = plan.owner.max_queries
    if budget is None:
        return len(plan.images)
    n = min(len(plan.images), (budget - fixed) // per_image)
    if n < 2:
        raise QueryBudgetError(f"The 'max_queries' parameter of Amortized is {budget}: validation takes {fixed} "
                               f"queries and each training image {per_image}, so it buys {max(n, 0)} training "
                               f"images; raise it to at least {fixed + 2 * per_image} (far more for a useful "
                               f"explainer), or lower validation / validation_samples / coalitions.")
    return n


def fingerprint(plan: FitPlan, n_train: int) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings that shape the result and the data."""
    o = plan.owner
    digest = hashlib.sha256()
    for block in (plan.images[:n_train], plan.val_images):
        digest.update(np.ascontiguousarray(block))  # the array's own buffer: the same bytes, without a copy
    settings = {k: o.get_params()[k] for k in ("players", "coalitions", "validation", "validation_samples",
                                               "epochs", "patience", "batch_size", "learning_rate",
                                               "weight_decay", "width", "depth")}
    if o.top_class_weight != 1.0:  # only then: checkpoints written before the option existed still resume
        settings["top_class_weight"] = o.top_class_weight
    return {"settings": repr(settings), "baseline": repr(baseline_description(o._baseline_spec)),
            "target": repr(o._target_spec), "seed": plan.seed, "n_train": n_train, "data": digest.hexdigest()}


def bind_identity(plan: FitPlan) -> tuple[Identity, np.ndarray]:
    """One query: the first validation image's output binds the target. Returns the identity and that output."""
    adapter, o = plan.adapter, plan.owner
    labels, score, output = o._target_spec
    raw = _reference_output(adapter, plan.val_images[0])
    info = BindInfo(adapter.layout.spatial_shape(plan.val_images[0].shape), adapter._model_name())
    probe = Class(0, output=output, score=score).bind(raw, info)  # checks the output and counts the classes
    labels = list(range(probe.n_classes)) if labels is None else labels
    bound = Class(labels, output=output, score=score).bind(raw, info)
    identity = Identity(tuple(plan.val_images[0].shape), adapter.layout.name, int(bound.n_classes),
                        tuple(labels), score, output, tuple(o.players), baseline_description(o._baseline_spec),
                        type(adapter).__name__, bound.probabilities if score == "log_odds" else None)
    return identity, bound.scores(raw)[0]


def baselines(plan: FitPlan, images: np.ndarray):
    spec = plan.owner._baseline_spec
    return (baseline_of(spec, x, plan.adapter, plan.segments) for x in images)


def validate(plan: FitPlan, identity: Identity) -> dict[str, np.ndarray]:
    """``f(x)``, ``f(baseline)`` and KernelSHAP's values of the top trained class of each validation image."""
    from perturbx.explainers.kernel_shap import KernelSHAP

    o, target = plan.owner, identity.trained_target()
    empty = [np.zeros((0, plan.m), np.uint8)] * len(plan.val_images)
    games = query_games(plan.adapter, target, plan.val_images, baselines(plan, plan.val_images), plan.segments,
                        empty)
    column = games.full.argmax(axis=1)
    shap = KernelSHAP(o.validation_samples, plan.segments, baseline=o._baseline_spec, random_state=plan.seed,
                      progress=o.progress)
    wanted = [Class(identity.labels[c], output=identity.output, score=identity.score) for c in column]
    found = shap.explain_many(plan.adapter, plan.val_images, wanted)
    return {"full": games.full, "empty": games.empty, "column": column,
            "reference": np.stack([e.segment_weights[0] for e in found]),
            "errors": np.stack([e.errors[0] for e in found])}


def query_training(plan: FitPlan, identity: Identity, table: GameTable, n_train: int, save) -> GameTable:
    """Query the training images from ``len(table)`` to ``n_train``, block by block, saving after each block."""
    from tqdm.auto import tqdm

    o, target = plan.owner, identity.trained_target()
    per_image = 2 + o.coalitions
    with tqdm(total=n_train * per_image, initial=len(table) * per_image, unit="query", leave=False,
              desc="Amortized: training queries", disable=not progress_enabled(o.progress)) as bar:
        while len(table) < n_train:
            lo = len(table)
            hi = min(n_train, lo + BLOCK_IMAGES)
            zs = [image_coalitions(plan.seed, i, o.coalitions, plan.m) for i in range(lo, hi)]
            table = table.extend(query_games(plan.adapter, target, plan.images[lo:hi],
                                             baselines(plan, plan.images[lo:hi]), plan.segments, zs))
            bar.update((hi - lo) * per_image)
            save({"table": table.__dict__})
    return table


def to_chw_tensor(images: np.ndarray, adapter: Adapter, device) -> torch.Tensor:
    """Images in the adapter's layout as a float32 tensor ``(n, C, H, W)`` on ``device``.

    Contiguous float32 CHW images are not copied on the CPU (the tensor shares their memory; the
    trainer only reads it): 192,000 images of 3 x 64 x 64 are 9.4 GB.
    """
    chw = np.ascontiguousarray(adapter.layout.to_chw_array(images), dtype=np.float32)
    return torch.from_numpy(chw).to(device)


def value_scale(table: GameTable, m: int) -> float:
    """The unit of the network's raw output: root mean square of ``f(x) - f(baseline)``, shared by M players."""
    delta = table.full - table.empty
    return float(max(np.sqrt(np.mean(delta ** 2)), 1e-6) / np.sqrt(m))


def member_seed(seed: int, member: int) -> int:
    """Seed of ensemble member ``member`` (initial weights, shuffles): the fit's own seed for the first."""
    return seed if member == 0 else int(np.random.default_rng([seed, 2, member]).integers(2 ** 31))


def make_network(plan: FitPlan, identity: Identity, seed: int) -> ExplainerUNet:
    torch.manual_seed(seed)
    return plan.owner._unet(identity)


def train(plan: FitPlan, identity: Identity, table: GameTable, images: torch.Tensor, validation: Validation,
          saved: dict, save, member: int = 0) -> Trainer:
    """Train (or resume training) ensemble member ``member`` on the table's ``images``; checkpoint every epoch."""
    from tqdm.auto import tqdm

    o = plan.owner
    key, seed = ("trainer" if member == 0 else f"trainer_{member}"), member_seed(plan.seed, member)
    config = TrainConfig(o.epochs, o.patience, o.batch_size, o.learning_rate, o.weight_decay, seed, o.top_class_weight)
    trainer = Trainer(make_network(plan, identity, seed), images, table, validation, config,
                      value_scale(table, plan.m))
    if saved.get(key) is not None:
        trainer.load_state_dict(saved[key])
    desc = "Amortized: training" + (f" {member + 1}/{o.members}" if o.members > 1 else "")
    with tqdm(total=o.epochs, initial=trainer.epoch, unit="epoch", leave=False, desc=desc,
              disable=not progress_enabled(o.progress)) as bar:
        def on_epoch(t: Trainer) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{t.history[-1]['loss']:.4f}", pearson=f"{t.history[-1]['validation_pearson']:.4f}")
            save({key: t.state_dict()})

        trainer.run(on_epoch)
    return trainer


def calibrate(network: nn.Module, validation: Validation, scale: float) -> Calibration:
    """The error model, fitted on the validation images with the trained network."""
    v = validation
    raw = raw_values(network, v.images, scale)
    phi, gaps = normalise(raw, v.delta), raw.sum(-1) - v.delta
    rows = np.arange(len(phi))
    return Calibration.fit(phi[rows, v.column], gaps[rows, v.column], v.reference, v.errors)


def trained_network(trainers: list[Trainer]) -> tuple[nn.Module, float]:
    """The best network of each member (their :class:`Ensemble` when several) and its validation Pearson."""
    if len(trainers) == 1:
        return trainers[0].best_network(), trainers[0].best_score
    network = Ensemble([t.best_network() for t in trainers]).eval()
    return network, trainers[0].validation.pearson(network, trainers[0].scale)


def run_fit(plan: FitPlan) -> dict[str, Any]:
    """All four stages (resuming from the checkpoint when it matches); returns what the explainer keeps."""
    o, start, before = plan.owner, time.perf_counter(), plan.adapter.n_queries
    n_train = plan_budget(plan)
    plan.fingerprint = fingerprint(plan, n_train)
    saved = resume(o.checkpoint, plan.fingerprint)
    spent = dict(saved.get("spent", {"queries": 0, "seconds": 0.0}))

    def save(update: dict) -> None:
        saved.update(update)
        saved["spent"] = {"queries": int(spent["queries"]) + plan.adapter.n_queries - before,
                          "seconds": float(spent["seconds"]) + time.perf_counter() - start}
        if o.checkpoint is not None:
            ckpt.write(saved, o.checkpoint)

    identity, probe_scores = bind_identity(plan)
    check_same_model(saved, identity, probe_scores, o.checkpoint)
    if "identity" not in saved:
        save({"fingerprint": plan.fingerprint, "identity": identity.to_dict(), "probe": plan.val_images[0],
              "probe_scores": probe_scores})
    if "validation" not in saved:
        save({"validation": validate(plan, identity)})
    val = saved["validation"]
    table = GameTable(**saved["table"]) if "table" in saved else GameTable.empty_table(
        len(identity.labels), o.coalitions, plan.m)
    table = query_training(plan, identity, table, n_train, save)
    validation = Validation(to_chw_tensor(plan.val_images, plan.adapter, o.device), val["full"] - val["empty"],
                            val["column"], val["reference"], val["errors"])
    images = to_chw_tensor(plan.images[:len(table)], plan.adapter, o.device)  # one copy, shared by the members
    trainers = [train(plan, identity, table, images, validation, saved, save, k) for k in range(o.members)]
    save({})
    network, pearson = trained_network(trainers)
    first = trainers[0]
    log = {"queries": saved["spent"]["queries"], "seconds": saved["spent"]["seconds"], "training_images": n_train,
           "validation_images": len(plan.val_images), "coalitions_per_image": o.coalitions,
           "epochs": first.epoch, "best_epoch": first.best_epoch, "validation_pearson": pearson,
           "stopped": first.stopped, "history": first.history}
    if len(trainers) > 1:
        log["members"] = [{"epochs": t.epoch, "best_epoch": t.best_epoch, "validation_pearson": t.best_score,
                           "stopped": t.stopped} for t in trainers]
    if o.distil:
        network, log["distilled"] = distilled(plan, network, first, saved, save)
        log["validation_pearson"] = log["distilled"]["validation_pearson"]
        log["seconds"] = saved["spent"]["seconds"]
    return {"identity": identity, "network": network, "scale": first.scale,
            "calibration": calibrate(network, validation, first.scale), "training_log": log,
            "probe": plan.val_images[0], "probe_scores": probe_scores}


def distilled(plan: FitPlan, ensemble: Ensemble, first: Trainer, saved: dict, save) -> tuple[nn.Module, dict]:
    """The ensemble distilled into one network (:mod:`perturbx.amortized.distil`), kept in the checkpoint."""
    o, v = plan.owner, first.validation
    key = {"members": o.members, "epochs": o.distil}
    if o.top_class_weight != 1.0:  # a student distilled before the weight applied to it is distilled again
        key["top_class_weight"] = o.top_class_weight
    done = saved.get("student")
    if done is not None and done.get("key") == key:
        student = copy.deepcopy(ensemble.members[0])
        student.load_state_dict(done["state"])
        losses = list(done["losses"])
    else:
        student, losses = distil(ensemble, first.images, first.table.full - first.table.empty, first.scale,
                                 first.config, o.distil, weights=first.weights)
        save({"student": {"key": key, "state": student.state_dict(), "losses": losses}})
    student.eval()
    return student, {"epochs": o.distil, "losses": losses, "validation_pearson": v.pearson(student, first.scale)}


def resume(path, want: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's contents when it exists and matches ``want``; an empty dict when there is none.

    Arrays come back as numpy, except the trainer's state (weights and optimiser), kept as tensors.
    """
    if path is None or not Path(path).is_file():
        return {}
    raw = ckpt.read(path, what="a checkpoint to resume")
    blob = {k: (v if k.startswith(("trainer", "student")) else ckpt.from_blob(v)) for k, v in raw.items()
            if k not in ckpt.HEADER}
    have = blob.get("fingerprint") or {}
    if have != want:
        differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ValueError(f"The checkpoint {str(path)!r} was written by a fit with other {differ}; resume it with "
                         f"the same settings, data and random_state, or pass another checkpoint path.")
    return blob


def check_same_model(saved: dict, identity: Identity, probe_scores: np.ndarray, path) -> None:
    """Refuse to resume a checkpoint made with another model (identity or output on the probe image)."""
    if "identity" not in saved:
        return
    old = replace(Identity.from_dict(saved["identity"]), model=identity.model)
    if old != identity or not np.allclose(saved["probe_scores"], probe_scores, rtol=1e-4, atol=1e-6):
        raise ValueError(f"The checkpoint {str(path)!r} was written for another model (what it returns, or its "
                         f"output on the first validation image, differs); resume with the same model, or pass "
                         f"another checkpoint path.")
