"""LFER-LDL: ShuffleNetV2 x1.0 with parallel depthwise residual modules, Mish + ReLU6 and a new output module.

Paper: LFER-LDL, a Chinese journal paper on lightweight facial expression recognition with label distribution
learning (see the project's REFERENCES.md; no public code). What is known of the network: a ShuffleNetV2 backbone,
its FC output replaced by a new output module to curb over-fitting, a parallel depthwise-convolution residual module
for local and global features, Mish and ReLU6; reported 1.26 M parameters and 294.60 MFLOPs. Everything below that
is more precise than that is our reading, written for FER Lab (MIT) on torchvision's ShuffleNetV2 (BSD-3-Clause);
ImageNet weights: torchvision ``shufflenet_v2_x1_0`` ``IMAGENET1K_V1`` (BSD-3-Clause) for the backbone.

Our choices:

* **Parallel depthwise residual module** (:class:`ParallelDepthwiseResidual`), one after each of stage2, stage3 and
  stage4 (116, 232 and 464 channels; 28x28, 14x14 and 7x7 at 224): two parallel depthwise 3x3 convolutions on the
  same input, a plain one for local detail and one with dilation 2 (a 5x5 field, most of the 7x7 map in stage4)
  for wider context, each followed by BatchNorm; their sum goes through Mish and is added to the input. Both
  BatchNorm scales start at zero, so each module starts as the identity and the ImageNet backbone's features are
  intact at the first step. No 1x1 fusion convolution: one would cost 10 M MACs in stage2 alone.
* **Activations**: Mish in the stem (``conv1``) and in the new modules; ReLU6 in place of ReLU everywhere else
  (inside the shuffle units and after ``conv5``). Activations have no parameters, so the ImageNet keys still fit.
* **Output module** (:class:`OutputModule`) in place of global pooling + FC: channel dropout (``Dropout2d``,
  ``drop_rate``, default 0.2) on the 1024-channel ``conv5`` map, a 1x1 convolution to one map per class, global
  average pooling (Network-in-Network style, which its authors introduced as a guard against over-fitting). The
  1x1 convolution has exactly the FC's parameters; being linear it gives the same logits as pooling first, and
  dropping whole channels is the same as dropout on the pooled vector, so in effect it is FC + dropout that yields
  class activation maps for free. ``conv5`` (464 -> 1024, 1x1) is kept with its ImageNet weights.

Measured with a 7-way head at 224 (``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-add, depthwise included, and not BatchNorm or activations): 1,278,643 parameters (paper 1.26 M: +1.5%),
147.1 M MACs = 294.2 M FLOPs (paper 294.60 MFLOPs: -0.1%); the new modules add 17,864 parameters and 3.2 M MACs to
ShuffleNetV2's 1,260,779 and 143.9 M. One CPU forward at 224 takes about 18 ms on two cores against
ShuffleNetV2's 15 ms: depthwise convolutions and Mish cost more time than their FLOPs suggest.

A remark on the paper's counting: ShuffleNetV2 x1.0 with a 7-way FC already has 1.26 M parameters and 144-150 M
multiply-adds, so 294.60 "MFLOPs" is 2 x MACs of a ShuffleNetV2-sized network, while the ResNet-18 figure in the same
table, 1818.56 MFLOPs, equals ResNet-18's MACs (1.82 G). The table mixes the two conventions, which makes the
lightweight model look about 2x less cheap relative to ResNet-18 than it is (about 12x fewer MACs, not 6x).

Switches (``model.options``) for ablations: ``pdr=False`` removes the depthwise modules, ``mish_relu6=False`` keeps
torchvision's ReLU everywhere; with both off and ``drop_rate=0`` the network computes exactly ShuffleNetV2 + FC.
Training with label distributions (the "LDL" half of the paper) is the trainer's job, not this file's.
``pretrained=True`` loads the ImageNet backbone strictly (``weights_path=`` for a local file): the ImageNet ``fc``
is dropped, the depthwise modules and the output module are declared new, anything else must match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.shufflenet import IMAGENET_WEIGHTS, ShuffleNetV2
from fer_core.models.weights import load_state_dict, refuse_weights_path, torchvision_state_dict


def _dw_bn(channels: int, dilation: int) -> nn.Sequential:
    conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels, bias=False)
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)  # the module starts as the identity
    return nn.Sequential(conv, bn)


class ParallelDepthwiseResidual(nn.Module):
    """``x + Mish(BN(dw3x3(x)) + BN(dw3x3_dilated(x)))``: local detail and wider context, same shape out."""

    def __init__(self, channels: int, dilation: int = 2):
        super().__init__()
        self.local = _dw_bn(channels, 1)
        self.context = _dw_bn(channels, dilation)
        self.act = nn.Mish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.local(x) + self.context(x))


class OutputModule(nn.Module):
    """Channel dropout -> 1x1 convolution to one map per class -> global average pooling."""

    def __init__(self, in_chs: int, num_classes: int, drop_rate: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout2d(drop_rate)
        self.conv = nn.Conv2d(in_chs, num_classes, 1)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return x.mean((2, 3))
        return self.conv(self.drop(x)).mean((2, 3))


def _replace_relu(module: nn.Module, factory: Callable[[], nn.Module]) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, factory())
        else:
            _replace_relu(child, factory)


class LFERLDL(ShuffleNetV2):
    """ShuffleNetV2 x1.0 (torchvision keys for the backbone) with ``pdr2``-``pdr4`` after the stages and ``head``."""

    def __init__(self, num_classes: int = 7, drop_rate: float = 0.2, pdr: bool = True, mish_relu6: bool = True):
        super().__init__(num_classes=num_classes)
        del self.fc, self.head_drop
        if mish_relu6:
            self.conv1[2] = nn.Mish(inplace=True)
            _replace_relu(self, lambda: nn.ReLU6(inplace=True))
        chs = self._stage_out_channels
        self.pdr2, self.pdr3, self.pdr4 = (ParallelDepthwiseResidual(c) if pdr else nn.Identity() for c in chs[1:4])
        self.head = OutputModule(self.num_features, num_classes, drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pdr2(self.stage2(self.maxpool(self.conv1(x))))
        return self.conv5(self.pdr4(self.stage4(self.pdr3(self.stage3(x)))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)


@register_model(ModelConfig(
    name="lfer_ldl", input_size=(3, 224, 224), target_layer="conv5",
    backbone=("conv1", "stage2", "stage3", "stage4", "conv5"),
    paper="LFER-LDL (Chinese journal paper; ShuffleNetV2 + parallel depthwise residual module, Mish/ReLU6, "
          "new output module, label distribution learning)",
    origin="FER Lab reimplementation from the paper's description (no public code), on torchvision ShuffleNetV2",
    licence="MIT (new modules), BSD-3-Clause (torchvision code and ImageNet weights)",
    pretrained="torchvision shufflenet_v2_x1_0 IMAGENET1K_V1 backbone (new modules and head initialised)"))
def lfer_ldl(*, num_classes: int, pretrained: bool = False, weights_path: str | None = None, drop_rate: float = 0.2,
             pdr: bool = True, mish_relu6: bool = True) -> LFERLDL:
    """LFER-LDL network (1.28 M parameters, 294 M FLOPs at 224); options ``drop_rate``, ``pdr``, ``mish_relu6``."""
    model = LFERLDL(num_classes=num_classes, drop_rate=drop_rate, pdr=pdr, mish_relu6=mish_relu6)
    if pretrained:
        state, source = torchvision_state_dict(IMAGENET_WEIGHTS, weights_path)
        model.load_report = load_state_dict(model, state, source=source, new=("pdr", "head."), drop=("fc.",))
    else:
        refuse_weights_path(weights_path)
    return model
