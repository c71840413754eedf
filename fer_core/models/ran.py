"""Region Attention Network (RAN) as its authors' code defines it: the face and five crops through one backbone,
self-attention, relation attention and feature-level fusion.

Paper: Wang et al., "Region Attention Networks for Pose and Occlusion Robust Facial Expression Recognition", IEEE
TIP 2020. Reference code: github.com/kaiwang960112/Challenge-condition-FER-dataset (no licence file), model in
``FERplus_dir/attention_rank_loss.py`` (``ResNet.forward``, ``MyLoss``), training in
``FERplus_dir/train_attention_rank_loss.py``, crops in ``AffectNet_dir/simple_sample/part_attentioon_sample_fly.py``.
Written for FER Lab (MIT) from those descriptions, no code copied; backbone torchvision ResNet-18 (BSD-3-Clause)
with its ImageNet weights when ``pretrained=True`` (RAN starts from a face-identity model, MS-Celeb-1M).

Parts (``model.region_names``, the order of every ``B x R`` output): the whole face, then five crops, each given as
(left, top, right, bottom) fractions of the face and cut at ``int(fraction * size)`` pixels, as PIL's ``crop``
with the reference's ``int()`` boxes: ``center_down`` (0.125, 0.25, 0.875, 1), ``top_left`` (0, 0, 0.75, 0.75),
``top_right`` (0.25, 0, 1, 0.75), ``center_90`` (0.05, 0.05, 0.95, 0.95) and ``center_80`` (0.1, 0.1, 0.9, 0.9):
the first five boxes of the on-the-fly sampler (whose sixth, a 0.75 centre crop, its comment calls the original
image; the FERPlus model reads six images per face from disk, crops not published, the face last). RAN feeds every
part at the full network input (``CaffeCrop`` resizes each to 224), so here every crop is resized to the model's
input size. With ``f_i`` the pooled backbone feature of part ``i`` (512-d for ResNet-18), the forward pass is
(``attention_rank_loss.py``, ``ResNet.forward``):

* self-attention ``alpha_i = softmax_i(sigmoid(FC_alpha(f_i)))``, ``FC_alpha: d -> 1``; the softmax runs across
  the six parts (``F.softmax(alphas_stack, dim=2)``), so the weights sum to 1 per face;
* ``v_m = sum_i alpha_i f_i / sum_i alpha_i`` and ``z_i = [f_i; v_m]`` (2d);
* relation attention ``beta_i = softmax_i(sigmoid(FC_beta(z_i)))``, ``FC_beta: 2d -> 1``, also softmaxed across
  the parts (``F.softmax(betas_stack, dim=2)``);
* fusion at feature level ``P = sum_i alpha_i beta_i z_i / sum_i alpha_i beta_i`` and logits ``FC(P)``,
  ``FC: 2d -> C`` (1024 -> 8 in the reference).

``forward_attention`` returns the logits, the softmaxed ``alpha`` (``B x 6``, face first: what RAN's region-biased
loss reads, ``train.region_bias``: ``max(0, 0.1 - (max of the five crops' alpha - the face's alpha))``, weight 1 in
its training script) and per-part logits ``FC(z_i)`` (``B x 6 x C``). ``FC`` is affine and the fusion weights sum
to 1, so ``logits = sum_i w_i FC(z_i)`` with ``w = alpha * beta / sum(alpha * beta)``: the part logits say what
each part contributes. :meth:`RAN.attend` returns every intermediate (alpha, beta, fused feature) for parity tests.

Input and normalisation: the engine resizes the face to the model's input size (bilinear, antialiased) and
normalises it with the backbone's mean and std (ImageNet's for ResNet-18, 0.5 for ``small_cnn``); the crops are
cut from that normalised face and resized to the same size with the same bilinear, antialiased interpolation, so
face and crops are normalised identically (normalisation is per-channel affine and the interpolation weights sum
to 1: cropping before or after normalising gives the same values). The reference instead feeds ``ToTensor()``
pixels in [0, 1] with no mean/std, and resizes each crop with PIL's default filter (nearest before Pillow 7,
bicubic after); a pretrained backbone here expects its own normalisation.

BatchNorm: all six parts have the same scale (the input size), and the backbone runs once per part, crops first
and the face last as the reference's loop over ``x[..., i]`` does: in training each part is normalised with its
own batch statistics and the running statistics are updated six times per step in that order, as in the reference.
Costs six backbone passes per face.

Options: ``backbone`` (a registered model with an ``fc`` classifier; ``small_cnn`` for CPU experiments),
``backbone_options``, ``drop_rate`` (dropout on the fused feature before ``FC``; RAN has none, 0 by default),
``pretrained``, ``weights_path``. The CAM layer ``face_map`` is the face's feature map (seen once per forward).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fer_core.models.registry import AttentionOutput, ModelConfig, attach_backbone, register_model

CROPS: tuple[tuple[str, tuple[float, float, float, float]], ...] = (
    ("center_down", (0.125, 0.25, 0.875, 1.0)),
    ("top_left", (0.0, 0.0, 0.75, 0.75)),
    ("top_right", (0.25, 0.0, 1.0, 0.75)),
    ("center_90", (0.05, 0.05, 0.95, 0.95)),
    ("center_80", (0.1, 0.1, 0.9, 0.9)),
)
"""RAN's fixed crops, in the reference's part order, as (left, top, right, bottom) fractions of the face."""
REGION_NAMES = ("face", *(name for name, _ in CROPS))


def ran_crops(x: torch.Tensor, size: int | tuple[int, int] | None = None) -> list[torch.Tensor]:
    """The five crops of each face in ``x`` (``B x C x H x W``), in :data:`CROPS` order, each resized to ``size``
    (default: the size of ``x``) with bilinear, antialiased interpolation. Pixel bounds are
    ``int(fraction * width)`` and ``int(fraction * height)``, as the reference's PIL boxes."""
    h, w = x.shape[-2:]
    out_size = (h, w) if size is None else (size, size) if isinstance(size, int) else tuple(size)
    crops = []
    for _, (left, top, right, bottom) in CROPS:
        crop = x[..., int(top * h):int(bottom * h), int(left * w):int(right * w)]
        if crop.shape[-2:] != out_size:
            crop = F.interpolate(crop, size=out_size, mode="bilinear", align_corners=False, antialias=True)
        crops.append(crop)
    return crops


