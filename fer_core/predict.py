"""Expressions of the faces in photos: find the faces, crop them, and classify them with a model.

Usage::

    from fer_core.predict import Predictor
    predictor = Predictor.from_model()                       # the pretrained FER2013 mini-Xception, on the CPU
    predictor = Predictor.from_run("runs/my-run")            # or a trained run's best weights
    predictor = Predictor.from_run("runs/my-run", calibrated=True)   # probabilities softmax(logits / T), the run's T
    for p in predictor.predict("photo.jpg", faces="all"):
        print(p.box, p.top, p.probs)                         # probs: {class name: probability}, the model's order
    result = predictor.explain("photo.jpg", "gradcam")       # the largest face's explanation (fer_core.explain)
    predictor.predict_crop(face_crop), predictor.explain_crop(face_crop, "lime")   # a crop as it is
    predictor.stage_layers()                                 # the layers to look at stage by stage
    predictor = Predictor.from_onnx("model.onnx")            # an exported file (fer_core.export) in onnxruntime:
                                                             # predict/find/probabilities without torch

Faces are found and cropped by :mod:`fer_core.face`; each crop goes through the model's own preprocessing (its
``model.cfg``: channels, input size, mean and std) by :class:`fer_core.transforms.BatchTransform`, without
augmentation. With a temperature ``T`` (a run's, fitted on its validation split by ``python -m fer_core calibrate``),
the probabilities are ``softmax(logits / T)``: the same top class, probabilities closer to how often the model is
right. Explanations are of the model's logits either way.

Thread safety: :meth:`Predictor.predict` and :meth:`Predictor.predict_crop` keep no state between calls (the model
is in eval mode and runs under ``torch.inference_mode``), so one predictor may serve several threads (e.g. a
``st.cache_resource``). :meth:`Predictor.explain` attaches hooks to the model, so explanations are serialised by a
lock held by the predictor.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fer_core.face import DEFAULT_MAX_PIXELS, Face, load_image
from fer_core.face import faces as find_faces

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

# torch is imported where it is used, so that a Predictor of an exported ONNX file (Predictor.from_onnx) works where
# torch is not installed: it needs numpy, Pillow, OpenCV (face detection) and onnxruntime only.

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""BT.601 luma weights, as :data:`fer_core.transforms.GREY_WEIGHTS` (which needs torch; a test keeps them equal)."""


def use_app_threads() -> int:
    """Set torch's thread count for a long-lived process that serves several users (the app): ``$OMP_NUM_THREADS``
    when set, else the CPU count, at most 4 (the models are small and the sessions share the process).
    Returns the count set."""
    try:
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        threads = max(1, min(4, os.cpu_count() or 1))
    import torch

    torch.set_num_threads(threads)
    return threads


def _checked_temperature(temperature: Any) -> float:
    """``temperature`` as a float, or ValueError when it is not a finite number above 0 (as
    :func:`fer_core.calibration.check_temperature`, which needs torch)."""
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"temperature must be a finite number above 0, got {temperature!r}")
    return value


