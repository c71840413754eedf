"""VGG-style network for 48x48 grey faces (the FER2013 format).

After Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015, in
the form used as a FER2013 baseline (e.g. Khaireddin & Chen, "Facial Emotion Recognition: State of the Art
Performance on FER2013", 2021, which reaches 73.28% with a VGG variant, a tuned SGD schedule and augmentation):
four stages of two 3x3 conv-BN-ReLU layers (64, 128, 256, 512 channels), each closed by 2x2 max pooling, so a 48x48
face ends as a 3x3x512 map; then two fully connected layers with dropout and the classifier. Written for FER Lab
(MIT). No pretrained weights (there are no ImageNet weights for grey 48x48 input).

The map is average-pooled to 3x3 before flattening, which is the identity at 48x48 and lets the same network take
other sizes. ``fc_width`` sets the width of the fully connected layers (1024 here keeps it at 10.4 M parameters;
4096, VGG's own width, gives 40 M).
"""

from __future__ import annotations

import torch
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import refuse_pretrained


def _stage(in_chs: int, out_chs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (in_chs, out_chs):
        layers += [nn.Conv2d(c, out_chs, 3, padding=1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class VGGFER(nn.Module):
    """Four VGG stages -> 3x3 pooling -> FC-ReLU-dropout x2 -> classifier. CAM layer: ``stages.3``."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, widths: tuple[int, ...] = (64, 128, 256, 512),
                 fc_width: int = 1024, drop_rate: float = 0.5):
        super().__init__()
        chans = (in_chans, *widths)
        self.stages = nn.Sequential(*[_stage(chans[i], chans[i + 1]) for i in range(len(widths))])
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.num_features = widths[-1] * 9
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(self.num_features, fc_width), nn.ReLU(inplace=True), nn.Dropout(drop_rate),
            nn.Linear(fc_width, fc_width), nn.ReLU(inplace=True), nn.Dropout(drop_rate))
        self.fc = nn.Linear(fc_width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head(self.pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model(ModelConfig(
    name="vgg_fer", input_size=(1, 48, 48), mean=(0.5,), std=(0.5,), target_layer="stages.3", backbone=("stages",),
    paper="Simonyan & Zisserman, ICLR 2015; FER2013 form after Khaireddin & Chen, 2021",
    origin="FER Lab", licence="MIT"))
def vgg_fer(*, num_classes: int, pretrained: bool = False, **kwargs) -> VGGFER:
    """VGG-style net for 48x48 grey faces; options ``fc_width``, ``drop_rate``, ``widths``, ``in_chans``."""
    refuse_pretrained("vgg_fer", pretrained)
    return VGGFER(num_classes=num_classes, **kwargs)
