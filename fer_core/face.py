"""Faces from photos: read any image safely, find the faces with OpenCV's Haar cascades, crop and align them.

Usage::

    from fer_core.face import faces, load_image
    rgb = load_image("photo.jpg")                    # H x W x 3 uint8 RGB, EXIF rotation applied
    face = faces(rgb)[0]                             # the largest face (NoFaceFound if there is none)
    face.box, face.crop, face.detector, face.aligned

Reading (:func:`load_image`) takes a path, bytes, a binary file object, a PIL image or a numpy array and always
returns RGB ``uint8``: the EXIF orientation is applied; grey, palette and CMYK images are converted; transparent
ones (RGBA, LA, palette or colour-key transparency) are composited on white; 16-bit and float images are scaled to
8 bits; animated GIF and WebP give their first frame. An image with more than ``max_pixels`` pixels (default 40 MP,
or ``$FER_MAX_PIXELS``) is refused from its header, before anything is decoded (a decompression bomb), and so is a
PNG whose compressed metadata expands past Pillow's limit; unreadable data raises :class:`ImageError` naming the file
and the formats that work. Decoding needs at most about 16 bytes per pixel of Python/NumPy memory (RGBA and
float images; 6 for plain RGB) plus Pillow's own copy, so the pixel limit bounds the memory a single image can take.

Detection (:func:`detect_faces`) runs OpenCV's frontal Haar cascade; only when it finds nothing, the alternative
frontal cascade; and only when that finds nothing too, the profile cascade on the image and on its mirror image (the
cascade knows faces turned one way only). It works on a grey copy scaled to at most ``max_side`` pixels (and at least
:data:`MIN_SIDE`, so small face images are found) and padded by 10% of its shorter side, so faces touching the border
are found with their whole box. The parameters default to the ones the ``fer`` package uses (scale factor 1.1, five
neighbours). Detections supported by fewer than a quarter of the raw hits of the best one are dropped
(:data:`RELATIVE_SUPPORT`): Haar cascades see weak, sometimes large, false faces in textured backgrounds, which
would otherwise outrank the real face as "the largest".

Cropping (:func:`crop_face`) takes a square around the box's centre, grown by ``margin`` times the box's side on
every side (0.2: the square is 1.4 boxes wide) and padded by repeating the edge pixels where it leaves the image.
Alignment: the eye cascade (``haarcascade_eye.xml``) looks in the upper half of the box; when it finds one eye on
each side, the crop is rotated about its centre so that the line between the eyes is level (``Face.angle``). When it
does not, the crop is left unrotated and ``Face.note`` says why (it is not an error).

Thread safety: the cascades are loaded once per thread (OpenCV's ``CascadeClassifier`` is not safe to share), so
every function here may be called from several threads at once.
"""

from __future__ import annotations

import io
import math
import os
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS_ENV = "FER_MAX_PIXELS"
"""Environment variable that sets :data:`DEFAULT_MAX_PIXELS` for a whole process (the app, the CLI)."""


