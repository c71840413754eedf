"""ShuffleNetV2 x1.0 baseline with a new FER head (also the backbone of LFER-LDL, see ``lfer_ldl.py``).

Paper: Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV 2018. Code:
torchvision (BSD-3-Clause); ImageNet weights: torchvision ``IMAGENET1K_V1`` (BSD-3-Clause, 69.36% ImageNet top-1).

The network is torchvision's, with the same state-dict keys, plus timm-style ``forward_features`` (the 1024-channel
map of ``conv5``, 7x7 at 224) and ``forward_head`` (global average pooling, dropout, linear). ``drop_rate`` is a
dropout before the classifier (torchvision has none; default 0). ``pretrained=True`` loads the ImageNet weights
from torchvision's cache/download, or from a local file given as ``weights_path=`` (torchvision ``.pth`` or a
``.safetensors`` state dict), strictly: the ImageNet ``fc`` is dropped, the new head is initialised, anything else
that does not match is an error.

Measured here with a 7-way head at 224 (``torch.utils.flop_counter``): 1,260,779 parameters, 143.9 M MACs
(287.8 M FLOPs counting 2 per multiply-add; the paper's "146M FLOPs" are multiply-adds); one CPU forward about
15 ms on two cores.
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import load_state_dict, refuse_weights_path, torchvision_state_dict

IMAGENET_WEIGHTS = tvm.ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1


class ShuffleNetV2(tvm.ShuffleNetV2):
    """torchvision's ShuffleNetV2 x1.0 (same keys) with ``forward_features`` / ``forward_head``."""

    def __init__(self, num_classes: int = 7, drop_rate: float = 0.0):
        super().__init__([4, 8, 4], [24, 116, 232, 464, 1024], num_classes=num_classes)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(ModelConfig(
    name="shufflenet_v2", input_size=(3, 224, 224), target_layer="conv5", origin="torchvision (shufflenet_v2_x1_0)",
    backbone=("conv1", "stage2", "stage3", "stage4", "conv5"),
    paper="Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, ECCV 2018",
    licence="BSD-3-Clause (code and ImageNet weights)", pretrained="torchvision IMAGENET1K_V1"))
def shufflenet_v2(*, num_classes: int, pretrained: bool = False, weights_path: str | None = None,
                  drop_rate: float = 0.0) -> ShuffleNetV2:
    """ShuffleNetV2 x1.0 (1.26 M parameters with a 7-way head); options ``drop_rate``, ``weights_path``."""
    model = ShuffleNetV2(num_classes=num_classes, drop_rate=drop_rate)
    if pretrained:
        state, source = torchvision_state_dict(IMAGENET_WEIGHTS, weights_path)
        model.load_report = load_state_dict(model, state, source=source, new=("fc.",), drop=("fc.",))
    else:
        refuse_weights_path(weights_path)
    return model
