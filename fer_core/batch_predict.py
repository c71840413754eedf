"""Predictions for many photos at once: a folder (``python -m fer_core predict FOLDER --out predictions.csv``), a
zip file, or uploaded files (the app's "Predict photos" page), as one table.

Usage::

    from fer_core.batch_predict import predict_folder, predict_files, summarize, write_predictions
    df = predict_folder(predictor, "photos/", progress=lambda done, total, name: ...)
    df = predict_files(predictor, [("a.jpg", raw), ("album.zip", zipped)])   # zips are opened in memory
    write_predictions(df, "predictions.csv")                                  # or .parquet
    summarize(df)   # {"files": 12, "images_read": 11, "faces": 14, "no_face": 1, "errors": 1, "per_class": {...}}

The table has one row per face (``status`` ``"ok"``) and one row per file without one: ``"no face"`` (read, but no
face found) or ``"error: <reason>"`` (empty, damaged, not an image, too large, refused zip member: the reason is
:mod:`fer_core.face`'s message, naming the file, without its list of the formats that work, :data:`READABLE`). A
bad file never stops the others. Columns (:func:`columns`): ``file`` (relative to the folder; ``album.zip/dir/x.jpg``
inside a zip), ``face`` (1 = the largest; empty when there is none), the face box ``x y w h`` in the image's pixels,
``detector``, ``aligned``, ``prob_<class>`` for each class in the model's order, ``top``, ``score`` (the top class's
probability) and ``status``. Rows are sorted by file, then face.

Zip files are read in memory, member by member, never extracted to disk: a member whose name is absolute or climbs
out of the archive (``..``), an encrypted member, one whose declared size is over ``max_member_bytes`` or that would
take the archive past ``max_total_bytes`` is refused with its own row, and the rest goes on. Members are read with a
cap, so a header that lies about the size cannot make one expand further (zip bombs).

The library shows no progress itself: ``progress(done, total, name)`` is called once before the first file (``0,
total, ""``) and after each file, for the CLI's tqdm bar or the app's progress bar.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import pandas as pd

from fer_core.face import DEFAULT_MAX_PIXELS, READABLE, NoFaceFound

Progress = Callable[[int, int, str], None]
"""``progress(files done, files in all, the file just done)``."""

MAX_MEMBER_BYTES = 64 * 1024 * 1024
"""Largest zip member read (its uncompressed size): far above any photo under the 40 MP pixel limit."""

MAX_TOTAL_BYTES = 512 * 1024 * 1024
"""Most uncompressed bytes read from one zip file in all."""

MAX_MEMBERS = 10_000
"""Most members of one zip file looked at; the rest are listed as one error row."""

OK, NO_FACE, ERROR = "ok", "no face", "error"
BOX = ("x", "y", "w", "h")


def columns(class_names: Iterable[str]) -> list[str]:
    """The table's columns for a model with these classes, in order."""
    return ["file", "face", *BOX, "detector", "aligned", *(f"prob_{c}" for c in class_names), "top", "score",
            "status"]


# --------------------------------------------------------------------------------------------- inputs
def folder_files(folder: str | os.PathLike, *, recursive: bool = True) -> list[Path]:
    """The files to read in a folder, sorted by their path relative to it: every file (whatever its extension: a
    non-image gets an error row, and so does anything that is not a regular file), but not hidden ones (``.name``)
    nor anything in hidden folders; links to folders are not followed (no loops, nothing outside the folder by
    accident).

    Raises:
        FileNotFoundError: no such folder.
        NotADirectoryError: it is a file.
    """
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"no such folder: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is a file, not a folder: pass the folder that holds the photos")
    found: list[Path] = []
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(Path(here) / f for f in files if not f.startswith("."))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


@dataclass(frozen=True)
class Member:
    """One file of an upload or a zip: its name and bytes, or why it was not read (``error``)."""

    name: str
    data: bytes = b""
    error: str = ""