def _max_pixels_from_env(default: int = 40_000_000) -> int:
    """``$FER_MAX_PIXELS`` as a positive integer (``_`` separators allowed), else ``default``."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return default
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, e.g. 40000000 (got {text!r})")
    return value


DEFAULT_MAX_PIXELS = _max_pixels_from_env()
"""Largest image :func:`load_image` decodes by default: 40 megapixels (a 12 MP phone photo is far below), or
``$FER_MAX_PIXELS`` when set (read once, at import)."""

READABLE = ("formats that work: JPEG, PNG, WebP, GIF, BMP, TIFF and the other raster formats Pillow reads "
            "(HEIC only with the pillow-heif plugin; SVG and PDF are not images here: export them to PNG)")

MIN_SIDE = 160
"""Images whose shorter side is below this are scaled up to it for detection (so 48x48 face images are found)."""

CASCADES = {
    "frontal_default": "haarcascade_frontalface_default.xml",
    "frontal_alt": "haarcascade_frontalface_alt.xml",
    "profile": "haarcascade_profileface.xml",
    "eye": "haarcascade_eye.xml",
}
"""The OpenCV cascade files used, under ``cv2.data.haarcascades``."""

DETECTORS = ("frontal_default", "frontal_alt", "profile", "profile_mirrored", "whole_image", "given")
"""Values of :attr:`Face.detector`."""

RELATIVE_SUPPORT = 0.25
"""Detections merging fewer raw hits (OpenCV's ``numDetections``) than this fraction of the best one are dropped."""

Box = tuple[int, int, int, int]
Point = tuple[float, float]
_EYE_WIDTH = 160  # the upper face is scaled to this width before looking for eyes (eyes become about 40 px)
# What broken files raise in Pillow: OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error
# (a GIF cut inside a block header), ... Any exception while reading a file means the file is unusable.
_IO_ERRORS = (Exception,)


class ImageError(ValueError):
    """An image that cannot be read: empty, damaged, not an image, or too large."""


class NoFaceFound(ValueError):
    """No face was found in an image (pass ``whole_image_if_none=True`` to use the whole image instead)."""


@dataclass(frozen=True, eq=False)
class Face:
    """A face in an image and the square crop of it that a model sees.

    Attributes:
        box: ``(x, y, w, h)`` of the detection in the image's pixels (it may reach a few pixels past the border,
            since detection runs on a padded copy).
        crop: the square face crop, RGB ``uint8`` ``S x S x 3`` (see :func:`crop_face`).
        detector: what found it: ``frontal_default``, ``frontal_alt``, ``profile``, ``profile_mirrored`` (the
            profile cascade on the mirror image), ``whole_image`` (no face found; the centre square is used) or
            ``given`` (a box passed to :func:`crop_face`).
        crop_box: ``(x, y, side, side)``: the square of the image the crop covers, before any rotation (it may
            extend past the borders, where the crop repeats the edge pixels).
        eyes: centres ``((x, y), (x, y))`` of the two eyes in image pixels, image-left first; None if not found.
        aligned: whether the crop was rotated to level the eyes.
        angle: degrees the crop was rotated counter-clockwise to level the eyes (0 when not aligned).
        note: why the crop was not aligned, or that the whole image stands in for a face; "" otherwise.
        neighbours: how many raw cascade hits OpenCV merged into this box (``numDetections``; 0 when not
            detected): a rough confidence, higher is surer (the astronaut's face: about 40).
    """

    box: Box
    crop: np.ndarray
    detector: str
    crop_box: Box
    eyes: tuple[Point, Point] | None = None
    aligned: bool = False
    angle: float = 0.0
    note: str = ""
    neighbours: int = 0

    @property
    def area(self) -> int:
        """Area of :attr:`box` in pixels."""
        return self.box[2] * self.box[3]

    @property
    def whole_image(self) -> bool:
        """True when no face was found and the centre square of the whole image stands in for one."""
        return self.detector == "whole_image"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, without the crop's pixels."""
        return {"box": list(self.box), "detector": self.detector, "crop_box": list(self.crop_box),
                "crop_size": int(self.crop.shape[0]), "aligned": self.aligned, "angle": round(self.angle, 2),
                "eyes": None if self.eyes is None else [[round(v, 1) for v in e] for e in self.eyes],
                "note": self.note, "neighbours": self.neighbours}


# --------------------------------------------------------------------------------------------- reading
def load_image(source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as RGB ``uint8`` ``H x W x 3``, upright.

    Args:
        source: a path, ``bytes``, a binary file object, a PIL image or a numpy array (``H x W``, ``H x W x 1``,
            ``H x W x 3`` in RGB order, or ``H x W x 4`` RGBA; OpenCV's BGR arrays must be converted first).
        max_pixels: refuse images with more pixels than this, from the header alone, before decoding (default
            :data:`DEFAULT_MAX_PIXELS`: 40 MP, or ``$FER_MAX_PIXELS``; None: no limit of our own). Pillow's own
            hard limit, ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP), still applies above it and is reported
            the same way. Arrays are already decoded and are not checked.

    Conversions: EXIF orientation applied (``ImageOps.exif_transpose``); grey and 1-bit repeated to three
    channels; palette, CMYK, YCbCr and LAB converted by Pillow; any transparency composited on white; 16-bit
    images divided by 257; 32-bit integer images likewise when they fit in 16 bits (as is when they fit in 8);
    float images taken as [0, 1] or [0, 255] when they lie in that range; anything else (and other integer
    ranges) stretched from its minimum to its maximum; animated images give their first frame.

    Raises:
        FileNotFoundError: the path does not exist.
        ImageError: the data is empty, damaged, not an image, or larger than ``max_pixels``.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source, "the array")
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "the PIL image"
        _check_pixels(source.size, name, max_pixels)
        return _load_pil(source, name)
    name, stream, owned = _open(source)
    try:
        head = stream.read(512)
        stream.seek(0)
        try:
            im = Image.open(stream)
        except Image.DecompressionBombError as err:
            raise ImageError(f"refused {name} before decoding it: {err} (Pillow's hard limit, "
                             "2 x PIL.Image.MAX_IMAGE_PIXELS)") from None
        except _IO_ERRORS as err:
            raise ImageError(_chunk_bomb(name, err) if _is_chunk_bomb(err) else _unreadable(name, head, err)) from None
        with im:
            _check_pixels(im.size, name, max_pixels)
            return _load_pil(im, name)
    finally:
        if owned:
            stream.close()


def _open(source: Any) -> tuple[str, BinaryIO, bool]:
    """``(name for messages, seekable binary stream, whether we opened it)``."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no such image file: {path}")
        if os.path.isdir(path):
            raise ImageError(f"{path} is a folder, not an image file")
        if os.path.getsize(path) == 0:
            raise ImageError(f"cannot read {path}: the file is empty (0 bytes); {READABLE}")
        return path, open(path, "rb"), True  # noqa: SIM115 - closed by load_image
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(f"cannot read the image bytes: there are none (0 bytes); {READABLE}")
        return f"the image bytes ({len(data):,} bytes)", io.BytesIO(data), True
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "") or "the file object")
        data = source.read()
        if not data:
            raise ImageError(f"cannot read {name}: it is empty (0 bytes left to read); {READABLE}")
        return name, io.BytesIO(data), True
    raise TypeError(f"cannot read an image from {type(source).__name__}: pass a path, bytes, a binary file object, "
                    "a PIL image or a numpy array")


def _unreadable(name: str, head: bytes, err: Exception) -> str:
    """The message for data Pillow does not recognise, with a guess at what it is instead."""
    start = head.lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        what = "it is an HTML web page, not an image (a page saved under an image's name?)"
    elif start.startswith(b"<svg") or (start.startswith(b"<?xml") and b"<svg" in start):
        what = "it is an SVG drawing (vector graphics), not a raster image"
    elif start.startswith(b"%pdf"):
        what = "it is a PDF document"
    elif head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        what = "it is text, not an image"
    elif isinstance(err, UnidentifiedImageError):
        what = "not an image Pillow recognises"  # Pillow's own message only repeats the stream object's repr
    else:
        what = f"not an image Pillow recognises ({err})"
    return f"cannot read {name}: {what}; {READABLE}"


def _is_chunk_bomb(err: Exception) -> bool:
    """Pillow refusing a compressed metadata chunk (PNG text, colour profile) that expands past its safety limit."""
    return isinstance(err, ValueError) and "Decompressed data too large" in str(err)


def _chunk_bomb(name: str, err: Exception) -> str:
    return (f"refused {name}: a compressed metadata chunk in it (text or colour profile) expands beyond Pillow's "
            f"safety limit ({err}); such a file is most likely a decompression bomb. Re-export the image without "
            "its metadata")


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageError(f"refused {name} before decoding it: it claims {w} x {h} = {w * h / 1e6:,.1f} megapixels, "
                         f"over the limit max_pixels={max_pixels:,} ({max_pixels / 1e6:g} MP); such an image is "
                         "most likely a decompression bomb. If it is genuine, pass a larger max_pixels (or "
                         "max_pixels=None) or scale it down first")


def _load_pil(im: Image.Image, name: str) -> np.ndarray:
    """Decode frame 0 of a (possibly lazily opened) PIL image and convert it to upright RGB uint8."""
    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        im.load()
    except _IO_ERRORS as err:
        if _is_chunk_bomb(err):
            raise ImageError(_chunk_bomb(name, err)) from None
        raise ImageError(f"cannot read {name}: its {im.format or 'image'} data is damaged or incomplete ({err}); "
                         f"re-download or re-export it; {READABLE}") from None
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - broken EXIF metadata must not stop us from reading the pixels
        pass
    try:
        return _pil_to_rgb(im, name)
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 - odd modes or damaged palettes: a message, never a crash
        raise ImageError(f"cannot read {name}: its {im.mode} pixels could not be converted to RGB "
                         f"({type(err).__name__}: {err}); re-export it as an 8-bit RGB image; {READABLE}") from None


def _pil_to_rgb(im: Image.Image, name: str) -> np.ndarray:
    mode = im.mode
    if mode.startswith("I") or mode == "F":  # 16- and 32-bit grey: scale to 8 bits ourselves
        return _grey_to_rgb(_to_uint8(np.asarray(im), name))
    if mode == "1":
        im, mode = im.convert("L"), "L"
    palette_alpha = mode == "P" and im.palette is not None and im.palette.mode == "RGBA"
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info or palette_alpha:
        im = im.convert("RGBA")  # (Pillow 10.1's ``has_transparency_data``)
    elif mode not in ("L", "RGB"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, palette without transparency
    arr = np.asarray(im)
    return _grey_to_rgb(arr) if arr.ndim == 2 else _flatten_alpha(arr)


def _from_array(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or arr.size == 0:
        raise ImageError(f"cannot use {name} of shape {arr.shape}: expected H x W (grey), H x W x 3 (RGB) or "
                         "H x W x 4 (RGBA), with H and W > 0")
    arr = _to_uint8(arr, name)
    if arr.ndim == 2:
        return _grey_to_rgb(arr)
    return _flatten_alpha(arr) if arr.shape[2] == 4 else np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    """Scale pixel values of any numeric type to uint8 (rules in :func:`load_image`)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageError(f"cannot use {name}: pixel type {arr.dtype} is not a number type")
    if arr.dtype == np.uint16 or arr.dtype == np.dtype(">u2"):
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageError(f"cannot use {name}: it has NaN or infinite pixel values")
    lo, hi = float(values.min()), float(values.max())
    floating = np.issubdtype(arr.dtype, np.floating)
    if lo >= 0 and hi <= (1 if floating else 255):
        scale, lo = (255.0 if floating else 1.0), 0.0
    elif lo >= 0 and hi <= (255 if floating else 65535):
        scale, lo = (1.0 if floating else 1 / 257), 0.0
    else:
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
    values -= lo  # in place: one float64 copy of the image at a time, not four
    values *= scale
    np.rint(values, out=values)
    np.clip(values, 0, 255, out=values)
    return values.astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """RGB(A) uint8 -> RGB, compositing on white where there is an alpha channel."""
    if rgba.shape[2] == 3:
        return np.ascontiguousarray(rgba)
    # uint16 and in place (peak about 3x the image, not 12x): rgb * a + 255 * (255 - a) + 127 <= 65152 fits
    out = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:].astype(np.uint16)
    out *= alpha
    np.subtract(255, alpha, out=alpha)
    alpha *= 255
    alpha += 127
    out += alpha
    out //= 255
    return out.astype(np.uint8)


