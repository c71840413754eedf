"""FER2013 (Kaggle ICML 2013 challenge): 48x48 grey faces in one CSV, ``emotion,pixels,Usage``.

Splits: ``train`` = Training, ``val`` = PublicTest, ``test`` = PrivateTest. Labels are mapped from FER2013's own
order (0 angry ... 6 neutral) into :data:`fer_core.labels.CLASSES` (``basic7``). The pixel strings are parsed once
into an uncompressed ``.npz`` beside the CSV (or in the ``cache_dir`` option, or in ``$FER_CACHE_DIR`` when the
folder is read-only), keyed by the CSV's size and content hash, so later loads skip the parsing. Malformed rows are
errors naming the file and line; nothing is dropped silently. :mod:`fer_core.data.ferplus` reuses this pixel cache.

Parsing (measured by ``bench/bench_data.py`` on a full-size file, 35,887 rows, 282 MiB; ``bench/results/data.md``):
lines without a quote are split on their commas (the csv module reads the file from the first quote on), the
emotion and Usage fields are checked row by row, and the pixel fields are parsed 32 rows at a time by one
``np.fromstring`` when each row has the published form (2,304 integers separated by single spaces). A block with
a row in any other form is read row by row with ``str.split`` and ``int``, so rows in other forms that this accepts
(tabs, double spaces) give the same pixels, and the first malformed row in the file raises its own error naming
its line. The parse is several times faster than the csv module with a numpy conversion per row.

Cache key: the blake2b hash of the whole CSV, about 0.4 s of the 0.5 s a cached load takes. Keying on size,
mtime and a hash of the first and last MiB would save most of it, but would reuse a stale cache after an edit that
keeps the size (one digit changed in the middle) whenever the mtime does not move either: a copy that keeps times
(``cp -p``, ``rsync -a``, an unpacked archive) or two writes within the file system's timestamp resolution. A
training run pays the 0.4 s once; training on stale data without a word costs more, so the whole file is hashed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from fer_core.data.registry import register_dataset

from ..labels import DATASET_ORDERS, LABEL_SETS, mapping_from

__all__ = ["FER2013", "load_fer2013_csv", "SPLIT_USAGE", "IMAGE_SIZE"]

IMAGE_SIZE = 48
SPLIT_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
USAGES = tuple(SPLIT_USAGE.values())  # usage code = index in this tuple
KAGGLE = ("https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge"
          " (file fer2013.csv, from fer2013.tar.gz)")
_CACHE_VERSION = 1


def csv_path(root, filename: str = "fer2013.csv") -> Path:
    """The CSV inside ``root``; FileNotFoundError naming the expected path and where FER2013 is obtained."""
    path = Path(root).expanduser() / filename
    if not path.is_file():
        raise FileNotFoundError(f"FER2013 file not found: expected {path}. Download fer2013.csv from the Kaggle "
                                f"challenge {KAGGLE} and give its folder as root")
    return path


def _file_key(path: Path) -> str:
    """Size and content hash of a file: a replaced or edited CSV never reuses a stale cache."""
    digest = hashlib.blake2b(digest_size=8)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return f"{path.stat().st_size}-{digest.hexdigest()}"


_CHUNK_ROWS = 32  # rows per vectorised step: ~260 KB of text stays in the CPU cache (32-64 measured fastest)
_EMOTION_CODES = {str(c): c for c in range(7)}
_USAGE_CODES = {usage: i for i, usage in enumerate(USAGES)}


def _csv_rows(fh):
    """``(line number, fields)`` for each row of a file opened with ``newline=""``, exactly as :func:`csv.reader`
    reads it (``line_num`` included). A line with no quote character is split on its commas, which is what the csv
    module makes of it, without the csv module's character-by-character scan of the 9 KB pixel field; from the
    first line with a quote on, the csv module reads the rest."""
    for num, line in enumerate(fh, 1):
        if '"' in line:
            reader = csv.reader(itertools.chain([line], fh))
            for row in reader:
                yield num - 1 + reader.line_num, row
            return
        line = line.rstrip("\r\n")
        yield num, line.split(",") if line else []


def _pixels_fast(fields: list[str]) -> np.ndarray | None:
    """The rows' pixels as uint8 (n, 48, 48) when every row has the published form (2,304 ASCII integers 0-255
    separated by single spaces), parsed by one ``np.fromstring`` over the block; None when any row has another
    form (the caller then reads the rows one by one, which accepts and rejects the same rows as before)."""
    npix = IMAGE_SIZE * IMAGE_SIZE
    if any(f.count(" ") != npix - 1 for f in fields):
        return None  # another count of numbers, or other spacing: a row's count is checked row by row below
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy's "could not be read to its end": a bad token
        try:
            values = np.fromstring(" ".join(fields), dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            return None
    if values.size != len(fields) * npix or values.min() < 0 or values.max() > 255:
        return None  # double spaces or other characters read as fewer numbers; values out of range
    return values.astype(np.uint8).reshape(len(fields), IMAGE_SIZE, IMAGE_SIZE)


def _pixels_row(pix: str, where: str) -> np.ndarray:
    """One row's pixels, or ValueError naming ``where``: the row-by-row reading, for rows not in the plain form."""
    npix = IMAGE_SIZE * IMAGE_SIZE
    tokens = pix.split()
    if len(tokens) != npix:
        raise ValueError(f"{where}: expected {npix} pixel values (48x48), got {len(tokens)}")
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        raise ValueError(f"{where}: pixel values must be integers 0-255") from None
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"{where}: pixel values must be integers 0-255")
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)