def pixels_for_model(images: np.ndarray, input_size: tuple[int, int, int] | list[int]) -> np.ndarray:
    """uint8 ``N x C x H x W`` (C 1 or 3) -> float32 pixels in [0, 255] with the model's channels and size: what an
    exported graph (:mod:`fer_core.export`) takes. Numpy and Pillow only, the same steps as
    :func:`fer_core.transforms.to_model_input` (RGB -> grey by BT.601 luma, grey -> RGB by repetition, then an
    antialiased bilinear resize, Pillow's, which torch's ``antialias=True`` reproduces) on the 0-255 scale.
    """
    from PIL import Image

    channels, height, width = (int(v) for v in input_size)
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be N x C x H x W with 1 or 3 channels (got shape {x.shape})")
    if x.shape[1] == 3 and channels == 1:
        x = np.tensordot(np.asarray(GREY_WEIGHTS, dtype=np.float32), x, axes=([0], [1]))[:, None]
    elif x.shape[1] == 1 and channels == 3:
        x = np.repeat(x, 3, axis=1)
    if x.shape[-2:] != (height, width):
        x = np.stack([[np.asarray(Image.fromarray(plane, mode="F").resize((width, height), Image.BILINEAR))
                       for plane in image] for image in x])
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class FacePrediction:
    """A model's prediction for one face.

    Attributes:
        face: the face (box, crop, detector, eyes, alignment; see :class:`fer_core.face.Face`).
        probs: ``{class name: probability}`` in the model's class order (``model.cfg.class_names``).
    """

    face: Face
    probs: dict[str, float]

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the face in the image."""
        return self.face.box

    @property
    def crop(self) -> np.ndarray:
        """The RGB uint8 crop the model saw (before its own resizing)."""
        return self.face.crop

    @property
    def detector(self) -> str:
        """Which detector found the face (see :attr:`fer_core.face.Face.detector`)."""
        return self.face.detector

    @property
    def aligned(self) -> bool:
        """Whether the crop was rotated to level the eyes."""
        return self.face.aligned

    @property
    def top(self) -> str:
        """The most probable class."""
        return max(self.probs, key=self.probs.__getitem__)

    @property
    def score(self) -> float:
        """The top class's probability."""
        return self.probs[self.top]

    def ranked(self) -> list[tuple[str, float]]:
        """``(class, probability)`` pairs, most probable first."""
        return sorted(self.probs.items(), key=lambda kv: kv[1], reverse=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (without the crop's pixels)."""
        return {**self.face.to_dict(), "top": self.top, "probs": {k: round(v, 6) for k, v in self.probs.items()}}


@dataclass(frozen=True, eq=False)
class FaceExplanation:
    """An explanation of a model's output for one face.

    Attributes:
        prediction: the face and the model's probabilities for it.
        explanation: what ``fer_core.explain.explain`` returned (``.map`` at the crop's size, ``.target``,
            ``.probs``, ``.method``).
        seconds: wall time of the explanation method alone.
    """

    prediction: FacePrediction
    explanation: Any
    seconds: float

    @property
    def map(self) -> np.ndarray:
        """The explanation map, ``H x W`` float at the crop's size."""
        return self.explanation.map

    def overlay(self) -> np.ndarray:
        """The map drawn over the face crop (``fer_core.explain.overlay``), RGB uint8 at the crop's size."""
        from fer_core.explain import overlay

        return overlay(self.prediction.crop, self.explanation.map)


class Predictor:
    """A classification model with its preprocessing, for faces in photos.

    Args:
        model: a model built by :func:`fer_core.models.create_model` (it carries ``model.cfg``).
        device: where the model runs.
        name: how to call it in reports (default: ``model.cfg.name``).
        temperature: divide the logits by it before the softmax (temperature scaling); None: the plain softmax.
    """

    def __init__(self, model: nn.Module, *, device: str | torch.device = "cpu", name: str = "",
                 temperature: float | None = None):
        import torch

        from fer_core.transforms import BatchTransform

        cfg = getattr(model, "cfg", None)
        if cfg is None:
            raise ValueError(f"{type(model).__name__} has no .cfg (input size, normalisation, class names): "
                             "build it with fer_core.models.create_model or load a run with Predictor.from_run")
        if temperature is not None:
            from fer_core.calibration import check_temperature

            temperature = check_temperature(temperature)
        self.temperature = temperature
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.class_names: tuple[str, ...] = tuple(cfg.class_names)
        self.name = name or cfg.name
        self._transform = BatchTransform(cfg, device=self.device)
        self._explain_lock = threading.Lock()
        self.session: Any = None  # an onnxruntime session (from_onnx) instead of the model

    @classmethod
    def from_model(cls, name: str = "mini_xception_fer2013", device: str | torch.device = "cpu",
                   **create_kwargs: Any) -> Predictor:
        """A registered model (``fer_core.models.create_model``; ``num_classes`` defaults to the variant's own
        class names, so ``mini_xception_fer2013`` comes with its FER2013 weights and seven classes)."""
        from fer_core.models import create_model, model_info

        create_kwargs.setdefault("num_classes", len(model_info(name).class_names))
        return cls(create_model(name, **create_kwargs), device=device, name=name)

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, weights: str = "best", device: str | torch.device = "cpu",
                 calibrated: bool = False) -> Predictor:
        """A trained run's model with its ``checkpoints/<weights>`` (:func:`fer_core.runs.load_run_model`); with
        ``calibrated``, its probabilities divide the logits by the run's temperature (``calibration.json``).

        Raises:
            FileNotFoundError: ``calibrated`` and the run has no temperature (the message says to run ``python -m
                fer_core calibrate RUN``); or no such weights.
            ValueError: ``calibrated`` and the temperature was fitted for other weights.
        """
        from fer_core.runs import load_run_model, stored_temperature

        temperature = stored_temperature(run_dir, weights, required=True) if calibrated else None
        model = load_run_model(run_dir, weights=weights, device=device)
        name = f"{os.path.basename(os.path.normpath(run_dir))} ({weights})"
        return cls(model, device=device, name=name, temperature=temperature)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, *, temperature: float | None | Literal["file"] = None,
                  threads: int | None = None) -> Predictor:
        """An exported ONNX file (:mod:`fer_core.export`) run by onnxruntime, without torch: :meth:`predict`,
        :meth:`predict_crop`, :meth:`find` and :meth:`probabilities` work as with a PyTorch model (the class names,
        channels and input size come from the file's metadata); explanations and layers need the PyTorch model.

        Args:
            path: the ``.onnx`` file.
            temperature: divide the logits by it; ``"file"``: the temperature stored in the file (a run's, fitted by
                ``python -m fer_core calibrate``; an error when it has none); None: the plain softmax.
            threads: onnxruntime's intra-op threads (None: its default).

        Raises:
            FileNotFoundError: no such file.
            ValueError: the file has no FER Lab metadata (not written by ``fer_core.export``), or a bad temperature.
            ImportError: onnxruntime is not installed.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (write one with `python -m fer_core export RUN`)")
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(f"Predictor.from_onnx needs onnxruntime (pip install onnxruntime): {err}") from None
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        raw = session.get_modelmeta().custom_metadata_map
        missing = [k for k in ("class_names", "input_size") if k not in raw]
        if missing:
            raise ValueError(f"{path} has no {', '.join(missing)} in its metadata: not written by fer_core.export "
                             "(export it with `python -m fer_core export RUN --format onnx`)")
        meta = {k: json.loads(v) for k, v in raw.items()}
        if temperature == "file":
            if meta.get("temperature") is None:
                raise ValueError(f"{path} stores no temperature (its run had none fitted when it was exported); run "
                                 "`python -m fer_core calibrate RUN` and export again, or leave the temperature out")
            temperature = meta["temperature"]
        self = cls.__new__(cls)
        self.model, self.cfg, self.device, self.session, self.metadata = None, None, "cpu", session, meta
        self.temperature = None if temperature is None else _checked_temperature(temperature)
        self.class_names = tuple(meta["class_names"])
        self.input_size = tuple(int(v) for v in meta["input_size"])
        run = f" of run {meta['run_id']}" if meta.get("run_id") else ""
        self.name = f"{path.name} ({meta.get('model', '?')}{run}, onnx)"
        self._explain_lock = threading.Lock()
        return self

    def with_temperature(self, temperature: float | None) -> Predictor:
        """This predictor with another temperature (None: none), sharing its model and its explanation lock (so it
        loads nothing and is as thread-safe as this one)."""
        other = copy.copy(self)
        other.temperature = None if temperature is None else _checked_temperature(temperature)
        return other

    def __repr__(self) -> str:
        scaled = "" if self.temperature is None else f", temperature={self.temperature:.4g}"
        return f"Predictor({self.name}, {len(self.class_names)} classes, device={self.device}{scaled})"

    # ----------------------------------------------------------------------------------------- prediction
    def probabilities(self, crops: list[np.ndarray]) -> np.ndarray:
        """Softmax outputs (``N x C``, the model's class order) for RGB uint8 face crops of any size; with a
        :attr:`temperature`, of the logits divided by it."""
        if not crops:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        if self.session is not None:
            # each crop converted and resized on its own (they differ in size), then one run of the graph
            x = np.concatenate([pixels_for_model(np.ascontiguousarray(c).transpose(2, 0, 1)[None], self.input_size)
                                for c in crops])
            logits = self.session.run(None, {self.session.get_inputs()[0].name: x})[0].astype(np.float64)
            z = logits if self.temperature is None else logits / self.temperature
            z = np.exp(z - z.max(1, keepdims=True))
            return (z / z.sum(1, keepdims=True)).astype(np.float32)
        import torch

        with torch.inference_mode():
            # each crop is resized by the transform on its own (they differ in size), then one forward pass
            x = torch.cat([self._transform(torch.from_numpy(np.ascontiguousarray(c)).permute(2, 0, 1)[None])
                           for c in crops])
            logits = self.model(x).float()
            return torch.softmax(logits if self.temperature is None else logits / self.temperature, dim=1).cpu().numpy()

    def _predictions(self, found: list[Face]) -> list[FacePrediction]:
        probs = self.probabilities([f.crop for f in found])
        return [FacePrediction(face=f, probs=dict(zip(self.class_names, map(float, p), strict=True)))
                for f, p in zip(found, probs, strict=True)]

    def find(self, image: Any, faces: Literal["largest", "all"] = "largest", whole_image_if_none: bool = False,
             *, max_pixels: int | None = DEFAULT_MAX_PIXELS, **detect_options: Any) -> list[Face]:
        """The faces :meth:`predict` classifies (:func:`fer_core.face.faces`)."""
        return find_faces(load_image(image, max_pixels=max_pixels), faces, whole_image_if_none, **detect_options)

    def predict(self, image: Any, faces: Literal["largest", "all"] = "largest", whole_image_if_none: bool = False,
                *, max_pixels: int | None = DEFAULT_MAX_PIXELS, **detect_options: Any) -> list[FacePrediction]:
        """Classify the faces in an image.

        Args:
            image: a path, bytes, file object, PIL image or RGB array (:func:`fer_core.face.load_image`).
            faces: ``"largest"`` (one prediction) or ``"all"`` (largest first).
            whole_image_if_none: with no face found, classify the centre square of the image (its prediction's
                ``detector`` is ``"whole_image"``) instead of raising.
            max_pixels: refuse larger images before decoding them.
            **detect_options: passed to :func:`fer_core.face.detect_faces` (``min_size``, ``margin``, ``align``...).

        Raises:
            NoFaceFound: no face, and ``whole_image_if_none`` is False.
            ImageError: the image cannot be read.
        """
        return self._predictions(self.find(image, faces, whole_image_if_none, max_pixels=max_pixels,
                                           **detect_options))

    def predict_crop(self, crop: Any) -> FacePrediction:
        """Classify an image that is already a face crop, as it is (no detection; a non-square crop is stretched
        to the model's input size). Its box is the whole image and its detector ``"given"``."""
        rgb = load_image(crop)
        h, w = rgb.shape[:2]
        face = Face(box=(0, 0, w, h), crop=rgb, detector="given", crop_box=(0, 0, w, h))
        return self._predictions([face])[0]

    # ----------------------------------------------------------------------------------------- explanation
    def _need_model(self, what: str) -> None:
        if self.model is None:
            raise ValueError(f"{what} need the PyTorch model, and {self.name} is an exported ONNX file: use "
                             "Predictor.from_run(RUN) or Predictor.from_model(NAME) (with torch installed)")

    def class_index(self, target: str | int) -> int:
        """The index of a class given by name or index.

        Raises:
            ValueError: unknown class name or index out of range (the message lists the valid ones).
        """
        if isinstance(target, str) and not target.lstrip("-").isdigit():
            if target not in self.class_names:
                raise ValueError(f"unknown class {target!r} for {self.name}; valid: {', '.join(self.class_names)}")
            return self.class_names.index(target)
        index = int(target)
        if not 0 <= index < len(self.class_names):
            raise ValueError(f"class index {index} out of range for {self.name}: 0..{len(self.class_names) - 1} "
                             f"({', '.join(self.class_names)})")
        return index

    def explain(self, image: Any, method: str, target: str | int | None = None, *, whole_image_if_none: bool = False,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, detect_options: dict[str, Any] | None = None,
                **options: Any) -> FaceExplanation:
        """Explain the model's output for the largest face of an image with ``fer_core.explain.explain``.

        The face is found and cropped exactly as :meth:`predict` does; the explanation method then gets the model,
        the crop, the method name, the target as a class index (None: the predicted class) and ``options``.

        Args:
            image: anything :func:`fer_core.face.load_image` reads.
            method: an explanation method of :mod:`fer_core.explain` (its errors list the valid ones).
            target: the class to explain, by name or index (None: the top class).
            whole_image_if_none: as in :meth:`predict`.
            max_pixels: as in :meth:`predict`.
            detect_options: passed to :func:`fer_core.face.detect_faces`.
            **options: passed to the explanation method.
        """
        self._need_model("explanations")
        from fer_core.explain import explain

        index = None if target is None else self.class_index(target)
        found = self.find(image, "largest", whole_image_if_none, max_pixels=max_pixels, **(detect_options or {}))
        prediction = self._predictions(found)[0]
        with self._explain_lock:
            t0 = time.perf_counter()
            result = explain(self.model, prediction.crop, method, target=index, **options)
            seconds = time.perf_counter() - t0
        return FaceExplanation(prediction=prediction, explanation=result, seconds=seconds)

    def explain_crop(self, crop: Any, method: str, target: str | int | None = None, **options: Any) -> Any:
        """Explain the model's output for an image that is already a face crop (as :meth:`predict_crop` sees it):
        ``fer_core.explain.explain`` on it, serialised with :meth:`explain`'s lock.

        Args:
            crop: anything :func:`fer_core.face.load_image` reads.
            method: an explanation method of :mod:`fer_core.explain`.
            target: the class to explain, by name or index (None: the top class).
            **options: passed to the explanation method.

        Returns:
            The :class:`fer_core.explain.Explanation` (its map at the crop's size).
        """
        self._need_model("explanations")
        from fer_core.explain import explain

        index = None if target is None else self.class_index(target)
        rgb = load_image(crop)
        with self._explain_lock:
            return explain(self.model, rgb, method, target=index, **options)

    # ----------------------------------------------------------------------------------------- layers
    def layers(self) -> list[Any]:
        """The model's layers with channel-map outputs (``fer_core.explain.feature_layers``)."""
        self._need_model("layers")
        from fer_core.explain import feature_layers

        return feature_layers(self.model)

    def stage_layers(self) -> list[Any]:
        """The model's stages (``fer_core.explain.stage_layers``)."""
        self._need_model("layers")
        from fer_core.explain import stage_layers

        return stage_layers(self.model)
