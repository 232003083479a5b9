"""Method names -> explainers with settings suited to the image size.

``perturbx compare --methods rise,lime,gradcam`` and :func:`perturbx.compare.compare`
resolve names here. A method whose module cannot be imported (gradient methods without
PyTorch, a method not installed in this version) is simply not available;
:func:`available_methods` lists the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["METHODS", "Method", "available_methods", "canonical_name", "make_explainer"]

Size = tuple[int, int]


@dataclass(frozen=True)
class Method:
    """One registered method.

    Attributes
    ----------
    name : str
        Canonical name (lower case).
    label : str
        Display name.
    module, cls : str
        Where the explainer class lives; imported only when used.
    kind : {"black-box", "detection", "optimisation", "gradient"}
        Gradient methods need a torch model (a ``perturbx.adapters.Torch``). Detection
        methods are black-box methods whose default target is every detection of an object
        detector (:class:`perturbx.targets.Detection`), not a class. Optimisation
        methods (a mask optimised over hundreds of steps) work with any model, by autograd
        through a torch model and by zeroth-order estimates otherwise; they cost seconds to
        minutes per image on a CPU.
    settings : callable (size, random_state) -> dict
        Keyword arguments of the class for images of ``size`` (H, W).
    """

    name: str
    label: str
    module: str
    cls: str
    kind: str
    settings: Callable[[Size, int], dict]

    def load(self) -> type:
        """The explainer class (ImportError when its module or PyTorch is missing)."""
        return getattr(importlib.import_module(self.module), self.cls)

    def make(self, size: Size, random_state: int = 0) -> object:
        return self.load()(**self.settings(size, random_state))


def _occlusion(size: Size, seed: int) -> dict:
    window = max(1, round(min(size) * 3 / 16))  # 12 px at 64, 42 px at 224
    return {"window": (window, window), "stride": (max(1, window // 3),) * 2}


def _drise(size: Size, seed: int) -> dict:
    grid = max(4, min(16, round(min(size) / 8)))  # 8 cells at 64 px, 16 (the paper's) from 128 px
    return {"n_masks": 2000, "grid_size": grid, "random_state": seed}


def _smoothgrad(size: Size, seed: int) -> dict:
    from perturbx.gradients import Saliency

    return {"base": Saliency(), "n_samples": 25, "random_state": seed}


_GRAD = "perturbx.gradients"
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("occlusion", "Occlusion", "perturbx.explainers.occlusion", "Occlusion", "black-box", _occlusion),
    Method("c2f_occlusion", "C2F-Occlusion", "perturbx.explainers.coarse_to_fine", "CoarseToFineOcclusion",
           "black-box", _occlusion),
    Method("rise", "RISE", "perturbx.explainers.rise", "RISE", "black-box",
           lambda size, seed: {"n_masks": 2000, "grid_size": 7, "p_keep": 0.5, "random_state": seed}),
    Method("drise", "D-RISE", "perturbx.explainers.drise", "DRISE", "detection", _drise),
    Method("lime", "LIME", "perturbx.explainers.lime", "LIME", "black-box",
           lambda size, seed: {"n_samples": 1000, "random_state": seed}),
    Method("kernelshap", "KernelSHAP", "perturbx.explainers.kernel_shap", "KernelSHAP", "black-box",
           lambda size, seed: {"n_samples": 1000, "random_state": seed}),
    Method("meaningful", "Meaningful", "perturbx.explainers.meaningful", "MeaningfulPerturbation", "optimisation",
           lambda size, seed: {"random_state": seed}),
    Method("extremal", "Extremal", "perturbx.explainers.extremal", "ExtremalPerturbation", "optimisation",
           lambda size, seed: {"random_state": seed}),
    Method("saliency", "Saliency", _GRAD, "Saliency", "gradient", lambda size, seed: {}),
    Method("inputxgradient", "InputXGradient", _GRAD, "InputXGradient", "gradient", lambda size, seed: {}),
    Method("ig", "IG", _GRAD, "IntegratedGradients", "gradient", lambda size, seed: {"n_steps": 32}),
    Method("smoothgrad", "SmoothGrad", _GRAD, "SmoothGrad", "gradient", _smoothgrad),
    Method("gradcam", "GradCAM", _GRAD, "GradCAM", "gradient", lambda size, seed: {"upsample": "bilinear"}),
    Method("gradcampp", "GradCAM++", _GRAD, "GradCAMpp", "gradient", lambda size, seed: {"upsample": "bilinear"}),
    Method("guidedbackprop", "GuidedBackprop", _GRAD, "GuidedBackprop", "gradient", lambda size, seed: {}),
    Method("guidedgradcam", "GuidedGradCAM", _GRAD, "GuidedGradCAM", "gradient", lambda size, seed: {}),
    Method("deeplift", "DeepLIFT", _GRAD, "DeepLIFT", "gradient", lambda size, seed: {}),
    Method("deepliftshap", "DeepLIFT-SHAP", _GRAD, "DeepLIFTSHAP", "gradient",
           lambda size, seed: {"random_state": seed}),
    Method("gradientshap", "GradientSHAP", _GRAD, "GradientSHAP", "gradient",
           lambda size, seed: {"n_samples": 32, "random_state": seed}),
    Method("expected_gradients", "ExpectedGradients", _GRAD, "ExpectedGradients", "gradient",
           lambda size, seed: {"n_samples": 32, "random_state": seed}),
    Method("lrp", "LRP", _GRAD, "LRP", "gradient", lambda size, seed: {}),
    Method("layer_gxa", "LayerGradXAct", _GRAD, "LayerGradientXActivation", "gradient",
           lambda size, seed: {"upsample": "bilinear"}),
    Method("layer_conductance", "LayerConductance", _GRAD, "LayerConductance", "gradient",
           lambda size, seed: {"n_steps": 16, "upsample": "bilinear"}),
)}

ALIASES = {"kernel_shap": "kernelshap", "shap": "kernelshap", "integrated_gradients": "ig",
           "integratedgradients": "ig", "grad_cam": "gradcam", "gradcam++": "gradcampp",
           "input_x_gradient": "inputxgradient", "guided_backprop": "guidedbackprop",
           "meaningful_perturbation": "meaningful", "extremal_perturbation": "extremal",
           "coarse_to_fine": "c2f_occlusion", "coarsetofine": "c2f_occlusion", "hipe": "c2f_occlusion",
           "d_rise": "drise", "deep_lift": "deeplift", "deeplift_shap": "deepliftshap",
           "gradient_shap": "gradientshap", "expectedgradients": "expected_gradients",
           "layer_gradient_x_activation": "layer_gxa", "conductance": "layer_conductance"}


def canonical_name(name: str) -> str:
    """The registered name for ``name`` (case-insensitive, aliases allowed)."""
    if not isinstance(name, str):
        raise TypeError(f"A method name must be a str. Got {type(name).__name__}.")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ValueError(f"Unknown method {name!r}; the registered methods are {sorted(METHODS)}.")
    return key


def available_methods(kind: str | None = None) -> list[str]:
    """Registered methods whose module imports here, optionally only one ``kind``.

    Parameters
    ----------
    kind : {"black-box", "detection", "optimisation", "gradient"}, optional
    """
    names = []
    for name, method in METHODS.items():
        if kind is not None and method.kind != kind:
            continue
        try:
            method.load()
        except (ImportError, AttributeError):
            continue
        names.append(name)
    return names


def make_explainer(name: str, *, size: Size = (224, 224), random_state: int = 0) -> object:
    """A configured explainer for images of ``size`` (H, W) pixels.

    Raises
    ------
    ValueError
        Unknown name.
    ImportError
        The method is registered but cannot be imported here (for example a gradient
        method without PyTorch); the message says what to install.
    """
    method = METHODS[canonical_name(name)]
    try:
        cls = method.load()
    except (ImportError, AttributeError) as exc:
        hint = " Gradient methods need PyTorch: pip install 'perturbx[torch]'." if method.kind == "gradient" else ""
        raise ImportError(f"Method {method.name!r} is not available in this installation ({exc}).{hint}") from exc
    return cls(**method.settings(tuple(size), random_state))
