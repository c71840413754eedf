"""Image-folder data sets: ``root/<split>/<class_name>/*.jpg|png`` trees (and CAER-S, which ships that way).

:class:`FileFaceDataset` is the shared base of data sets read from image files on disk: it holds the paths and
canonical labels of one split and decodes each image lazily in ``__getitem__`` with
:func:`fer_core.face.load_image` (uint8 RGB ``(3, H, W)``), optionally cropped to a per-image box and resized.

Image sizes: without ``image_size`` every image must have the size of the first one (a batch, and
:func:`fer_core.data.materialize`, need one size); an image of another size is an error naming the file and
asking for ``image_size``. With ``image_size=N`` each image (after its crop box, if any) is resized to N x N on
load: ``cv2.INTER_AREA`` when shrinking, bilinear when enlarging. Data sets whose images vary in size (AffectNet,
CK+, most image folders) use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from fer_core.data.registry import register_dataset
from fer_core.face import load_image
from fer_core.labels import CLASSES, label_set

SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")

DEFAULT_ALIASES: dict[str, str] = {
    **{c: c for c in CLASSES},
    "angry": "anger", "anger": "anger", "happy": "happy", "happiness": "happy", "surprise": "surprise",
    "surprised": "surprise", "sad": "sad", "sadness": "sad", "neutral": "neutral", "fear": "fear",
    "fearful": "fear", "disgust": "disgust", "disgusted": "disgust", "contempt": "contempt",
}
"""Default class-folder names (compared case-insensitively) and the canonical class each means."""


class FileFaceDataset(Dataset):
    """A split of image files with canonical labels, decoded lazily. Subclasses set ``name``."""

    name = "files"
    splits = SPLITS
    subsets: tuple[str, ...] = ()

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], *, split: str, subset: str | None,
                 classes: tuple[str, ...], config: dict, image_size: int | None = None,
                 boxes: Sequence[tuple[int, int, int, int] | None] | None = None):
        """``boxes``: per image, None or an ``(x, y, width, height)`` crop in pixels (clipped to the image)."""
        self.paths = list(paths)  # as given, str or Path: making 400k Path objects costs seconds (AffectNet)
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if boxes is not None and len(boxes) != len(self.paths):
            raise ValueError(f"{len(boxes)} crop boxes for {len(self.paths)} images")
        self.boxes = None if boxes is None else list(boxes)
        self.split = split
        self.subset = subset
        self.classes = classes
        self.num_classes = len(classes)
        self.channels = 3
        self.resize = check_image_size(image_size)
        self.image_size = self.resize or (_native_size(self.paths[0]) if self.paths else 0)
        self._config = {**config, "image_size": image_size}

    @property
    def config(self) -> dict:
        return {"name": self.name, "split": self.split, "subset": self.subset or "all", **self._config}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {self.name} {self.split} of size {len(self)}")
        image = self._read(i)
        if self.resize:
            image = resize_square(image, self.resize)
        elif image.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f"{self.paths[i]} is {image.shape[1]}x{image.shape[0]} but the first image of this "
                             f"{self.name} split is {self.image_size}x{self.image_size}: give the option "
                             "image_size=N (data.options.image_size) to resize every image to N x N on load")
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "label": int(self.labels[i]), "index": int(i)}


    def _read(self, i: int) -> np.ndarray:
        """Image ``i`` as RGB uint8 ``H x W x 3``, cropped to its box if it has one (before any resize). Subclasses
        that find the face themselves override this."""
        image = load_image(self.paths[i])
        box = None if self.boxes is None else self.boxes[i]
        return image if box is None else crop_box(image, box, self.paths[i])


def _native_size(path: Path) -> int:
    """Side of the (square) image at ``path``, from its header alone (the longer side if it is not square)."""
    with Image.open(path) as im:
        return int(max(im.size))


def check_image_size(image_size) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer from 8 to 1024 (pixels), got {image_size!r}")
    return image_size


def crop_box(image: np.ndarray, box: tuple[int, int, int, int], path: Path) -> np.ndarray:
    """``image[y:y+h, x:x+w]`` with the box clipped to the image; ValueError naming the file if nothing is left."""
    x, y, w, h = (int(v) for v in box)
    height, width = image.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"{path}: crop box (x={x}, y={y}, w={w}, h={h}) lies outside the {width}x{height} image")
    return image[y0:y1, x0:x1]


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an ``H x W x C`` uint8 image to ``size x size`` (area when shrinking, bilinear when enlarging)."""
    if image.shape[:2] == (size, size):
        return image
    shrink = size < max(image.shape[:2])
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def require_images(image_dir: Path, names: Sequence[str], listed_in: Path) -> None:
    """FileNotFoundError naming how many of ``names`` (paths under ``image_dir``, ``sub/dir/file.jpg``) are missing,
    with examples and the file that lists them; each sub-directory is listed once (AffectNet lists ~400k)."""
    listings: dict[str, set[str]] = {}
    absent = []
    for name in names:
        folder, _, file = name.rpartition("/")
        files = listings.get(folder)
        if files is None:
            try:
                files = listings[folder] = set(os.listdir(Path(image_dir) / folder))
            except (FileNotFoundError, NotADirectoryError):
                files = listings[folder] = set()
        if file not in files:
            absent.append(name)
    if absent:
        raise FileNotFoundError(f"{len(absent)} image(s) listed in {listed_in} are missing from {image_dir}, e.g. "
                                f"{', '.join(absent[:5])}")