def _unsafe_name(name: str) -> str:
    """Why a zip member's name is unsafe to use as a path, or "" when it is fine."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        return "its name is an absolute path"
    if ".." in PurePosixPath(posix).parts:
        return "its name climbs out of the archive ('..')"
    if "\0" in posix:
        return "its name holds a NUL character"
    return ""


def read_zip(source: bytes | str | os.PathLike, name: str = "", *, max_member_bytes: int = MAX_MEMBER_BYTES,
             max_total_bytes: int = MAX_TOTAL_BYTES, max_members: int = MAX_MEMBERS) -> Iterator[Member]:
    """The files of a zip archive, read in memory one at a time (nothing is extracted to disk), as
    :class:`Member` s named ``<name>/<member path>``, in the archive's order. Folders and hidden files
    (``__MACOSX/``, ``.DS_Store``) are skipped. Refused members come with their reason: an unsafe name (absolute, or
    with ``..``), encryption, a declared size over ``max_member_bytes``, or more than ``max_total_bytes`` read in all;
    a member whose data turns out larger than declared, or damaged, is refused when read. An archive that cannot be
    opened at all gives one member with the error.
    """
    name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the zip file")
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        yield Member(name, error=f"cannot open {name} as a zip file: {err}")
        return
    total = 0
    with archive:
        infos = archive.infolist()
        for i, info in enumerate(infos):
            label = f"{name}/{info.filename}"
            if i >= max_members:
                yield Member(f"{name}/…", error=f"{len(infos) - max_members} more members not read: {name} has "
                             f"{len(infos)}, over the limit of {max_members}; split the archive")
                return
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.is_dir() or any(p.startswith(".") and p != ".." for p in parts) or "__MACOSX" in parts:
                continue
            why = _unsafe_name(info.filename)
            if not why and info.flag_bits & 0x1:
                why = "it is encrypted"
            if not why and stat.S_ISLNK(info.external_attr >> 16):
                why = "it is a symbolic link, not a file"
            if not why and info.file_size > max_member_bytes:
                why = (f"it would expand to {info.file_size:,} bytes, over the limit of {max_member_bytes:,} per "
                       "member (a zip bomb?)")
            if not why and total + info.file_size > max_total_bytes:
                why = (f"the archive would expand past {max_total_bytes:,} bytes in all (a zip bomb?); split it "
                       "into smaller archives")
            if why:
                yield Member(label, error=f"refused {label}: {why}")
                continue
            try:
                with archive.open(info) as f:
                    data = f.read(info.file_size + 1)
            except Exception as err:  # noqa: BLE001 - bad CRC, unsupported compression...: this member only
                yield Member(label, error=f"cannot read {label} from the archive: {type(err).__name__}: {err}")
                continue
            if len(data) > info.file_size:
                yield Member(label, error=f"refused {label}: it holds more data than its header declares "
                             f"({info.file_size:,} bytes): a damaged or hostile archive")
                continue
            total += len(data)
            yield Member(label, data)


def _is_zip(name: str, data: bytes) -> bool:
    return name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04"


# --------------------------------------------------------------------------------------------- prediction
def _rows(predictor: Any, name: str, image: Any, faces: Literal["largest", "all"], whole_image_if_none: bool,
          max_pixels: int | None, replace: str = "") -> list[dict[str, Any]]:
    """The rows of one file: one per face, or one saying why there is none. ``replace`` in error messages (the
    full path of a file) is shown as ``name``."""
    try:
        preds = predictor.predict(image, faces=faces, whole_image_if_none=whole_image_if_none, max_pixels=max_pixels)
    except NoFaceFound:
        return [{"file": name, "status": NO_FACE}]
    except Exception as err:  # noqa: BLE001 - one bad file is a row with its reason, never the end of the batch
        text = (str(err) or type(err).__name__).replace(f"; {READABLE}", "")  # the format list once, not per row
        if replace:
            text = text.replace(replace, name)
        if not isinstance(err, ValueError | OSError):  # ImageError, FileNotFoundError...: their message says it all
            text = f"{type(err).__name__}: {text}"
        return [{"file": name, "status": f"{ERROR}: {text}"}]
    rows = []
    for i, p in enumerate(preds, start=1):
        row: dict[str, Any] = {"file": name, "face": i, **dict(zip(BOX, p.box, strict=True)), "detector": p.detector,
                               "aligned": p.aligned}
        row.update({f"prob_{c}": v for c, v in p.probs.items()})
        rows.append({**row, "top": p.top, "score": p.score, "status": OK})
    return rows


def _table(rows: list[dict[str, Any]], class_names: Iterable[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns(class_names))
    for col in ("face", *BOX):
        df[col] = df[col].astype("Int64")  # empty for files without a face
    df["aligned"] = df["aligned"].astype("boolean")
    df["score"] = df["score"].astype(float)
    _text_columns(df)
    df = df.sort_values(["file", "face"], kind="stable", na_position="first")
    return df.reset_index(drop=True)


def predict_folder(predictor: Any, folder: str | os.PathLike, *, recursive: bool = True,
                   faces: Literal["largest", "all"] = "all", whole_image_if_none: bool = False,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS, progress: Progress | None = None) -> pd.DataFrame:
    """Predict every face of every file in a folder (:func:`folder_files`); a zip file in it is opened and its
    images predicted too (``album.zip/x.jpg``).

    Args:
        predictor: a :class:`fer_core.predict.Predictor` (or anything with its ``predict`` and ``class_names``).
        folder: the folder; ``file`` in the table is relative to it.
        recursive: look in sub-folders too.
        faces: ``"all"`` (every face, largest first) or ``"largest"``.
        whole_image_if_none: a file without a face gets the prediction of its centre square (detector
            ``whole_image``) instead of a ``"no face"`` row.
        max_pixels: larger images are refused (an error row) before they are decoded.
        progress: called with ``(0, total, "")`` first, then after each file with ``(done, total, file)``.

    Raises:
        FileNotFoundError, NotADirectoryError: no such folder (bad files inside it are rows, never errors).
    """
    root = Path(folder)
    paths = folder_files(root, recursive=recursive)
    rows: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, len(paths), "")
    for done, path in enumerate(paths, start=1):
        name = path.relative_to(root).as_posix()
        if not path.is_file():  # opening a named pipe would wait forever; a device could be endless
            rows.append({"file": name, "status": f"{ERROR}: {name} is not a regular file (a named pipe, a device, a "
                                                  "socket or a broken link): not read"})
        elif name.lower().endswith(".zip"):
            rows.extend(_zip_rows(predictor, path, name, faces, whole_image_if_none, max_pixels))
        else:
            rows.extend(_rows(predictor, name, path, faces, whole_image_if_none, max_pixels, replace=str(path)))
        if progress is not None:
            progress(done, len(paths), name)
    return _table(rows, predictor.class_names)


def predict_path(predictor: Any, path: str | os.PathLike, *, faces: Literal["largest", "all"] = "all",
                 whole_image_if_none: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> pd.DataFrame:
    """The table of one file: an image, or a zip file whose members are read in memory (``<zip name>/<member>``).
    Arguments as in :func:`predict_folder`."""
    path = Path(path)
    if path.name.lower().endswith(".zip"):
        rows = _zip_rows(predictor, path, path.name, faces, whole_image_if_none, max_pixels)
    else:
        rows = _rows(predictor, path.name, path, faces, whole_image_if_none, max_pixels, replace=str(path))
    return _table(rows, predictor.class_names)


def _zip_rows(predictor: Any, source: bytes | Path, name: str, faces: Literal["largest", "all"],
              whole_image_if_none: bool, max_pixels: int | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for member in read_zip(source, name):
        if member.error:
            rows.append({"file": member.name, "status": f"{ERROR}: {member.error}"})
        else:
            rows.extend(_member_rows(predictor, member, faces, whole_image_if_none, max_pixels))
    return rows


def _member_rows(predictor: Any, member: Member, faces: Literal["largest", "all"], whole_image_if_none: bool,
                 max_pixels: int | None) -> list[dict[str, Any]]:
    stream = io.BytesIO(member.data)
    stream.name = member.name  # load_image names a file object by its .name in its messages
    if not member.data:
        return [{"file": member.name, "status": f"{ERROR}: cannot read {member.name}: the file is empty (0 bytes)"}]
    return _rows(predictor, member.name, stream, faces, whole_image_if_none, max_pixels)


def predict_files(predictor: Any, files: Iterable[tuple[str, bytes]], *, faces: Literal["largest", "all"] = "all",
                  whole_image_if_none: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  progress: Progress | None = None) -> pd.DataFrame:
    """Predict every face of files given as ``(name, bytes)`` (uploads); a zip file (by its name or its first
    bytes) is read in memory with :func:`read_zip` and its members predicted as ``<zip name>/<member>``. Arguments
    and table as in :func:`predict_folder`; ``progress`` counts the given files."""
    files = list(files)
    rows: list[dict[str, Any]] = []
    if progress is not None:
        progress(0, len(files), "")
    for done, (name, data) in enumerate(files, start=1):
        if data and _is_zip(name, data):
            rows.extend(_zip_rows(predictor, data, name, faces, whole_image_if_none, max_pixels))
        else:
            rows.extend(_member_rows(predictor, Member(name, data), faces, whole_image_if_none, max_pixels))
        if progress is not None:
            progress(done, len(files), name)
    return _table(rows, predictor.class_names)


# --------------------------------------------------------------------------------------------- results
def class_names_of(df: pd.DataFrame) -> list[str]:
    """The model's classes, from the table's ``prob_<class>`` columns, in order."""
    return [c[len("prob_"):] for c in df.columns if c.startswith("prob_")]


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Counts of a prediction table: ``files``, ``images_read`` (files decoded, with or without a face),
    ``faces``, ``no_face`` (files read without a face), ``errors`` (files not read), ``per_class`` (faces per top
    class, every class of the model, its order) and ``error_files`` (``{file: reason}``)."""
    status = df["status"].astype(str)
    per_file = df.assign(_ok=status == OK, _none=status == NO_FACE).groupby("file", sort=False)
    files = per_file["_ok"].any()
    errors = df[status.str.startswith(ERROR)]
    faces = df[status == OK]
    counts = faces["top"].value_counts()
    return {"files": int(df["file"].nunique()), "images_read": int((files | per_file["_none"].any()).sum()),
            "faces": len(faces), "no_face": int(per_file["_none"].any().sum()), "errors": int(errors["file"].nunique()),
            "per_class": {c: int(counts.get(c, 0)) for c in class_names_of(df)},
            "error_files": dict(zip(errors["file"], errors["status"].str.removeprefix(f"{ERROR}: "), strict=True))}