def _parse_pixels(path: Path, fields: list[str], lines: list[int]) -> np.ndarray:
    """Pixels of consecutive rows (stripped pixel fields and their line numbers): the vectorised parse, or, where
    some row is not in the plain form, row by row, so the first bad row raises its own error."""
    if not fields:
        return np.empty((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    fast = _pixels_fast(fields)
    if fast is not None:
        return fast
    return np.stack([_pixels_row(pix, f"{path}: line {num}") for pix, num in zip(fields, lines, strict=True)])


def parse_fer2013_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse ``fer2013.csv``: pixels uint8 (N, 48, 48), emotion int64 (N,) in FER2013's own codes, usage int64 (N,)
    as indices into ``USAGES``. ValueError naming the file and line for any malformed row (the first one in the
    file, whatever is wrong with it)."""
    chunks, emotions, usages = [], [], []
    fields, lines = [], []  # pixel fields not parsed yet, and their line numbers
    with path.open(newline="") as fh:
        rows = _csv_rows(fh)
        header = [h.strip() for h in next(rows, (1, []))[1]]
        if header[:3] != ["emotion", "pixels", "Usage"]:
            raise ValueError(f"{path}: line 1: expected header 'emotion,pixels,Usage', got {','.join(header)!r}")
        for num, row in rows:
            if not row:
                continue  # a trailing blank line is not a sample
            problem = None
            if len(row) != 3:
                problem = f"expected 3 fields (emotion,pixels,Usage), got {len(row)}"
            else:
                emotion, usage = row[0].strip(), row[2].strip()
                if emotion not in _EMOTION_CODES:
                    problem = f"bad emotion {emotion!r} (expected an integer 0-6)"
                elif usage not in _USAGE_CODES:
                    problem = f"unknown Usage {usage!r} (expected one of {', '.join(USAGES)})"
            if problem is not None:
                _parse_pixels(path, fields, lines)  # a bad pixel field on an earlier line is reported first
                raise ValueError(f"{path}: line {num}: {problem}")
            emotions.append(_EMOTION_CODES[emotion])
            usages.append(_USAGE_CODES[usage])
            fields.append(row[1].strip())
            lines.append(num)
            if len(fields) == _CHUNK_ROWS:
                chunks.append(_parse_pixels(path, fields, lines))
                fields, lines = [], []
    chunks.append(_parse_pixels(path, fields, lines))
    if not emotions:
        raise ValueError(f"{path}: no samples")
    return np.concatenate(chunks), np.asarray(emotions, np.int64), np.asarray(usages, np.int64)


def _default_cache_dir() -> Path:
    from .cache import cache_dir

    return cache_dir() / "fer2013"


def _try_save(target: Path, arrays: dict) -> bool:
    """Write the arrays as an .npz atomically (:func:`fer_core.io.atomic_write_bytes`); False where the folder
    cannot be written."""
    from fer_core.io import atomic_write_bytes

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(target, buffer.getvalue())
    except OSError:
        return False
    return True


def load_fer2013_csv(path, cache_dir=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`parse_fer2013_csv` with an on-disk cache (see the module docstring); same return values."""
    path = Path(path)
    name = f"{path.stem}.v{_CACHE_VERSION}.{_file_key(path)}.npz"
    places = [Path(cache_dir)] if cache_dir is not None else [path.parent, _default_cache_dir()]
    for place in places:
        target = place / name
        if target.is_file():
            try:
                with np.load(target) as z:
                    return z["pixels"], z["emotion"], z["usage"]
            except (OSError, ValueError, KeyError):
                pass  # corrupt cache: parse again and overwrite it
    pixels, emotion, usage = parse_fer2013_csv(path)
    arrays = {"pixels": pixels, "emotion": emotion, "usage": usage}
    for place in places:
        if _try_save(place / name, arrays):
            break
    return pixels, emotion, usage


def _check_split(name: str, split: str, subset) -> None:
    if split not in SPLIT_USAGE:
        raise ValueError(f"{name}: unknown split {split!r}; valid: {', '.join(SPLIT_USAGE)}")
    if subset not in (None, "all"):
        raise ValueError(f"{name}: unknown subset {subset!r}; this data set defines none (use None or 'all')")


class GreyFaces(Dataset):
    """Shared item logic for the 48x48 grey FER2013 family: images served as RGB uint8 (3, 48, 48)."""

    name = "fer2013"
    splits = tuple(SPLIT_USAGE)
    subsets: tuple[str, ...] = ()
    channels = 3
    image_size = IMAGE_SIZE

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        grey = self._pixels[i]
        image = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(grey, (3, *grey.shape))))
        item = {"image": image, "label": int(self.labels[i]), "index": i}
        dists = getattr(self, "label_dists", None)
        if dists is not None:
            item["label_dist"] = torch.from_numpy(dists[i].copy())
        return item

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, classes={len(self.classes)})"


