"""Multi-region attention network: the face and its four quadrants through one ResNet-18, fused by attention.

The seed method of FER Lab (see REFERENCES.md), after Region Attention Networks (Wang et al., "Region Attention
Networks for Pose and Occlusion Robust Facial Expression Recognition", IEEE TIP 2020). Written for FER Lab (MIT);
backbone torchvision ResNet-18 (BSD-3-Clause) with its ImageNet weights when ``pretrained=True``.

Parts, in this order (``model.region_names``): the whole face, then its top-left, top-right, bottom-left and
bottom-right quadrants. All parts go through the *same* ResNet-18 and the same classifier ``fc`` (part logits
``F_i``); each part gets an attention weight ``a_i = sigmoid(Linear(512 -> 1)(feature_i))``. The fused output is
``P = sum_i a_i softmax(F_i) / sum_i a_i``, and ``forward`` returns ``log P`` (computed with logsumexp), so that
cross-entropy, soft-target losses, argmax and softmax all work on it as on ordinary logits: ``softmax(log P) = P``.

Switches (``model.options``), for the ablations the papers report:

* ``regions=False``: only the whole face (a plain ResNet-18 with softmax output); ``attention=False``: every
  ``a_i = 1`` (a plain average of the part softmaxes; the attention layer is then not built).
* ``fusion="two_branch"`` with ``branch_weight=a``: ``P = (F1 + a * F2) / (1 + a)`` where ``F1`` is the whole-face
  softmax and ``F2`` the attention-weighted average of the four quadrant softmaxes (the ``F = F1 + a*F2`` sweep).
* ``region_size``: quadrants are fed at their own resolution (112 for a 224 face, so the network costs about twice
  a ResNet-18) unless this resizes them (224 makes each crop cost a full pass, as in RAN).

Scales and BatchNorm: the face runs at the input size and, by default, the quadrants at half of it, through the
same backbone in two passes (the face, then the four quadrants as one batch). In training each pass normalises with
its own batch statistics, but both update the *same* running statistics, which evaluation then uses for both
scales: a blend of the two that fits neither exactly. ``region_size`` set to the input size feeds every part at one
scale (each crop then costs a full pass). Face and quadrants are normalised alike: the engine normalises the face
with the backbone's mean and std, and the quadrants are cut from it (and resized bilinearly, antialiased, when
``region_size`` is given). RAN as its code defines it (crops at the input size, relation attention, feature-level
fusion) is the ``ran`` model (:mod:`fer_core.models.ran`); this one is the seed's variant and stays as it was.

Choices where the description is silent, made here: a shared classifier for all parts (as RAN shares its
backbone), the weights normalised in the fusion (unnormalised ``sum a_i softmax(F_i)`` gives the same argmax and,
through the softmax, the same loss), and quadrants without overlap.

Explaining it: ``forward_attention`` returns the weights ``B x 5`` and the part logits; the default CAM layer
``face_map`` is the whole-face feature map (it sees the whole face once per forward; the crops' feature maps are
in their own coordinates). Gradient, occlusion and LIME methods explain the whole fused model.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fer_core.models.registry import AttentionOutput, ModelConfig, attach_backbone, register_model

REGION_NAMES = ("face", "top_left", "top_right", "bottom_left", "bottom_right")


def quadrants(x: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """The four quadrants of each image, stacked region-major: ``4B x C x H/2 x W/2`` (resized to ``size``)."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    crops = torch.cat([x[..., :h, :w], x[..., :h, w:2 * w], x[..., h:2 * h, :w], x[..., h:2 * h, w:2 * w]])
    if size is not None and (h, w) != (size, size):
        crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return crops


