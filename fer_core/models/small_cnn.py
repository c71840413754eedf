"""SmallCNN: a fast CPU baseline for 64x64 faces.

Four conv-BN-ReLU blocks (32-64-128-256 channels) with 2x2 max pooling between them, global average pooling,
dropout and a linear classifier: about 0.4 M parameters and 60 M multiply-adds at 64x64. Not from a paper; it
follows the VGG-style nets used as FER2013 baselines (e.g. Khaireddin & Chen, "Facial Emotion Recognition:
State of the Art Performance on FER2013", 2021), shrunk so the SynthFACS quick run trains in about a minute on
two CPU cores. Written for FER Lab (MIT). No pretrained weights.

Measured here (2 cores, channels-last): about 330 training images/s at 64x64. A strided stem (64 -> 32 before
the first block) was tried and learned much more slowly on SynthFACS: the expression cues are thin lines.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import refuse_pretrained


class ConvBlock(nn.Sequential):
    """3x3 conv, BatchNorm, ReLU, then optional 2x2 max pooling."""

    def __init__(self, in_chs: int, out_chs: int, pool: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(in_chs, out_chs, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True),
        ]
        if pool:
            layers.append(nn.MaxPool2d(2))
        super().__init__(*layers)


class SmallCNN(nn.Module):
    """Conv blocks -> global average pool -> dropout -> linear. ``blocks.<last>`` is the CAM layer."""

    def __init__(self, num_classes: int = 7, in_chans: int = 3, widths: tuple[int, ...] = (32, 64, 128, 256),
                 drop_rate: float = 0.2):
        super().__init__()
        chans = (in_chans, *widths)
        self.blocks = nn.Sequential(*[ConvBlock(chans[i], chans[i + 1], pool=i < len(widths) - 1)
                                      for i in range(len(widths))])
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(widths[-1], num_classes)
        self.num_features = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.fc(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(ModelConfig(
    name="small_cnn", input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    target_layer="blocks.3", paper="", origin="FER Lab", licence="MIT", backbone=("blocks",)))
def small_cnn(*, num_classes: int, pretrained: bool = False, **kwargs) -> SmallCNN:
    """SmallCNN 32-64-128-256 for 64x64 RGB faces."""
    refuse_pretrained("small_cnn", pretrained)
    return SmallCNN(num_classes=num_classes, **kwargs)