def _as_rgb(image: Any) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    return load_image(image)


# --------------------------------------------------------------------------------------------- detection
_local = threading.local()


def _cascade(name: str) -> cv2.CascadeClassifier:
    """The cascade ``name`` of :data:`CASCADES`, loaded once per thread."""
    cache = _local.__dict__.setdefault("cascades", {})
    if name not in cache:
        folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if folder is None or not hasattr(cv2, "CascadeClassifier"):
            raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades; install opencv-python-headless<5")
        path = os.path.join(folder, CASCADES[name])
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise RuntimeError(f"OpenCV could not load the cascade {path}; reinstall opencv-python-headless<5")
        cache[name] = cascade
    return cache[name]


def _run_cascade(name: str, grey: np.ndarray, scale_factor: float, min_neighbors: int, min_px: int
                 ) -> list[tuple[Box, int]]:
    """``(box, neighbours)`` pairs: OpenCV's boxes and how many raw detections each merges (``numDetections``)."""
    if min(grey.shape) < min_px:
        return []
    found, counts = _cascade(name).detectMultiScale2(grey, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                                     minSize=(min_px, min_px))
    boxes = [tuple(int(v) for v in b) for b in np.asarray(found).reshape(-1, 4)]
    return list(zip(boxes, (int(n) for n in np.asarray(counts).ravel()), strict=True))


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _find_boxes(image: Any, *, min_size: int | None, scale_factor: float, min_neighbors: int,
                max_side: int | None) -> list[tuple[Box, int, str]]:
    """``(box, neighbours, detector)`` in the image's pixels, largest first; see :func:`detect_faces`."""
    if scale_factor <= 1:
        raise ValueError(f"scale_factor must be > 1 (got {scale_factor}); 1.1 is usual, 1.05 finds more but slower")
    if min_neighbors < 0:
        raise ValueError(f"min_neighbors must be >= 0 (got {min_neighbors})")
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
    elif min(h, w) < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
        if max_side:
            scale = min(scale, max_side / max(h, w))
    if scale != 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    pad = round(0.1 * min(grey.shape))
    work = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    wanted = min(h, w) / 20 if min_size is None else min_size
    min_px = max(20, round(wanted * scale))  # the cascades' own windows are 20 and 24 pixels
    args = (scale_factor, min_neighbors, min_px)
    found: list[tuple[Box, int, str]] = []
    for name in ("frontal_default", "frontal_alt"):
        found = [(b, n, name) for b, n in _run_cascade(name, work, *args)]
        if found:
            break
    if not found:
        both = [(b, n, "profile") for b, n in _run_cascade("profile", work, *args)]
        mirrored = _run_cascade("profile", np.ascontiguousarray(work[:, ::-1]), *args)
        both += [((work.shape[1] - x - bw, y, bw, bh), n, "profile_mirrored") for (x, y, bw, bh), n in mirrored]
        both.sort(key=lambda f: f[1], reverse=True)
        kept: list[tuple[Box, int, str]] = []
        for box, n, name in both:  # the same face seen in both orientations counts once, as the surer sighting
            if all(_iou(box, k) < 0.3 for k, _, _ in kept):
                kept.append((box, n, name))
        found = kept
    if found:  # a large but weakly supported false face must not outrank a real one as "the largest"
        best = max(n for _, n, _ in found)
        found = [f for f in found if f[1] >= RELATIVE_SUPPORT * best]
    out = [((round((x - pad) / scale), round((y - pad) / scale), round(bw / scale), round(bh / scale)), n, name)
           for (x, y, bw, bh), n, name in found]
    return sorted(out, key=lambda f: f[0][2] * f[0][3], reverse=True)


