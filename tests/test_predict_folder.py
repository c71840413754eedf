"""Predictions for a folder of photos, a zip and uploads (fer_core.batch_predict, ``python -m fer_core predict FOLDER``
and the "Predict photos" page): every face a row, every bad file a row with its reason, hostile zips refused per
member, CSV and Parquet round trips.

The photos are real faces bundled with the libraries (scikit-image's astronaut, matplotlib's Grace Hopper); the bad
files are the whole corpus of tests/test_reliability_inputs.py (damaged, disguised, bombs), made there with Pillow.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zipfile
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pandas as pd
import pytest
from apphelpers import app, charts_on
from fsaudit import outside, recording
from PIL import Image
from skimage import data
from test_reliability_inputs import ASTRONAUT_BOX, BAD, encode

from fer_core.batch_predict import (
    columns,
    predict_files,
    predict_folder,
    read_predictions,
    read_zip,
    summarize,
    write_predictions,
)
from fer_core.cli import main
from fer_core.predict import Predictor

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

CLASSES = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
PAGE = "../pages/predict.py"


def astronaut_jpeg() -> bytes:
    return encode(Image.fromarray(data.astronaut()), "JPEG", quality=92)


def hopper_jpeg() -> bytes:
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return f.read()


def black_png() -> bytes:
    return encode(Image.new("RGB", (120, 90)), "PNG")


def zipped(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_model()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder of two photos, a faceless image, a nested folder with junk, a hidden file and the bad corpus:
    ``(folder, {relative file: expected status or message pattern})``."""
    root = tmp_path_factory.mktemp("photos")
    astro = astronaut_jpeg()
    files = {"astronaut.jpg": astro, "people/hopper.jpg": hopper_jpeg(), "people/deeper/notes.txt": b"not a photo\n",
             "people/deeper/black.png": black_png(), "truncated.jpg": astro[: len(astro) // 2], "empty.jpg": b""}
    expected = {"astronaut.jpg": "ok", "people/hopper.jpg": "ok", "people/deeper/notes.txt": "it is text, not an image",
                "people/deeper/black.png": "no face", "truncated.jpg": "damaged or incomplete",
                "empty.jpg": r"\(0 bytes\)"}
    for case, (name, make, message) in BAD.items():
        files[f"hostile/{case}-{name}"] = make()
        expected[f"hostile/{case}-{name}"] = message
    for rel, raw in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(raw)
    (root / ".hidden.jpg").write_bytes(astro)  # hidden files and folders are not read
    (root / ".cache").mkdir()
    (root / ".cache" / "x.jpg").write_bytes(astro)
    return root, expected


@pytest.fixture(scope="module")
def table(predictor, folder) -> tuple[pd.DataFrame, list[tuple[int, int, str]]]:
    calls: list[tuple[int, int, str]] = []
    df = predict_folder(predictor, folder[0], progress=lambda *a: calls.append(a))
    return df, calls


# --------------------------------------------------------------------------------------------- folders
def test_every_file_of_a_folder_is_a_row_with_its_status(table, folder):
    df, calls = table
    root, expected = folder
    assert list(df.columns) == columns(CLASSES)
    assert sorted(expected) == sorted(set(df["file"])) == list(df["file"])  # sorted, nothing hidden, nothing lost
    assert [c[2] for c in calls] == ["", *sorted(expected)] and [c[:2] for c in calls] == [
        (i, len(expected)) for i in range(len(expected) + 1)]
    for name, want in expected.items():
        rows = df[df["file"] == name]
        if want == "ok":
            assert (rows["status"] == "ok").all() and list(rows["face"]) == list(range(1, len(rows) + 1)), name
        elif want == "no face":
            assert len(rows) == 1 and rows["status"].item() == "no face" and pd.isna(rows["face"].item())
        else:  # one row naming the file by its relative path, with fer_core.face's reason
            (status,) = rows["status"]
            assert status.startswith("error: ") and name in status and re.search(want, status), (name, status)
            assert str(root) not in status and "formats that work" not in status
            assert rows[["face", "x", "top"]].isna().all(axis=None)


def test_faces_get_their_box_and_probabilities(table):
    df, _ = table
    ok = df[df["status"] == "ok"]
    probs = ok[[f"prob_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()
    assert list(ok["top"]) == [CLASSES[i] for i in probs.argmax(axis=1)]
    assert np.allclose(ok["score"], probs.max(axis=1))
    astro = ok[ok["file"] == "astronaut.jpg"].iloc[0]
    assert np.abs(np.subtract([astro.x, astro.y, astro.w, astro.h], ASTRONAUT_BOX)).max() <= 4
    assert astro.top == "happy" and astro.detector.startswith("frontal")
    assert (ok["file"] == "people/hopper.jpg").sum() >= 1


def test_the_summary_counts_files_faces_and_errors(table, folder):
    df, _ = table
    _, expected = folder
    summary = summarize(df)
    bad = [n for n, s in expected.items() if s not in ("ok", "no face")]
    faces = int((df["status"] == "ok").sum())
    assert summary["files"] == len(expected) and summary["images_read"] == 3 and summary["no_face"] == 1
    assert summary["errors"] == len(bad) == len(BAD) + 3 and sorted(summary["error_files"]) == sorted(bad)
    assert summary["faces"] == faces >= 2 and sum(summary["per_class"].values()) == faces
    assert list(summary["per_class"]) == CLASSES and summary["per_class"]["happy"] >= 1


def test_pipes_devices_and_broken_links_are_rows_not_hangs(predictor, tmp_path):
    (tmp_path / "me.jpg").write_bytes(astronaut_jpeg())
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block until a writer comes: never
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")  # endless
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    df = predict_folder(predictor, tmp_path)
    status = dict(zip(df["file"], df["status"], strict=True))
    assert status.pop("me.jpg") == "ok"
    assert sorted(status) == ["gone.jpg", "pipe.jpg", "zero.jpg"]
    assert all(s == f"error: {n} is not a regular file (a named pipe, a device, a socket or a broken link): not read"
               for n, s in status.items())


def test_not_recursive_and_whole_image_options(predictor, folder):
    root, _ = folder
    top = predict_folder(predictor, root, recursive=False)
    assert set(top["file"]) == {"astronaut.jpg", "truncated.jpg", "empty.jpg"}
    sub = root / "people" / "deeper"
    whole = predict_folder(predictor, sub, whole_image_if_none=True, faces="largest")
    row = whole[whole["file"] == "black.png"].iloc[0]
    assert row.status == "ok" and row.detector == "whole_image" and row.face == 1 and (row.w, row.h) == (90, 90)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        predict_folder(predictor, root / "missing")
    with pytest.raises(NotADirectoryError, match="is a file"):
        predict_folder(predictor, root / "astronaut.jpg")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_round_trip_through_csv_and_parquet(table, tmp_path, suffix):
    df, _ = table
    path = write_predictions(df, tmp_path / f"out{suffix}")
    back = read_predictions(path)
    pd.testing.assert_frame_equal(back, df)
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary file left


def test_an_unknown_extension_is_refused(table, tmp_path):
    with pytest.raises(ValueError, match=r"unknown extension '.xlsx'; use .csv or .parquet"):
        write_predictions(table[0], tmp_path / "out.xlsx")


# --------------------------------------------------------------------------------------------- zips and uploads
def test_hostile_zip_members_are_refused_one_by_one(predictor):
    small = black_png()
    raw = zipped({"ok/black.png": small, "../evil.jpg": b"x", "/etc/abs.jpg": b"x",
                  "a/../../up.jpg": b"x", "c:/win.jpg": b"x", "__MACOSX/._astronaut.jpg": b"x", "folder/": b"",
                  "big.bin": b"\0" * 5000})
    members = {m.name: m for m in read_zip(raw, "album.zip", max_member_bytes=4096)}
    assert sorted(members) == sorted(f"album.zip/{n}" for n in ("ok/black.png", "../evil.jpg", "/etc/abs.jpg",
                                                                "a/../../up.jpg", "c:/win.jpg", "big.bin"))
    assert len(small) < 4096 and members["album.zip/ok/black.png"].data == small
    assert not members["album.zip/ok/black.png"].error
    assert "climbs out of the archive" in members["album.zip/../evil.jpg"].error
    assert "climbs out of the archive" in members["album.zip/a/../../up.jpg"].error
    assert "absolute path" in members["album.zip//etc/abs.jpg"].error
    assert "absolute path" in members["album.zip/c:/win.jpg"].error
    assert "5,000 bytes, over the limit of 4,096 per member" in members["album.zip/big.bin"].error
    assert all(not m.data for n, m in members.items() if m.error)
    # the total cap: the second 3,000-byte member would take the archive past 5,000 bytes
    capped = list(read_zip(zipped({"a.bin": b"1" * 3000, "b.bin": b"2" * 3000}), "z.zip", max_total_bytes=5000))
    assert capped[0].data and "past 5,000 bytes in all" in capped[1].error


def test_a_zip_that_lies_about_its_sizes_is_not_expanded():
    raw = bytearray(zipped({"bomb.bin": b"\0" * 1_000_000}))
    for signature, at in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):  # declare 1,000 bytes instead of 1,000,000
        start = raw.find(signature) + at
        raw[start:start + 4] = struct.pack("<I", 1000)
    (member,) = read_zip(bytes(raw), "bomb.zip")
    assert member.error.startswith("cannot read bomb.zip/bomb.bin from the archive") and not member.data


def test_uploads_and_zips_are_predicted_with_a_row_per_bad_member(predictor):
    files = [("me.jpg", astronaut_jpeg()), ("broken.png", b"<html>404</html>"), ("void.jpg", b""),
             ("album.zip", zipped({"x/hopper.jpg": hopper_jpeg(), "../../etc/passwd.jpg": b"x",
                                   "black.png": black_png()})),
             ("fake.zip", b"PK\x03\x04 this is no archive")]
    df = predict_files(predictor, files)
    status = dict(zip(df["file"], df["status"], strict=False))
    assert status["me.jpg"] == "ok" and status["album.zip/x/hopper.jpg"] == "ok"
    assert status["album.zip/black.png"] == "no face"
    assert "HTML web page" in status["broken.png"] and "broken.png" in status["broken.png"]
    assert status["void.jpg"] == "error: cannot read void.jpg: the file is empty (0 bytes)"
    assert "climbs out of the archive" in status["album.zip/../../etc/passwd.jpg"]
    assert status["fake.zip"].startswith("error: cannot open fake.zip as a zip file")
    assert list(df["file"]) == sorted(df["file"])


# --------------------------------------------------------------------------------------------- the command
def test_predict_command_on_a_folder_writes_the_table_and_prints_a_summary(tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "astronaut.jpg").write_bytes(astronaut_jpeg())
    (photos / "sub" / "notes.jpg").write_bytes(b"name,label\nalice,happy\n")
    out = tmp_path / "res" / "predictions.parquet"
    assert main(["predict", str(photos), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "unreadable: sub/notes.jpg: cannot read sub/notes.jpg: it is text, not an image" in printed
    assert "2 file(s): 1 image(s) read, 1 face(s), 0 without a face, 1 unreadable; top class: happy 1" in printed
    assert f"wrote {out} (2 rows" in printed
    df = read_predictions(out)
    assert list(df["file"]) == ["astronaut.jpg", "sub/notes.jpg"] and list(df["status"].str[:5]) == ["ok", "error"]
    assert main(["predict", str(photos), "--out", str(tmp_path / "p.csv"), "--json", "--no-recursive"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["files"], summary["faces"], summary["errors"]) == (1, 1, 0)
    # single-image output is unchanged
    assert main(["predict", str(photos / "astronaut.jpg")]) == 0
    assert capsys.readouterr().out.startswith("face 1: box x=")
    assert main(["predict", str(photos / "astronaut.jpg"), "--no-recursive"]) == 2
    assert "--no-recursive is for a folder" in capsys.readouterr().err


def test_predict_command_fails_only_when_nothing_was_read(tmp_path, capsys):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_bytes(b"")
    out = tmp_path / "p.csv"
    assert main(["predict", str(junk), "--out", str(out)]) == 1
    assert "none of its files is a readable image" in capsys.readouterr().err and out.exists()
    assert main(["predict", str(junk), "--out", str(tmp_path / "p.xlsx")]) == 2
    assert "write a .csv or a .parquet file" in capsys.readouterr().err
    (tmp_path / "album.zip").write_bytes(zipped({"../x.jpg": b"x", "me.jpg": astronaut_jpeg()}))
    assert main(["predict", str(tmp_path / "album.zip"), "--out", str(out)]) == 0
    assert list(pd.read_csv(out)["file"]) == ["album.zip/../x.jpg", "album.zip/me.jpg"]


# --------------------------------------------------------------------------------------------- the page
def test_predict_page_with_uploads_shows_the_table_chart_errors_and_download(runs_root):
    at = app(PAGE)
    assert [t.value for t in at.title] == ["Predict photos"] and any("Upload one or more" in i.value for i in at.info)
    (uploader,) = at.file_uploader
    assert uploader.accept_multiple_files and ".zip" in uploader.allowed_type
    uploader.set_value([("me.jpg", astronaut_jpeg(), "image/jpeg"), ("broken.png", b"%PDF-1.7\n", "image/png"),
                        ("album.zip", zipped({"hopper.jpg": hopper_jpeg(), "../evil.jpg": b"x"}),
                         "application/zip")]).run()
    assert not at.exception, [e.value for e in at.exception]
    (warning,) = at.warning
    assert "**broken.png**" in warning.value and "PDF document" in warning.value
    assert "**album.zip/../evil.jpg**" in warning.value and "climbs out of the archive" in warning.value
    (frame,) = at.dataframe
    shown = frame.value
    assert set(shown["file"]) == {"me.jpg", "broken.png", "album.zip/hopper.jpg", "album.zip/../evil.jpg"}
    faces = int((shown["status"] == "ok").sum())
    (chart,) = charts_on(at)
    assert list(chart["data"][0]["x"]) == CLASSES and sum(chart["data"][0]["y"]) == faces >= 2
    assert [m.value for m in at.metric] == ["4", str(faces), "0", "2"]
    assert len(at.get("download_button")) == 1
    # a bad upload alone never crashes the page, and the page keeps serving
    at.file_uploader[0].set_value(("only.jpg", b"", "image/jpeg")).run()
    assert not at.exception and "the file is empty" in at.warning[0].value and not charts_on(at)
    at.file_uploader[0].set_value(("empty.zip", zipped({"folder/": b"", ".DS_Store": b"x"}), "application/zip")).run()
    assert not at.exception and any("no files in the upload" in i.value for i in at.info)
    assert len(at.dataframe[0].value) == 0
    at.file_uploader[0].set_value(("me.jpg", astronaut_jpeg(), "image/jpeg")).run()
    assert not at.exception and not at.warning and len(charts_on(at)) == 1


def test_uploads_and_hostile_zips_stay_in_memory(runs_root, tmp_path):
    """The page reads uploads and zip members in memory: a zip whose members climb out of any folder writes no
    file anywhere (matplotlib's own caches aside), and renames nothing."""
    import matplotlib

    at = app(PAGE)
    hostile = zipped({"../../escaped.jpg": astronaut_jpeg(), "/tmp/abs.jpg": b"x", "fine/me.jpg": astronaut_jpeg()})
    with recording() as rec:
        at.file_uploader[0].set_value(("album.zip", hostile, "application/zip")).run()
        assert not at.exception and "climbs out of the archive" in at.warning[0].value
    assert set(at.dataframe[0].value["file"]) == {"album.zip/../../escaped.jpg", "album.zip//tmp/abs.jpg",
                                                  "album.zip/fine/me.jpg"}
    assert outside(rec.written_paths(), Path(matplotlib.get_configdir()), Path(matplotlib.get_cachedir())) == []
    assert rec.renames == [] and rec.network == []


def test_a_folder_through_an_exported_onnx_file_gives_the_pytorch_table(table, folder, tmp_path):
    """``predict FOLDER --onnx model.onnx``: the same rows, statuses, boxes and top classes as the PyTorch model
    (probabilities within the export's parity bar, 1e-4)."""
    pytest.importorskip("onnxruntime")
    from fer_core.export import export_registered

    path = export_registered("mini_xception_fer2013", "onnx", out=tmp_path / "mx.onnx")
    out = tmp_path / "onnx.csv"
    assert main(["predict", str(folder[0]), "--onnx", str(path), "--out", str(out)]) == 0
    ours, theirs = read_predictions(out), table[0]
    assert list(ours["file"]) == list(theirs["file"]) and list(ours["status"]) == list(theirs["status"])
    faces = theirs["status"] == "ok"
    assert list(ours.loc[faces, "top"]) == list(theirs.loc[faces, "top"])
    box = ["x", "y", "w", "h"]
    assert (ours.loc[faces, box].to_numpy() == theirs.loc[faces, box].to_numpy()).all()
    probs = [c for c in theirs.columns if c.startswith("prob_")]
    assert np.abs(ours.loc[faces, probs].to_numpy(float) - theirs.loc[faces, probs].to_numpy(float)).max() <= 1e-4
