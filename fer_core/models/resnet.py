"""ResNet-18 / ResNet-50 baselines with a new FER head.

Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. Code: torchvision (BSD-3-Clause);
ImageNet weights: torchvision ``IMAGENET1K_V1`` (ResNet-18) and ``IMAGENET1K_V2`` (ResNet-50), BSD-3-Clause.

``pretrained=True`` loads the ImageNet backbone from torchvision's cache/download, or from a local file given as
``weights_path=`` (a torchvision ``.pth`` or a ``.safetensors`` state dict); the ImageNet ``fc`` is dropped and
a fresh ``num_classes`` head is initialised. It never falls back to random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from fer_core.models import ModelConfig, register_model


class ResNet(tvm.ResNet):
    """torchvision's ResNet (same state-dict keys) with timm-style ``forward_features`` / ``forward_head``."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 7, drop_rate: float = 0.0):
        super().__init__(block, layers, num_classes=num_classes)
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


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise FileNotFoundError(f"model.weights_path {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state


def load_imagenet_backbone(model: ResNet, weights: tvm.WeightsEnum, weights_path: str | None = None) -> None:
    """Load ImageNet weights (all but ``fc``) strictly; raise with instructions if they cannot be had."""
    if weights_path:
        state = _read_state_dict(Path(weights_path).expanduser())
        source = str(weights_path)
    else:
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # noqa: BLE001 - URLError, OSError, hash errors: all mean "no weights"
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise RuntimeError(
                f"could not get torchvision's ImageNet weights {weights} ({type(err).__name__}: {err}). "
                f"If this machine is offline, download {weights.url} elsewhere and either copy it into {cache}/ "
                "or set model.weights_path=/path/to/that/file (--set model.weights_path=...); "
                "or train from scratch with model.pretrained=false."
            ) from err
        source = weights.url
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mis_shaped:
        raise ValueError(f"ImageNet weights {source} do not fit {type(model).__name__} (missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, other shapes {mis_shaped[:5]}); "
                         "is it a torchvision ResNet of the same depth?")
    model.load_state_dict(state, strict=False)


def _resnet(block: type[nn.Module], layers: list[int], weights: tvm.WeightsEnum, *, num_classes: int,
            pretrained: bool, weights_path: str | None = None, drop_rate: float = 0.0) -> ResNet:
    model = ResNet(block, layers, num_classes=num_classes, drop_rate=drop_rate)
    if pretrained:
        load_imagenet_backbone(model, weights, weights_path)
    elif weights_path:
        raise ValueError("model.weights_path is set but model.pretrained is false; set pretrained=true to use it")
    return model


_COMMON = dict(input_size=(3, 224, 224), target_layer="layer4",
               paper="He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
               origin="torchvision", licence="BSD-3-Clause (code and ImageNet weights)")


@register_model(ModelConfig(name="resnet18", pretrained="torchvision IMAGENET1K_V1", **_COMMON))
def resnet18(*, num_classes: int, pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-18 (11.2 M parameters with a 7-way head)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], tvm.ResNet18_Weights.IMAGENET1K_V1, num_classes=num_classes,
                   pretrained=pretrained, **kwargs)


@register_model(ModelConfig(name="resnet50", pretrained="torchvision IMAGENET1K_V2", **_COMMON))
def resnet50(*, num_classes: int, pretrained: bool = False, **kwargs) -> ResNet:
    """ResNet-50 (23.5 M parameters with a 7-way head)."""
    return _resnet(Bottleneck, [3, 4, 6, 3], tvm.ResNet50_Weights.IMAGENET1K_V2, num_classes=num_classes,
                   pretrained=pretrained, **kwargs)
