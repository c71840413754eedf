"""PAtt-Lite: a truncated MobileNetV1, a patch-extraction block and an attention classifier.

Paper: Ngwe et al., "PAtt-Lite: Lightweight Patch and Attention MobileNet for Challenging Facial Expression
Recognition", IEEE Access 2024. Reference code (Keras, MIT): github.com/JLREx/PAtt-Lite. This port: FER Lab (MIT);
the backbone is timm's ``mobilenetv1_100`` (Apache-2.0, code and ImageNet weights).

Architecture (input 224x224, as the reference resizes to):

* Backbone: MobileNetV1 (alpha 1, ReLU6) cut right after the ninth depthwise conv + BN + ReLU6 (Keras
  ``conv_dw_9_relu``, the reference's ``backbone.layers[-29]``): 14x14x512. In timm's numbering the 13 Keras blocks
  are ``blocks.0.0`` (1), ``blocks.1.0-1`` (2-3), ``blocks.2.0-1`` (4-5), ``blocks.3.0-5`` (6-11), ``blocks.4.0-1``
  (12-13), so the cut keeps ``conv_stem``, ``bn1``, ``blocks.0-2``, ``blocks.3.0-2`` and of ``blocks.3.3`` only
  ``conv_dw`` + ``bn1`` (BN and ReLU6 in one timm module). The kept modules keep timm's names, so the model's
  backbone keys are exactly timm's and the ImageNet weights load strictly.
* Patch extraction: SeparableConv(256, k4, s4, 'same', ReLU) -> 4x4; SeparableConv(256, k2, s2, 'valid', ReLU)
  -> 2x2; Conv 1x1 (256, ReLU). A Keras SeparableConv2D is a depthwise conv without bias + a pointwise conv with
  bias; 'same' pads like TensorFlow (the extra pixel, if any, bottom/right).
* Classifier: global average pooling -> Dropout(0.1) -> Dense(32, ReLU) -> BatchNorm -> dot-product self-attention
  with a learnable scalar scale (initialised to 1, Keras ``Attention(use_scale=True)``; no 1/sqrt(d)) -> Dense(C).
  ``forward`` returns logits (the reference ends in a softmax).

``attention="published" | "patch" | "none"`` (the first two registered as ``patt_lite`` and ``patt_lite_patch``;
``none`` is ``patt_lite_patch`` with ``model.options.attention: none``, the ablation baseline: the same layers and
parameters, the tokens pooled without the attention step, so an experiment changes only that):

* ``published`` -- WARNING: this reproduces a flaw of the reference code, acknowledged by its authors. Keras's
  ``Attention()([x, x])`` is applied to the pooled 2-D (batch, 32) tensor, so the scores ``scale * x x^T`` are a
  batch x batch matrix: **each sample attends over the other samples of its batch, not over patches**. A
  prediction therefore depends on what else is in the batch, in training and in evaluation: test accuracy changes
  with the evaluation batch size and order, and with a batch of one the attention is the identity. Kept so the
  published numbers (evaluated in batches) can be reproduced and compared; do not use it to explain single faces.
* ``patch`` -- the attention the paper describes: the 2x2 = 4 patch tokens (B, 4, 256) of the 1x1 conv go through
  the same Dense(32, ReLU) + BatchNorm per token, scaled dot-product self-attention across the 4 tokens (the same
  scalar scale), mean over tokens, Dense(C). Same parameters as ``published``; each sample is independent.
  :meth:`PAttLite.attention_weights` returns the (B, 4, 4) token attention.

Dropout options: ``drop_rate`` (0.1, after pooling; in ``patch`` on the tokens before Dense(32)),
``patch_drop_rate`` (SpatialDropout2d after the patch block) and ``attn_drop_rate`` (after the attention), the
last two 0 by default. The reference's fine-tuning stage (the two-stage recipe of issue 4) rebuilds the model
with all three at 0.2 (its 0.1 dropout is replaced, not added to); :meth:`PAttLite.set_drop_rates` switches a
built model over. Both stages call the backbone with ``training=False``, so its BatchNorm layers stay in inference
mode throughout (the recipe's job, not the model's).

Size: 1,102,697 parameters for 8 classes counting BatchNorm statistics as Keras does
(``count_params(model, with_bn_stats=True)``, the figure counted from the reference code), 1,093,033 without;
0.337 GMACs at 224 (both variants). ``target_layer`` is the backbone's 14x14x512 output (``blocks.3.3.bn1``).

Differences from the reference worth knowing: the ImageNet weights are timm's ``ra4_e3600_r224_in1k``, not
Keras's; timm pads stride-2 convs symmetrically (Keras pads bottom/right) and uses BatchNorm eps 1e-5 (the
weights were trained that way); the new BatchNorm uses Keras's eps 1e-3 and momentum 0.99 (PyTorch momentum 0.01),
Keras's running variance (biased) and takes a training batch of one (see :class:`BatchNorm1d`), and the new layers
Keras's Glorot-uniform init with zero biases. With that init the patch features are about 1e-3, so the attention
starts almost uniform (the published variant then outputs about the batch mean).

Input size: the patch map is 2x2 only from :data:`MIN_PATCH_INPUT` = 193 px up (:func:`patch_grid`: the backbone's
stride 16, then the stride-4 'same' and the stride-2 'valid' separable convs; 14 -> 4 -> 2 at 224, 12 -> 3 -> 1 at
192). Below it the map is 1x1 and attention over patches has a single token, the identity, so ``patch`` refuses
such an input when it is built (a ``ValueError``, reported by ``fer_core.runs.check_model`` before any run
exists). ``published`` pools the map before its (cross-batch) attention, so it takes any size; under 65 px the
map entering the second separable conv is 1x1, smaller than its kernel, where Keras would raise: there (only there,
and so only for ``published``) it is zero-padded to 2x2, giving a 1x1 patch map, so small smoke tests of the
published variant still run. The reference notebook feeds
120 px images resized to 224.
"""

