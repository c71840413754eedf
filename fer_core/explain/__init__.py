"""Explanations of FER models: one call for every method, one way to draw them.

::

    from fer_core.explain import explain, list_methods, method_info, overlay, panel
    exp = explain(model, face_rgb_uint8, "gradcam")          # target=None: the predicted class
    exp.map, exp.target, exp.class_name, exp.probs, exp.settings, exp.seconds
    overlay(face_rgb_uint8, exp.map)                         # uint8 RGB heat map over the face
    panel(face, [explain(model, face, m) for m in list_methods()])

Methods (``method_info(name)`` gives family, library, defaults; ``target="all"`` where marked *):

* gradients (captum): ``saliency`` *, ``smoothgrad`` *, ``integrated_gradients`` * (signed);
* CAMs (pytorch-grad-cam, on ``model.cfg.target_layer`` or ``layer=``): ``gradcam`` *, ``gradcam++`` *,
  ``layercam`` *, ``eigencam`` (class-agnostic), ``scorecam``, ``scorecam_fast`` (top-k channels);
* perturbations: ``occlusion`` (captum, signed), ``lime`` * (lime, signed);
* ``activations`` (mean over channels of a layer, class-agnostic).

Also :func:`activation_grid`, :func:`visualize_filters` (feature visualisation, the channels of a layer in one
batch; :func:`visualize_filter` for one channel), :func:`feature_layers` and
:func:`stage_layers` (the layers worth looking at, as :class:`LayerInfo`), :func:`attention_weights` (SCN,
region net) and :func:`read_scn_weights` (a run's per-sample SCN weights). Whether a method's maps depend on
the model at all (weight and label randomisation, Adebayo et al. 2018): :mod:`fer_core.explain.sanity`.
Library code: nothing here prints or shows a progress bar (Score-CAM's and LIME's tqdm bars are silenced), and
nothing leaves hooks, gradients or a changed train/eval mode on the model. The heavy libraries are imported on
first use.
"""

from __future__ import annotations

from typing import Any

from fer_core.explain import cams, features, gradients, perturbation  # noqa: F401  (register the methods)
from fer_core.explain.attention import attention_weights, read_scn_weights
from fer_core.explain.core import Explanation, Inputs, MethodInfo, explain, list_methods, method_info, register_method
from fer_core.explain.features import (
    LayerInfo,
    activation_grid,
    feature_layers,
    stage_layers,
    visualize_filter,
    visualize_filters,
)
from fer_core.explain.render import overlay, panel

__all__ = ["Explanation", "Inputs", "LayerInfo", "MethodInfo", "TopKScoreCAM", "activation_grid", "attention_weights",
           "explain", "feature_layers", "list_methods", "method_info", "overlay", "panel", "read_scn_weights",
           "register_method", "stage_layers", "visualize_filter", "visualize_filters"]


def __getattr__(name: str) -> Any:
    if name == "TopKScoreCAM":  # imports pytorch-grad-cam (seconds), so only on request
        from fer_core.explain.cam_classes import TopKScoreCAM

        return TopKScoreCAM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