class FER2013(GreyFaces):
    """One split of FER2013 read from ``root/fer2013.csv``; 7 classes in canonical (``basic7``) order."""

    def __init__(self, root, split: str = "train", subset=None, cache_dir=None):
        _check_split("fer2013", split, subset)
        path = csv_path(root)
        pixels, emotion, usage = load_fer2013_csv(path, cache_dir)
        keep = usage == USAGES.index(SPLIT_USAGE[split])
        mapping = np.asarray(mapping_from(DATASET_ORDERS["fer2013"]), np.int64)
        self.split, self.subset = split, subset
        self.classes = LABEL_SETS["basic7"]
        self.num_classes = len(self.classes)
        self._pixels = pixels[keep]
        self.labels = mapping[emotion[keep]]
        self.config = {"root": str(root), "cache_dir": None if cache_dir is None else str(cache_dir)}


@register_dataset("fer2013", description="FER2013 (Kaggle 2013): 48x48 grey faces, 7 classes; train=Training, "
                  "val=PublicTest, test=PrivateTest; root holds fer2013.csv", needs_root=True,
                  options=("cache_dir",), classes=LABEL_SETS["basic7"])
def _fer2013(root=None, split="train", subset=None, **options):
    return FER2013(root, split=split, subset=subset, **options)