def detect_faces(image: Any, *, min_size: int | None = None, scale_factor: float = 1.1, min_neighbors: int = 5,
                 max_side: int | None = 1024, margin: float = 0.2, align: bool = True) -> list[Face]:
    """Find the faces in an image with OpenCV's Haar cascades; largest first, [] if none.

    Args:
        image: anything :func:`load_image` reads (an RGB uint8 array is used as is).
        min_size: smallest face side to look for, in the image's pixels (default: a twentieth of the shorter side;
            never below the cascades' 20 pixels at the scale detection runs at).
        scale_factor: step between the scales searched (OpenCV's ``scaleFactor``; fer uses 1.1).
        min_neighbors: overlapping detections a face needs (OpenCV's ``minNeighbors``; higher: fewer false faces).
        max_side: detection runs on a copy scaled down to this longer side (None: full size, slow on big photos).
        margin: passed to :func:`crop_face`.
        align: level the eyes of each crop when they are found (see :func:`crop_face`).

    The frontal cascade runs first; the alternative frontal cascade only when it finds nothing; the profile
    cascade (on the image and on its mirror image) only when both find nothing; :attr:`Face.detector` names the
    one that found each face.
    """
    rgb = _as_rgb(image)
    found = _find_boxes(rgb, min_size=min_size, scale_factor=scale_factor, min_neighbors=min_neighbors,
                        max_side=max_side)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if align and found else None
    return [_crop(rgb, grey, box, margin, align, detector, neighbours=n) for box, n, detector in found]


