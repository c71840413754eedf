"""Model registry: every model variant is a short builder registered with its :class:`ModelConfig`.

Usage::

    from fer_core.models import create_model, list_models, get_target_layer
    model = create_model("resnet18", num_classes=7, class_names=ds.classes, input_size=112)
    model.cfg.input_size, model.cfg.mean, model.cfg.std      # what the engine feeds it
    get_target_layer(model)                                  # default CAM layer (model.cfg.target_layer)

Models return logits from ``forward`` and also offer ``forward_features`` (the last feature map) and
``forward_head``, timm style. A new family goes in its own file (registering itself with
:func:`fer_core.models.registry.register_model`) and is imported here.
"""

from __future__ import annotations

# The model families register themselves on import (each imports fer_core.models.registry).
from fer_core.models import (  # noqa: F401
    lfer_ldl,
    mini_xception,
    mobilenet,
    patt_lite,
    ran,
    region_attention,
    resnet,
    scn,
    shufflenet,
    small_cnn,
    vgg,
)
from fer_core.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AttentionOutput,
    ModelConfig,
    attach_backbone,
    count_params,
    create_model,
    get_target_layer,
    list_models,
    model_info,
    register_model,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "AttentionOutput", "ModelConfig", "attach_backbone", "count_params",
           "create_model", "get_target_layer", "list_models", "model_info", "register_model"]