from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from torch import nn

from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import load_state_dict, refuse_weights_path, timm_state_dict

TIMM_WEIGHTS = "mobilenetv1_100.ra4_e3600_r224_in1k"
ATTENTIONS = ("published", "patch", "none")
# timm tensors past the cut (block 9's pointwise conv and everything after it) and the model's new tensors.
DROPPED = ("blocks.3.3.conv_pw.", "blocks.3.3.bn2.", "blocks.3.4.", "blocks.3.5.", "blocks.4.", "conv_head.",
           "bn2.", "classifier.")
NEW = ("patch.", "pre_fc.", "pre_bn.", "attn.", "head.")


def patch_grid(size: int) -> int:
    """Side of the patch map for an input side of ``size`` pixels (2 at 224): the backbone's four stride-2 3x3
    convs with padding 1 (``conv_stem`` and the depthwise convs of Keras blocks 2, 4 and 6; ``ceil(n / 2)`` each,
    output stride 16), then the 'same' k4 s4 separable conv (``ceil(n / 4)``), then the 'valid' k2 s2 one
    (``(n - 2) // 2 + 1``; a map under 2 is zero-padded to 2, which gives 1)."""
    s = size
    for _ in range(4):
        s = (s + 2 - 3) // 2 + 1
    s = math.ceil(s / 4)
    return (max(s, 2) - 2) // 2 + 1


MIN_PATCH_INPUT = next(n for n in range(1, 4096) if patch_grid(n) >= 2)
"""The smallest input side (193 px) that gives the 2x2 patch map, i.e. more than one token to attend over."""


def keras_pad(x: torch.Tensor, kernel: int, stride: int, padding: str) -> torch.Tensor:
    """Zero padding as TensorFlow's 'same' (extra pixel bottom/right); 'valid' pads only a map smaller than
    ``kernel`` up to it (Keras would raise)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):                 # F.pad order: width, then height
        if padding == "same":
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        else:
            pads += [0, max(kernel - size, 0)]
    return F.pad(x, pads) if any(pads) else x


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: depthwise conv (no bias) + pointwise 1x1 conv (bias) + activation."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: str):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, stride, groups=in_chs, bias=False)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_dw(keras_pad(x, self.kernel_size, self.stride, self.padding))
        return self.act(self.conv_pw(x))


class PatchExtraction(nn.Sequential):
    """SeparableConv(k4, s4, same) -> SeparableConv(k2, s2, valid) -> Conv 1x1, all ReLU: 14x14 -> 2x2 patches."""

    def __init__(self, in_chs: int = 512, chs: int = 256):
        super().__init__()
        self.sep1 = SeparableConv2d(in_chs, chs, 4, 4, "same")
        self.sep2 = SeparableConv2d(chs, chs, 2, 2, "valid")
        self.conv = nn.Conv2d(chs, chs, 1)
        self.act = nn.ReLU(inplace=True)


class DotProductAttention(nn.Module):
    """Keras ``Attention(use_scale=True)`` as self-attention: ``softmax(scale * x x^T) x`` over the second-to-last
    axis of ``x``. On (B, N, D) tokens that is attention across the N tokens of each sample; on a 2-D (B, D) tensor
    (what the reference feeds it) it is attention across the batch."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.scale * (x @ x.transpose(-2, -1)), dim=-1)
        return weights @ x, weights


class BatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with Keras ``BatchNormalization``'s running variance: in training a batch is normalised with
    its own (biased) variance, as in PyTorch, and the running variance moves towards that same biased variance
    (PyTorch's moves towards the unbiased one, n / (n - 1) larger: 8 / 7 at the notebook's batch of 8; checked
    against Keras in tests/test_parity.py). It also takes a training batch of one (the short last batch of an
    epoch): that batch is normalised with the running statistics, which it leaves alone (PyTorch cannot take batch
    statistics from one sample; Keras would output the bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.track_running_stats):
            return super().forward(x)
        if x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        dims = [0, *range(2, x.dim())]
        with torch.no_grad():
            xf = x.detach().float()
            self.running_mean.lerp_(xf.mean(dims), momentum)
            self.running_var.lerp_(xf.var(dims, unbiased=False), momentum)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class HalfDepthwiseSeparable(nn.Module):
    """The depthwise half of timm's ``DepthwiseSeparableConv`` (same names: ``conv_dw``, ``bn1`` with ReLU6)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.conv_dw, self.bn1 = block.conv_dw, block.bn1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv_dw(x))


def _keras_init(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases (Keras defaults) for the new conv and dense layers."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)       # fan sums agree with Keras for depthwise kernels too
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PAttLite(nn.Module):
    """Truncated MobileNetV1 -> patch extraction -> pooled (or per-patch) Dense + BN -> self-attention -> Dense.

    Args:
        num_classes: number of logits.
        attention: "published" (across the batch, as the reference code), "patch" (across the 2x2 patches) or
            "none" (the patch variant without its attention step: the ablation baseline, same parameters).
        drop_rate: dropout after pooling (``patch``: on the tokens before Dense(32)).
        patch_drop_rate: SpatialDropout2d after the patch block (fine-tuning stage).
        attn_drop_rate: dropout after the attention (fine-tuning stage).
    """

    def __init__(self, num_classes: int = 7, attention: str = "published", drop_rate: float = 0.1,
                 patch_drop_rate: float = 0.0, attn_drop_rate: float = 0.0, hidden: int = 32):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; valid: {', '.join(ATTENTIONS)}")
        self.attention = attention
        mnet = timm.create_model("mobilenetv1_100", pretrained=False)
        self.conv_stem, self.bn1 = mnet.conv_stem, mnet.bn1
        stage4 = nn.Sequential(*mnet.blocks[3][:3], HalfDepthwiseSeparable(mnet.blocks[3][3]))
        self.blocks = nn.Sequential(*mnet.blocks[:3], stage4)
        self.patch = PatchExtraction(512, 256)
        self.patch_drop = nn.Dropout2d(patch_drop_rate)
        self.head_drop = nn.Dropout(drop_rate)
        self.pre_fc = nn.Linear(256, hidden)
        self.pre_bn = BatchNorm1d(hidden, eps=1e-3, momentum=0.01)     # Keras BatchNormalization defaults
        self.attn = DotProductAttention()
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.head = nn.Linear(hidden, num_classes)
        self.num_features = hidden
        for module in (self.patch, self.pre_fc, self.head):
            _keras_init(module)

    def set_drop_rates(self, drop_rate: float = 0.2, patch_drop_rate: float = 0.2, attn_drop_rate: float = 0.2) -> None:
        """Switch the dropout rates of a built model (defaults: the reference's fine-tuning stage)."""
        self.head_drop.p, self.patch_drop.p, self.attn_drop.p = drop_rate, patch_drop_rate, attn_drop_rate

    def forward_backbone(self, x: torch.Tensor) -> torch.Tensor:
        """The truncated MobileNetV1's 14x14x512 map (at 224), Keras ``conv_dw_9_relu``."""
        return self.blocks(self.bn1(self.conv_stem(x)))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The patch block's (B, 256, 2, 2) map (at 224)."""
        return self.patch(self.forward_backbone(x))

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch map -> (attended features (B, 32), attention weights (B, B) or (B, N, N))."""
        x = self.patch_drop(x)
        if self.attention == "published":
            x = self.pre_bn(F.relu(self.pre_fc(self.head_drop(x.mean((2, 3))))))
            return self.attn(x)
        tokens = x.flatten(2).transpose(1, 2)                               # B x N x 256, N = 4 at 224
        b, n, _ = tokens.shape
        tokens = F.relu(self.pre_fc(self.head_drop(tokens)))
        tokens = self.pre_bn(tokens.reshape(b * n, -1)).reshape(b, n, -1)
        if self.attention == "none":  # the ablation: every token as it is, so only the attention step differs
            return tokens.mean(1), torch.full((b, n, n), 1.0 / n, device=tokens.device, dtype=tokens.dtype)
        out, weights = self.attn(tokens)
        return out.mean(1), weights

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.attn_drop(self._attend(x)[0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights for images ``x``: (B, 4, 4) patch-to-patch at 224 for ``patch`` (rows are the 2x2
        patches in row-major order, each row sums to 1); for ``published`` the (B, B) sample-to-sample matrix."""
        return self._attend(self.forward_features(x))[1]


def check_input_size(attention: str, input_size: tuple[int, int]) -> None:
    """Refuse an input whose patch map would hold a single token for the ``patch`` attention (the identity)."""
    grid = tuple(patch_grid(int(side)) for side in input_size)
    if attention == "patch" and min(grid) < 2:
        raise ValueError(
            f"model.input_size {'x'.join(map(str, input_size))} gives a {grid[0]}x{grid[1]} patch map: the patch "
            f"attention would attend over one token (the identity); it needs at least {MIN_PATCH_INPUT} px for the "
            f"2x2 map (the reference resizes its 120 px faces to 224): set model.input_size to {MIN_PATCH_INPUT} or "
            "more, or use model.name: patt_lite (the published variant pools the map)")


def build_patt_lite(*, num_classes: int, attention: str, pretrained: bool = False, weights_path: str | None = None,
                    input_size: tuple[int, int] = (224, 224), **kwargs) -> PAttLite:
    """A PAtt-Lite; ``pretrained=True`` loads timm's ImageNet MobileNetV1 into the backbone (from ``weights_path``
    when given: a timm ``mobilenetv1_100`` state dict), strictly: the layers past the cut are dropped, the patch
    block and head are new, anything else that does not match is an error. The report is ``model.load_report``.
    ``input_size`` (height, width): the ``patch`` variant refuses one under :data:`MIN_PATCH_INPUT`."""
    check_input_size(attention, input_size)
    model = PAttLite(num_classes=num_classes, attention=attention, **kwargs)
    if pretrained:
        state, source = timm_state_dict(TIMM_WEIGHTS, weights_path)
        model.load_report = load_state_dict(model, state, source=source, new=NEW, drop=DROPPED)
    else:
        refuse_weights_path(weights_path)
    return model


_COMMON = dict(
    input_size=(3, 224, 224), backbone=("conv_stem", "bn1", "blocks"),
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), target_layer="blocks.3.3.bn1",
    paper="Ngwe et al., PAtt-Lite: Lightweight Patch and Attention MobileNet for Challenging Facial Expression "
          "Recognition, IEEE Access 2024",
    origin="timm mobilenetv1_100 backbone + FER Lab (after the Keras reference, github.com/JLREx/PAtt-Lite)",
    licence="MIT (FER Lab code; the Keras reference is MIT), Apache-2.0 (timm code and ImageNet weights)",
    pretrained=f"timm {TIMM_WEIGHTS} (backbone; patch block and head initialised)")


@register_model(ModelConfig(name="patt_lite", **_COMMON))
def patt_lite(*, num_classes: int, pretrained: bool = False, attention: str = "published",
              input_size: tuple[int, int] = (224, 224), **kwargs) -> PAttLite:
    """PAtt-Lite as published: the attention runs across the batch (see the module docstring)."""
    return build_patt_lite(num_classes=num_classes, attention=attention, pretrained=pretrained,
                           input_size=input_size, **kwargs)


@register_model(ModelConfig(name="patt_lite_patch", **_COMMON))
def patt_lite_patch(*, num_classes: int, pretrained: bool = False, attention: str = "patch",
                    input_size: tuple[int, int] = (224, 224), **kwargs) -> PAttLite:
    """PAtt-Lite with the attention across its 2x2 patch tokens, as the paper describes (input >= 193 px)."""
    return build_patt_lite(num_classes=num_classes, attention=attention, pretrained=pretrained,
                           input_size=input_size, **kwargs)