def faces(image: Any, mode: Literal["largest", "all"] = "largest", whole_image_if_none: bool = False,
          **detect_options: Any) -> list[Face]:
    """The faces to classify in an image: the largest one (``mode="largest"``) or all of them, largest first.

    Args:
        image: anything :func:`load_image` reads.
        mode: ``"largest"`` (a list of one face) or ``"all"``.
        whole_image_if_none: when no face is found, return the centre square of the whole image as the one face
            (``detector="whole_image"``, with a note) instead of raising; for images that are already face crops.
        **detect_options: passed to :func:`detect_faces`.

    Raises:
        NoFaceFound: no face was found and ``whole_image_if_none`` is False.
    """
    if mode not in ("largest", "all"):
        raise ValueError(f"unknown faces mode {mode!r}; valid: 'largest', 'all'")
    rgb = _as_rgb(image)
    found = detect_faces(rgb, **detect_options)
    if found:
        return found[:1] if mode == "largest" else found
    if whole_image_if_none:
        return [whole_image_face(rgb)]
    h, w = rgb.shape[:2]
    small = f" (the image is only {w} x {h} pixels: too small to hold a face the cascades can find)" \
        if min(h, w) < 24 else ""
    raise NoFaceFound(f"no face found in the {w} x {h} image{small} by OpenCV's Haar cascades (frontal, alternative "
                      "frontal, profile both ways). If the image is already a face crop, pass "
                      "whole_image_if_none=True to use its centre square; otherwise try a larger, more frontal, "
                      "better lit face")