class RANAttention(NamedTuple):
    """Every intermediate of RAN's head for ``B`` faces and ``R = 6`` parts (face first)."""

    alpha: torch.Tensor        # B x R, softmax over the parts of sigmoid(FC_alpha(f_i))
    beta: torch.Tensor         # B x R, softmax over the parts of sigmoid(FC_beta([f_i; v_m]))
    fused: torch.Tensor        # B x 2d, sum_i alpha_i beta_i [f_i; v_m] / sum_i alpha_i beta_i
    logits: torch.Tensor       # B x C, FC(fused)
    part_logits: torch.Tensor  # B x R x C, FC([f_i; v_m])


class RAN(nn.Module):
    """Shared backbone over the face and five crops at the input size, self- and relation attention, fusion of the
    concatenated features, one classifier.

    Args:
        num_classes: number of classes.
        drop_rate: dropout on the fused feature before the classifier (RAN: none).
        pretrained: load the backbone's ImageNet weights.
        weights_path: a local copy of those weights.
        backbone: the shared encoder, a registered model with an ``fc`` classifier (ResNet-18 in RAN; ``small_cnn``
            makes CPU experiments fast); its input format becomes the network's.
        backbone_options: options of the backbone.
    """

    region_names = REGION_NAMES

    def __init__(self, num_classes: int = 7, *, drop_rate: float = 0.0, pretrained: bool = False,
                 weights_path: str | None = None, backbone: str = "resnet18", backbone_options: dict | None = None):
        super().__init__()
        if not 0 <= drop_rate < 1:
            raise ValueError(f"drop_rate must be in [0, 1) (got {drop_rate})")
        attach_backbone(self, backbone, pretrained=pretrained, weights_path=weights_path, options=backbone_options)
        d = self.num_features = self.backbone.num_features
        self.face_map = nn.Identity()  # CAM target: the face's feature map, seen once per forward
        self.alpha = nn.Sequential(nn.Linear(d, 1), nn.Sigmoid())
        self.beta = nn.Sequential(nn.Linear(2 * d, 1), nn.Sigmoid())
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(2 * d, num_classes)

    def encode(self, face: torch.Tensor, crops: list[torch.Tensor]) -> torch.Tensor:
        """Pooled features ``B x 6 x d`` (face first) of a face and its crops; the backbone runs once per part,
        the crops first and the face last (the reference's order, which its BatchNorm statistics follow)."""
        bb = self.backbone
        pooled = [bb.forward_head(bb.forward_features(c), pre_logits=True) for c in crops]
        pooled.insert(0, bb.forward_head(self.face_map(bb.forward_features(face)), pre_logits=True))
        return torch.stack(pooled, dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of every part, ``B x 6 x d`` in ``region_names`` order; crops at the input's size."""
        return self.encode(x, ran_crops(x))

    def attend(self, feats: torch.Tensor) -> RANAttention:
        """RAN's head on part features ``B x R x d`` (face first)."""
        alpha = torch.softmax(self.alpha(feats).squeeze(-1), dim=1)                        # B x R
        v_m = (feats * alpha.unsqueeze(-1)).sum(1) / alpha.sum(1, keepdim=True)            # B x d
        z = torch.cat([feats, v_m.unsqueeze(1).expand_as(feats)], dim=-1)                  # B x R x 2d
        beta = torch.softmax(self.beta(z).squeeze(-1), dim=1)                              # B x R
        w = alpha * beta
        fused = (z * w.unsqueeze(-1)).sum(1) / w.sum(1, keepdim=True)                      # B x 2d
        logits = self.fc(self.head_drop(fused))
        return RANAttention(alpha, beta, fused, logits, self.fc(z))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        out = self.attend(x)
        return out.fused if pre_logits else out.logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_attention(self, x: torch.Tensor) -> AttentionOutput:
        """Logits, the softmaxed self-attention weights ``alpha`` (``B x 6``, ``region_names`` order) and the
        per-part logits ``FC([f_i; v_m])`` (``B x 6 x C``)."""
        out = self.attend(self.forward_features(x))
        return AttentionOutput(logits=out.logits, weights=out.alpha, part_logits=out.part_logits)


@register_model(ModelConfig(
    name="ran", input_size=(3, 224, 224), target_layer="face_map", backbone=("backbone",),
    pretrained="torchvision IMAGENET1K_V1 backbone",
    paper="Wang et al., Region Attention Networks for Pose and Occlusion Robust Facial Expression Recognition, "
          "IEEE TIP 2020",
    origin="FER Lab, after the authors' code (github.com/kaiwang960112/Challenge-condition-FER-dataset); "
           "torchvision ResNet-18 backbone",
    licence="MIT (FER Lab); BSD-3-Clause (torchvision backbone and ImageNet weights)"))
def ran(*, num_classes: int, pretrained: bool = False, **kwargs) -> RAN:
    """RAN: face + five crops at the input size through a shared ResNet-18, self- and relation attention,
    feature-level fusion; options ``backbone``, ``backbone_options``, ``drop_rate``."""
    return RAN(num_classes=num_classes, pretrained=pretrained, **kwargs)
