"""ResNet-18 / ResNet-50 baselines with a new FER head, and the ECA + Mish variant.

Papers: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016; Wang et al., "ECA-Net: Efficient
Channel Attention for Deep Convolutional Neural Networks", CVPR 2020; Misra, "Mish: A Self Regularized
Non-Monotonic Activation Function", BMVC 2020. Code: torchvision (BSD-3-Clause) plus the ECA module written for
FER Lab (MIT); ImageNet weights: torchvision ``IMAGENET1K_V1`` (ResNet-18) and ``IMAGENET1K_V2`` (ResNet-50).

Switches (``model.options`` in a config, so an ablation is one ``--set``):

* ``eca=True`` adds efficient channel attention after each residual block (on the block's output, after the
  addition and activation; ECA-Net itself puts it on the residual branch before the addition). The 1-D kernel
  size follows ECA-Net's rule ``k = odd(|(log2 C + 1) / 2|)``: 3 for 64 channels, 5 for 128-512.
* ``act="mish"`` puts Mish everywhere torchvision has ReLU (stem and blocks).

``eca_resnet18`` is ResNet-18 with both. ``pretrained=True`` loads the ImageNet backbone from torchvision's
cache/download, or from a local file given as ``weights_path=`` (a torchvision ``.pth`` or a ``.safetensors`` state
dict), strictly: the ImageNet ``fc`` is dropped, a fresh head (and the ECA kernels) are initialised, and anything
else that does not match is an error. It never falls back to random weights.
"""

from __future__ import annotations

import math

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import load_state_dict, refuse_weights_path, torchvision_state_dict

ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "mish": lambda: nn.Mish(inplace=True)}


class ECA(nn.Module):
    """Efficient channel attention: global average pool, a 1-D convolution across channels, sigmoid gate."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1):
        super().__init__()
        t = int(abs((math.log2(channels) + b) / gamma))
        k = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=k // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3)).unsqueeze(1)                     # B x 1 x C
        return x * torch.sigmoid(self.conv(y)).transpose(1, 2).unsqueeze(-1)


class ECABasicBlock(BasicBlock):
    """torchvision's BasicBlock (same keys) followed by ECA."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eca = ECA(self.conv2.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(super().forward(x))


class ECABottleneck(Bottleneck):
    """torchvision's Bottleneck (same keys) followed by ECA."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eca = ECA(self.conv3.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.eca(super().forward(x))


def swap_activations(module: nn.Module, act: str) -> None:
    """Replace every ``nn.ReLU`` in ``module`` by ``ACTIVATIONS[act]()`` (in place)."""
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; valid: {', '.join(ACTIVATIONS)}")
    if act == "relu":
        return
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, ACTIVATIONS[act]())
        else:
            swap_activations(child, act)


class ResNet(tvm.ResNet):
    """torchvision's ResNet (same state-dict keys) with timm-style ``forward_features`` / ``forward_head``."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 7, drop_rate: float = 0.0,
                 eca: bool = False, act: str = "relu"):
        if eca:
            block = {BasicBlock: ECABasicBlock, Bottleneck: ECABottleneck}[block]
        super().__init__(block, layers, num_classes=num_classes)
        swap_activations(self, act)
        self.head_drop = nn.Dropout(drop_rate)
        self.num_features = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def load_imagenet_backbone(model: nn.Module, weights: tvm.WeightsEnum, weights_path: str | None = None,
                           prefix: str = "") -> None:
    """Load torchvision ImageNet ResNet weights into ``model`` (or into its submodule at ``prefix``) strictly.

    The ImageNet ``fc`` is dropped; the model's own head and any ECA kernels are new; anything else must match.
    The report is kept as ``model.load_report``.
    """
    state, source = torchvision_state_dict(weights, weights_path)
    target = model.get_submodule(prefix.rstrip(".")) if prefix else model
    model.load_report = load_state_dict(target, state, source=source, new=("fc.", ".eca."), drop=("fc.",))


def build_resnet(depth: int, *, num_classes: int, pretrained: bool = False, weights_path: str | None = None,
                 drop_rate: float = 0.0, eca: bool = False, act: str = "relu") -> ResNet:
    """A ResNet-18 or -50 with the switches above (also the backbone builder of SCN and the region net)."""
    block, layers, weights = {18: (BasicBlock, [2, 2, 2, 2], tvm.ResNet18_Weights.IMAGENET1K_V1),
                              50: (Bottleneck, [3, 4, 6, 3], tvm.ResNet50_Weights.IMAGENET1K_V2)}[depth]
    model = ResNet(block, layers, num_classes=num_classes, drop_rate=drop_rate, eca=eca, act=act)
    if pretrained:
        load_imagenet_backbone(model, weights, weights_path)
    else:
        refuse_weights_path(weights_path)
    return model


_COMMON = dict(input_size=(3, 224, 224), target_layer="layer4", origin="torchvision",
               backbone=("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"))
_PAPER = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"


@register_model(ModelConfig(name="resnet18", pretrained="torchvision IMAGENET1K_V1", paper=_PAPER,
                            licence="BSD-3-Clause (code and ImageNet weights)", **_COMMON))
def resnet18(*, num_classes: int, pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 (11.18 M parameters with a 7-way head); options ``eca``, ``act``, ``drop_rate``."""
    return build_resnet(18, num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_model(ModelConfig(name="resnet50", pretrained="torchvision IMAGENET1K_V2", paper=_PAPER,
                            licence="BSD-3-Clause (code and ImageNet weights)", **_COMMON))
def resnet50(*, num_classes: int, pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 (23.5 M parameters with a 7-way head); options ``eca``, ``act``, ``drop_rate``."""
    return build_resnet(50, num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_model(ModelConfig(
    name="eca_resnet18", pretrained="torchvision IMAGENET1K_V1 (ECA kernels initialised)",
    paper="ResNet-18 with ECA (Wang et al., CVPR 2020) after each block and Mish (Misra, BMVC 2020)",
    licence="BSD-3-Clause (torchvision code and weights), MIT (ECA module)", **_COMMON))
def eca_resnet18(*, num_classes: int, pretrained: bool = False, eca: bool = True, act: str = "mish",
                 **kwargs) -> ResNet:
    """ResNet-18 with ECA after each residual block and Mish in place of ReLU."""
    return build_resnet(18, num_classes=num_classes, pretrained=pretrained, eca=eca, act=act, **kwargs)