def whole_image_face(image: Any) -> Face:
    """The centre square of the whole image as a :class:`Face` (``detector="whole_image"``), unaligned."""
    rgb = _as_rgb(image)
    h, w = rgb.shape[:2]
    side = min(h, w)
    x0, y0 = (w - side) // 2, (h - side) // 2
    box = (x0, y0, side, side)
    return Face(box=box, crop=rgb[y0:y0 + side, x0:x0 + side].copy(), detector="whole_image", crop_box=box,
                note="no face found: the centre square of the whole image is used")


# --------------------------------------------------------------------------------------------- crop and align
def crop_face(image: Any, box: Box, margin: float = 0.2, *, align: bool = True, detector: str = "given") -> Face:
    """The square crop of a face box, as a :class:`Face` (its ``crop`` is the crop).

    Args:
        image: anything :func:`load_image` reads.
        box: ``(x, y, w, h)`` in the image's pixels.
        margin: added on every side as a fraction of the box's longer side: the crop is ``(1 + 2 * margin)`` box
            sides wide, centred on the box, at the image's resolution. Where it leaves the image, the edge pixels
            are repeated.
        align: look for the eyes (``haarcascade_eye.xml``, upper half of the box) and, when one is found on each
            side, rotate the crop about its centre so that they are level. When they are not found, the crop is
            not rotated and :attr:`Face.note` says why.
        detector: recorded in :attr:`Face.detector`.
    """
    x, y, w, h = (int(round(v)) for v in box)
    if w < 1 or h < 1:
        raise ValueError(f"face box {tuple(box)} has no area: (x, y, w, h) needs w, h >= 1")
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (got {margin})")
    rgb = _as_rgb(image)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if align else None
    return _crop(rgb, grey, (x, y, w, h), margin, align, detector)