def describe(summary: dict[str, Any]) -> str:
    """A one-line account of :func:`summarize`'s counts."""
    classes = ", ".join(f"{c} {n}" for c, n in summary["per_class"].items() if n)
    return (f"{summary['files']} file(s): {summary['images_read']} image(s) read, {summary['faces']} face(s), "
            f"{summary['no_face']} without a face, {summary['errors']} unreadable"
            + (f"; top class: {classes}" if classes else ""))


def write_predictions(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a prediction table by the file's extension, atomically: ``.csv`` (empty cells for files without a
    face) or ``.parquet`` (needs pyarrow, which Streamlit installs).

    Raises:
        ValueError: another extension.
        ImportError: ``.parquet`` without pyarrow (the message says what to install).
    """
    from fer_core.io import atomic_write_bytes

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return atomic_write_bytes(path, df.to_csv(index=False).encode("utf-8"))
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError(f"cannot write {path}: Parquet files need pyarrow (pip install pyarrow); or write "
                              "a .csv file instead") from None
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return atomic_write_bytes(path, buf.getvalue())
    raise ValueError(f"cannot write predictions to {path}: unknown extension {path.suffix or '(none)'!r}; use .csv "
                     "or .parquet")


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A table written by :func:`write_predictions`, with its column types (whole numbers that may be empty)."""
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, keep_default_na=False,
                                                                                    na_values=[""])
    for col in ("face", *BOX):
        df[col] = df[col].astype("Int64")
    df["aligned"] = df["aligned"].astype("boolean")
    _text_columns(df)
    return df


def _text_columns(df: pd.DataFrame) -> None:
    """Text columns as Python strings, None where empty (the same after a CSV or Parquet round trip)."""
    for col in ("file", "detector", "top", "status"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
