"""Self-Cure Network (SCN): a ResNet backbone, a per-sample importance weight, and logit weighting.

Paper: Wang et al., "Suppressing Uncertainties for Large-Scale Facial Expression Recognition", CVPR 2020.
Reference code: github.com/kaiwang960112/Self-Cure-Network (MIT). This file is written for FER Lab (MIT); the
backbone is torchvision's ResNet (BSD-3-Clause) with its ImageNet weights when ``pretrained=True``.

After global pooling the 512-d feature ``x`` feeds a classifier ``fc(x)`` and an importance branch
``alpha = sigmoid(Linear(512 -> 1)(x))``; the logits are ``alpha * fc(x)`` (logit-weighted cross-entropy is then
plain cross-entropy on them). Any registered model with an ``fc`` classifier can be the backbone
(``backbone: small_cnn`` makes CPU experiments fast); the paper's is ResNet-18. Differences from the reference
code, on purpose:

* ``forward`` returns only the logits, so CAM tools, ``torch.jit`` and every evaluation path treat SCN like any
  classifier. The importance weights come from :meth:`SCN.forward_attention`, which returns an
  :class:`~fer_core.models.AttentionOutput` (logits, weights ``B x 1``, unweighted logits) from one pass.
* ImageNet weights load strictly (:mod:`fer_core.models.weights`), and what matched is reported (the reference
  loads with ``strict=False`` into different key names and loads nothing).

The rank-regularisation loss and relabelling live in the trainer, which reads the weights from
``forward_attention``.
"""

from __future__ import annotations

import torch
from torch import nn

from fer_core.models.registry import AttentionOutput, ModelConfig, attach_backbone, register_model


class SCN(nn.Module):
    """Backbone -> pooled feature -> (``fc``, importance ``alpha``) -> ``alpha * fc``.

    Args:
        num_classes: number of logits.
        backbone: a registered model with an ``fc`` classifier (ResNet-18 in the paper; ``small_cnn`` makes CPU
            experiments fast); its input format and CAM layer become SCN's.
        drop_rate: dropout on the pooled feature before both branches.
        pretrained: load the backbone's ImageNet weights.
        weights_path: a local copy of those weights.
        backbone_options: options of the backbone (``eca``, ``act`` for the ResNets).
    """

    def __init__(self, num_classes: int = 7, backbone: str = "resnet18", drop_rate: float = 0.0,
                 pretrained: bool = False, weights_path: str | None = None,
                 backbone_options: dict | None = None):
        super().__init__()
        attach_backbone(self, backbone, pretrained=pretrained, weights_path=weights_path, options=backbone_options)
        self.cfg_overrides["target_layer"] = f"backbone.{self.backbone.cfg.target_layer}"
        self.num_features = self.backbone.num_features
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.alpha = nn.Sequential(nn.Linear(self.num_features, 1), nn.Sigmoid())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)

    def _head(self, x: torch.Tensor) -> AttentionOutput:
        x = self.head_drop(self.backbone.forward_head(x, pre_logits=True))
        raw = self.fc(x)
        weights = self.alpha(x)
        return AttentionOutput(logits=weights * raw, weights=weights, part_logits=raw.unsqueeze(1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.backbone.forward_head(x, pre_logits=True)
        return self._head(x).logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_attention(self, x: torch.Tensor) -> AttentionOutput:
        """Logits, importance weights (``B x 1``, in (0, 1)) and the unweighted logits (``B x 1 x C``)."""
        return self._head(self.forward_features(x))


_CFG = dict(input_size=(3, 224, 224), target_layer="backbone.layer4", backbone=("backbone",),
            origin="FER Lab (torchvision ResNet backbone)",
            paper="Wang et al., Suppressing Uncertainties for Large-Scale Facial Expression Recognition, CVPR 2020",
            licence="MIT (FER Lab); BSD-3-Clause (torchvision backbone and ImageNet weights)")


@register_model(ModelConfig(name="scn", pretrained="torchvision IMAGENET1K_V1 backbone", **_CFG))
def scn(*, num_classes: int, pretrained: bool = False, **kwargs) -> SCN:
    """SCN on ResNet-18 (11.18 M parameters + 513 for the importance branch); options ``backbone``,
    ``backbone_options``, ``drop_rate``."""
    return SCN(num_classes=num_classes, pretrained=pretrained, **kwargs)