class RegionAttentionNet(nn.Module):
    """Shared ResNet-18 over the face and its quadrants, per-part attention, fused softmax outputs.

    Args:
        num_classes: number of classes.
        regions: use the four quadrant crops (False: whole face only).
        attention: learn per-part weights (False: all weights are 1).
        fusion: "attention" (weighted mean over all parts) or "two_branch" (``F1 + a*F2``).
        branch_weight: ``a`` of the two-branch fusion.
        region_size: resize quadrant crops to this size (None: their own size).
        drop_rate: dropout on pooled features before the classifier and the attention layer.
        pretrained: load the backbone's ImageNet weights.
        weights_path: a local copy of those weights.
        backbone: the shared encoder, a registered model with an ``fc`` classifier (ResNet-18 in the method;
            ``small_cnn`` makes CPU experiments fast); its input format becomes the network's.
        backbone_options: options of the backbone.
    """

    def __init__(self, num_classes: int = 7, *, regions: bool = True, attention: bool = True,
                 fusion: Literal["attention", "two_branch"] = "attention", branch_weight: float = 0.6,
                 region_size: int | None = None, drop_rate: float = 0.0, pretrained: bool = False,
                 weights_path: str | None = None, backbone: str = "resnet18", backbone_options: dict | None = None):
        super().__init__()
        if fusion not in ("attention", "two_branch"):
            raise ValueError(f"fusion must be 'attention' or 'two_branch', not {fusion!r}")
        if fusion == "two_branch" and not regions:
            raise ValueError("fusion='two_branch' needs regions=True (its second branch is the regions)")
        if branch_weight < 0:
            raise ValueError(f"branch_weight must be >= 0 (got {branch_weight})")
        self.regions, self.fusion, self.branch_weight, self.region_size = regions, fusion, branch_weight, region_size
        self.region_names = REGION_NAMES if regions else REGION_NAMES[:1]
        attach_backbone(self, backbone, pretrained=pretrained, weights_path=weights_path, options=backbone_options)
        self.num_features = self.backbone.num_features
        self.face_map = nn.Identity()  # CAM target: the whole-face feature map, seen once per forward
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.attention = nn.Sequential(nn.Linear(self.num_features, 1), nn.Sigmoid()) if attention else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of every part: ``B x R x 512`` (R = 5 with regions, else 1)."""
        bb = self.backbone
        pooled = [bb.forward_head(self.face_map(bb.forward_features(x)), pre_logits=True)]
        if self.regions:
            crops = bb.forward_head(bb.forward_features(quadrants(x, self.region_size)), pre_logits=True)
            pooled.extend(crops.chunk(4))
        return torch.stack(pooled, dim=1)

    def _head(self, feats: torch.Tensor) -> AttentionOutput:
        feats = self.head_drop(feats)
        part_logits = self.fc(feats)                                             # B x R x C
        if self.attention is not None:
            weights = self.attention(feats).squeeze(-1)                          # B x R
        else:
            weights = feats.new_ones(feats.shape[:2])
        log_p = F.log_softmax(part_logits, dim=-1)
        if self.fusion == "attention":
            mix = weights / weights.sum(1, keepdim=True)
        else:  # (F1 + a * F2) / (1 + a), F2 the weighted mean of the quadrants
            quad = weights[:, 1:] / weights[:, 1:].sum(1, keepdim=True)
            a = self.branch_weight
            mix = torch.cat([torch.full_like(weights[:, :1], 1.0 / (1 + a)), quad * (a / (1 + a))], dim=1)
        logits = torch.logsumexp(log_p + mix.clamp_min(1e-12).log().unsqueeze(-1), dim=1)
        return AttentionOutput(logits=logits, weights=weights, part_logits=part_logits)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self._head(x).logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_attention(self, x: torch.Tensor) -> AttentionOutput:
        """Fused log-probabilities, part weights ``B x R`` (order ``region_names``), part logits ``B x R x C``."""
        return self._head(self.forward_features(x))


@register_model(ModelConfig(
    name="region_attention", input_size=(3, 224, 224), target_layer="face_map", backbone=("backbone",),
    pretrained="torchvision IMAGENET1K_V1 backbone",
    paper="Multi-region attention network (FER Lab seed method), after Wang et al., Region Attention Networks, "
          "IEEE TIP 2020",
    origin="FER Lab (torchvision ResNet-18 backbone)",
    licence="MIT (FER Lab); BSD-3-Clause (torchvision backbone and ImageNet weights)"))
def region_attention(*, num_classes: int, pretrained: bool = False, **kwargs) -> RegionAttentionNet:
    """Face + four quadrants through a shared ResNet-18; options ``regions``, ``attention``, ``fusion``,
    ``branch_weight``, ``region_size``, ``drop_rate``, ``backbone``, ``backbone_options``."""
    return RegionAttentionNet(num_classes=num_classes, pretrained=pretrained, **kwargs)