def check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {name}; valid: {', '.join(SPLITS)}")


def check_fraction(val_fraction: float) -> float:
    val_fraction = float(val_fraction)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    return val_fraction


def holdout_mask(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the ``round(val_fraction * n)`` items (at least 1 when n > 1) held out of train as val,
    chosen by a seeded permutation: the same for the same (n, fraction, seed)."""
    k = int(round(val_fraction * n))
    k = min(max(k, 1 if n > 1 else 0), max(n - 1, 0))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n)[:k]] = True
    return mask


def resolve_classes(used: Sequence[int], label_set_name: str | None) -> tuple[str, ...]:
    """The smallest prefix of the canonical order holding every used label (or the named label set)."""
    if label_set_name is not None:
        classes = label_set(label_set_name)
        bad = sorted({CLASSES[u] for u in used if u >= len(classes)})
        if bad:
            raise ValueError(f"label set {label_set_name!r} has no class {', '.join(bad)} found in the data")
        return classes
    top = max(used, default=6)
    return label_set("basic8") if top >= 7 else label_set("basic7")


def _class_lookup(label_map: dict | None) -> dict[str, int]:
    mapping = DEFAULT_ALIASES if label_map is None else label_map
    out = {}
    for folder, cls in mapping.items():
        if cls not in CLASSES:
            raise ValueError(f"label_map maps {folder!r} to {cls!r}, not a canonical class; valid: "
                             f"{', '.join(CLASSES)}")
        out[str(folder).lower()] = CLASSES.index(cls)
    return out


def _scan(split_dir: Path, lookup: dict[str, int]) -> tuple[list[Path], list[int]]:
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir())
    unknown = [p.name for p in folders if p.name.lower() not in lookup]
    if unknown:
        raise ValueError(f"class folder(s) {', '.join(unknown)} in {split_dir} name no known class; valid names "
                         f"(case-insensitive): {', '.join(sorted(lookup))}; pass label_map={{folder: class}} to "
                         "map other names")
    paths, labels = [], []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        paths += files
        labels += [lookup[folder.name.lower()]] * len(files)
    return paths, labels


class ImageFolderFaces(FileFaceDataset):
    """Faces in ``root/<split>/<class_name>/*.jpg|jpeg|png``.

    Args:
        root: folder holding ``train``, ``test`` and optionally ``val``.
        split: ``train``, ``val`` or ``test``. Without a ``val`` folder, give ``val_fraction``: that share of
            ``train`` (seeded by ``seed``) is held out as ``val`` and removed from ``train``.
        label_map: ``{folder name: canonical class}``; default :data:`DEFAULT_ALIASES` (case-insensitive).
        label_set: force ``basic7`` or ``basic8`` (default: basic8 only if contempt occurs).
        image_size: resize every image to this square size on load (needed when the images differ in size).
    """

    name = "imagefolder"

    def __init__(self, root, split: str = "train", subset: str | None = None, *, label_map: dict | None = None,
                 val_fraction: float | None = None, seed: int = 0, label_set: str | None = None,
                 image_size: int | None = None):
        check_split(self.name, split)
        if subset not in (None, "all"):
            raise ValueError(f"{self.name} defines no subsets; use subset=None or 'all', not {subset!r}")
        root = Path(root)
        lookup = _class_lookup(label_map)
        has_val = (root / "val").is_dir()
        if val_fraction is not None and has_val:
            raise ValueError(f"{root} has a val folder: remove val_fraction or the folder, not both")
        source = "train" if split == "val" and not has_val else split
        split_dir = root / source
        if not split_dir.is_dir():
            hint = " (or give val_fraction to hold out part of train)" if split == "val" else ""
            raise FileNotFoundError(f"no {split} split: expected the folder {split_dir} with one sub-folder per "
                                    f"class{hint}")
        if split == "val" and not has_val and val_fraction is None:
            raise FileNotFoundError(f"no val split: {root / 'val'} does not exist; give val_fraction to hold out "
                                    "part of train")
        paths, labels = _scan(split_dir, lookup)
        if not paths:
            raise FileNotFoundError(f"no images (*.jpg, *.jpeg, *.png) under {split_dir}/<class>/")
        if val_fraction is not None and source == "train":
            held = holdout_mask(len(paths), check_fraction(val_fraction), seed)
            keep = held if split == "val" else ~held
            paths = [p for p, k in zip(paths, keep, strict=True) if k]
            labels = [a for a, k in zip(labels, keep, strict=True) if k]
        classes = resolve_classes(labels, label_set)
        config = {"root": str(root), "label_map": label_map, "val_fraction": val_fraction, "seed": seed,
                  "label_set": label_set}
        super().__init__(paths, labels, split=split, subset=None, classes=classes, config=config,
                         image_size=image_size)


class CAERS(ImageFolderFaces):
    """CAER-S: ``train/`` and ``test/`` with Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise folders; no val
    folder, so ``val_fraction`` defaults to 0.1 of train."""

    name = "caer_s"


_OPTIONS = ("label_map", "val_fraction", "seed", "label_set", "image_size")


def _declared_classes(**options: object) -> tuple[str, ...] | None:
    """The classes an image-folder data set has without looking at its folders: only a forced ``label_set`` tells."""
    name = options.get("label_set")
    return None if name is None else label_set(str(name))


@register_dataset("imagefolder", description="Any image-folder tree root/<split>/<class>/*.jpg|png (splits train, "
                  "val, test; class folders mapped to canonical classes by name or label_map)", needs_root=True,
                  options=_OPTIONS, classes=_declared_classes)
def build_imagefolder(root=None, split="train", subset=None, **options):
    return ImageFolderFaces(root, split, subset, **options)


@register_dataset("caer_s", description="CAER-S static frames (7 classes, train/test folders; val held out of "
                  "train). Obtained on request from the CAER authors: https://caer-dataset.github.io/",
                  needs_root=True, options=_OPTIONS, classes=_declared_classes)
def build_caer_s(root=None, split="train", subset=None, **options):
    options.setdefault("val_fraction", None if (Path(root) / "val").is_dir() else 0.1)
    return CAERS(root, split, subset, **options)
