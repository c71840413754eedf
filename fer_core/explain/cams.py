"""Class activation maps with pytorch-grad-cam: Grad-CAM, Grad-CAM++, LayerCAM, EigenCAM, Score-CAM and a fast
top-k Score-CAM.

Each call builds the CAM object inside ``with CAM(model=..., target_layers=[layer]) as cam:``, so its hooks are
removed when the call ends, also when it raises (an app caches one model and shares it). The library's
``__exit__`` swallows an ``IndexError`` (and prints it); here it is caught inside the block and raised again
after it, so no error is hidden.

The layer is the model's CAM layer (``model.cfg.target_layer``: ``layer4`` for ResNets, ``face_map`` for the
region net, ``backbone.<layer>`` for SCN) unless the ``layer`` option names another (dotted path). Maps are at
the layer's resolution upsampled (4x4 for mini-Xception at 64 px, 7x7 for ResNet-18 at 224), then in [0, 1].

Score-CAM (and its fast variant) masks the input with each channel's min-max normalised activation, which assumes
non-negative activations (the output of a ReLU). On a layer whose output is a residual sum with no ReLU after it,
such as the pretrained mini-Xception's ``stages.3``, the masks of mostly negative channels are meaningless and the
map lit the background beside the face; its default CAM layer is therefore ``stages.3.act1`` (the last ReLU,
8x8), where Grad-CAM, LayerCAM, EigenCAM and Score-CAM maps fall on the mouth and eyes of a smiling face, and full
and top-32 Score-CAM agree (correlation 0.990 against 0.34 on ``stages.3``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fer_core.explain.core import Inputs, register_method
from fer_core.models import get_target_layer


def _cam_class(name: str) -> type:
    import pytorch_grad_cam as pgc

    from fer_core.explain import cam_classes as cc

    return {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "layercam": pgc.LayerCAM,
            "eigencam": cc.OrientedEigenCAM, "scorecam": cc.QuietScoreCAM, "scorecam_fast": cc.TopKScoreCAM}[name]


def run_cam(name: str, inputs: Inputs, targets: list[int], layer: str | None,
            **cam_options: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """One CAM for each target, computed in one batch (the input repeated per target), hooks always removed."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = inputs.model
    module = get_target_layer(model, layer)
    layer_name = layer or model.cfg.target_layer
    x = inputs.repeat(len(targets))  # requires grad, so the layer's output does although the parameters do not
    cls = _cam_class(name)
    error: IndexError | None = None
    with cls(model=model, target_layers=[module], **cam_options) as cam:
        try:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        except IndexError as exc:  # BaseCAM.__exit__ would swallow it
            error = exc
    if error is not None:
        raise error
    return maps, {"layer": layer_name, **cam_options}


_LAYER = dict(layer=None)


@register_method("gradcam", family="cam", library="pytorch-grad-cam", all_classes=True, defaults=_LAYER,
                 description="Grad-CAM: layer activations weighted by their mean gradient")
def gradcam(inputs: Inputs, targets: list[int], *, layer: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Selvaraju et al., ICCV 2017."""
    return run_cam("gradcam", inputs, targets, layer)


@register_method("gradcam++", family="cam", library="pytorch-grad-cam", all_classes=True, defaults=_LAYER,
                 description="Grad-CAM++: higher-order gradient weights, better for several instances")
def gradcam_pp(inputs: Inputs, targets: list[int], *, layer: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Chattopadhay et al., WACV 2018."""
    return run_cam("gradcam++", inputs, targets, layer)


@register_method("layercam", family="cam", library="pytorch-grad-cam", all_classes=True, defaults=_LAYER,
                 description="LayerCAM: activations weighted by their positive gradients, per position")
def layercam(inputs: Inputs, targets: list[int], *, layer: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Jiang et al., IEEE TIP 2021."""
    return run_cam("layercam", inputs, targets, layer)


@register_method("eigencam", family="cam", library="pytorch-grad-cam", per_class=False, defaults=_LAYER,
                 description="EigenCAM: first principal component of the activations (class-agnostic)")
def eigencam(inputs: Inputs, targets: list[int], *, layer: str | None) -> tuple[np.ndarray, dict[str, Any]]:
    """Muhammad & Yeasin, IJCNN 2020. Class-agnostic; the component's sign (arbitrary in an SVD) is chosen so the
    map agrees with the mean activation (:class:`~fer_core.explain.cam_classes.OrientedEigenCAM`)."""
    return run_cam("eigencam", inputs, targets, layer)


@register_method("scorecam", family="cam", library="pytorch-grad-cam", defaults=dict(layer=None, batch_size=64),
                 description="Score-CAM: channels weighted by the score of the input masked by each (slow)")
def scorecam(inputs: Inputs, targets: list[int], *, layer: str | None,
             batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Wang et al., CVPR-W 2020: one forward pass per channel of the layer (512 for ResNet-18's layer4)."""
    return run_cam("scorecam", inputs, targets, layer, batch_size=batch_size)


@register_method("scorecam_fast", family="cam", library="pytorch-grad-cam",
                 defaults=dict(layer=None, k=32, batch_size=64),
                 description="Score-CAM over the k most active channels only")
def scorecam_fast(inputs: Inputs, targets: list[int], *, layer: str | None, k: int,
                  batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Score-CAM scored on the ``k`` channels with the highest mean activation
    (:class:`~fer_core.explain.cam_classes.TopKScoreCAM`): ``k`` forward passes."""
    return run_cam("scorecam_fast", inputs, targets, layer, k=k, batch_size=batch_size)
