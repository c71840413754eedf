"""MobileNetV2 baseline with a new FER head.

Paper: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018. Code: torchvision
(BSD-3-Clause); ImageNet weights: torchvision ``IMAGENET1K_V1`` (BSD-3-Clause, 71.88% ImageNet top-1).

The network is torchvision's, with the same state-dict keys, plus timm-style ``forward_features`` (the 1280-channel
map of ``features.18``, 7x7 at 224) and ``forward_head`` (global average pooling, dropout, linear). ``drop_rate``
is the dropout before the classifier (torchvision's default, 0.2). ``pretrained=True`` loads the ImageNet weights
from torchvision's cache/download, or from a local file given as ``weights_path=`` (torchvision ``.pth`` or a
``.safetensors`` state dict), strictly: the ImageNet classifier is dropped, the new head is initialised, anything
else that does not match is an error.

Measured here with a 7-way head at 224 (``torch.utils.flop_counter``): 2,232,839 parameters, 299.5 M MACs
(599.0 M FLOPs counting 2 per multiply-add; the paper's "300M multiply-adds"); one CPU forward about 16 ms on
two cores.
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import load_state_dict, refuse_weights_path, torchvision_state_dict


class MobileNetV2(tvm.MobileNetV2):
    """torchvision's MobileNetV2 (same keys) with ``forward_features`` / ``forward_head``."""

    def __init__(self, num_classes: int = 7, drop_rate: float = 0.2):
        super().__init__(num_classes=num_classes, dropout=drop_rate)
        self.num_features = self.last_channel

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(ModelConfig(
    name="mobilenet_v2", input_size=(3, 224, 224), target_layer="features.18", origin="torchvision",
    backbone=("features",),
    paper="Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018",
    licence="BSD-3-Clause (code and ImageNet weights)", pretrained="torchvision IMAGENET1K_V1"))
def mobilenet_v2(*, num_classes: int, pretrained: bool = False, weights_path: str | None = None,
                 drop_rate: float = 0.2) -> MobileNetV2:
    """MobileNetV2 (2.23 M parameters with a 7-way head); options ``drop_rate``, ``weights_path``."""
    model = MobileNetV2(num_classes=num_classes, drop_rate=drop_rate)
    if pretrained:
        state, source = torchvision_state_dict(tvm.MobileNet_V2_Weights.IMAGENET1K_V1, weights_path)
        model.load_report = load_state_dict(model, state, source=source, new=("classifier.",), drop=("classifier.",))
    else:
        refuse_weights_path(weights_path)
    return model