def _crop(rgb: np.ndarray, grey: np.ndarray | None, box: Box, margin: float, align: bool, detector: str,
          neighbours: int = 0) -> Face:
    x, y, w, h = box
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    x0, y0 = round(x + w / 2 - side / 2), round(y + h / 2 - side / 2)
    eyes, angle, note = None, 0.0, ""
    if align and grey is not None:
        eyes, note = find_eyes(grey, box)
        if eyes is not None:
            (lx, ly), (rx, ry) = eyes
            angle = math.degrees(math.atan2(ry - ly, rx - lx))
    # about the crop's own centre, so that with angle 0 the crop is an exact copy of the image's pixels
    matrix = cv2.getRotationMatrix2D((x0 + side / 2, y0 + side / 2), angle, 1.0)
    matrix[:, 2] -= (x0, y0)
    crop = cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Face(box=box, crop=crop, detector=detector, crop_box=(x0, y0, side, side), eyes=eyes,
                aligned=eyes is not None, angle=angle, note=note, neighbours=neighbours)


def find_eyes(grey: np.ndarray, box: Box) -> tuple[tuple[Point, Point] | None, str]:
    """Eye centres in a face box, image-left first, with ``haarcascade_eye.xml``; ``(None, why)`` unless exactly
    one plausible eye is found on each side of the upper half of the box.

    The upper 60% of the box is scaled to 160 pixels wide, so eyes are about 40 pixels whatever the photo's size;
    eye centres must lie in the upper half of the box, at least a fifth of its width apart, on a line within 30
    degrees of level (the largest candidate on each side is taken).
    """
    x, y, w, h = box
    img_h, img_w = grey.shape
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(img_w, x + w), min(img_h, y + round(0.6 * h))
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None, "eyes not looked for: the face is too small or mostly outside the image"
    s = _EYE_WIDTH / w
    region = cv2.resize(grey[y1:y2, x1:x2], (max(1, round((x2 - x1) * s)), max(1, round((y2 - y1) * s))),
                        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    found = _run_cascade("eye", region, 1.1, 5, 16)
    centres = [(x1 + (ex + ew / 2) / s, y1 + (ey + eh / 2) / s, ew * eh) for (ex, ey, ew, eh), _ in found]
    centres = [c for c in centres if c[1] < y + h / 2]
    mid = x + w / 2
    left = max((c for c in centres if c[0] < mid), key=lambda c: c[2], default=None)
    right = max((c for c in centres if c[0] >= mid), key=lambda c: c[2], default=None)
    if left is None or right is None:
        return None, f"not aligned: eyes not found ({len(centres)} eye candidate(s) in the upper half of the face)"
    dx, dy = right[0] - left[0], right[1] - left[1]
    if dx < 0.2 * w or abs(math.degrees(math.atan2(dy, dx))) > 30:
        return None, "not aligned: the eye candidates found are implausible (too close or too tilted)"
    return ((left[0], left[1]), (right[0], right[1])), ""
