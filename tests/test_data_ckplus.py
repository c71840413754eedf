"""CK+ loader on a tiny fixture written in the published layout into tmp_path."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.data import browse, build_dataset, dataset_info, list_datasets, materialize
from fer_core.data import ckplus as ckplus_mod  # noqa: F401  (registers ckplus)
from fer_core.labels import CLASSES

# CK+ codes 0..7 -> canonical class names, written out here independently of fer_core.labels
CK_NAMES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sad", "surprise")
SUBJECTS = [f"S{5 * (k + 1):03d}" for k in range(12)]  # S005, S010, ..., S060


def _sequences():
    """``{"S005/001": (subject index, sequence index, frames, code or None)}``: 28 sequences, 3 unlabelled."""
    out, counter = {}, 0
    for k, subject in enumerate(SUBJECTS):
        for j, seq in enumerate(["001", "002"] + (["003"] if k % 3 == 0 else [])):
            code = None
            if not (k % 4 == 1 and seq == "002"):
                code, counter = counter % 8, counter + 1
            out[f"{subject}/{seq}"] = (k, j, 4 + (k + j) % 3, code)
    return out


SEQUENCES = _sequences()
LABELLED = {s: v for s, v in SEQUENCES.items() if v[3] is not None}


def _frame(path, k, j, frame):
    """Red channel = 20 x frame number (grey for the last subject); sizes 64x49 and 72x48 alternate by subject."""
    w, h = (64, 49) if k % 2 == 0 else (72, 48)
    if k == 11:
        Image.fromarray(np.full((h, w), 20 * frame, np.uint8)).save(path)
    else:
        Image.fromarray(np.full((h, w, 3), (20 * frame, 20 * k + 10, 40 * j + 20), np.uint8)).save(path)


def _write_ck(root):
    for name, (k, j, frames, code) in SEQUENCES.items():
        subject, seq = name.split("/")
        folder = root / "cohn-kanade-images" / subject / seq
        folder.mkdir(parents=True)
        for n in range(1, frames + 1):
            _frame(folder / f"{subject}_{seq}_{n:08d}.png", k, j, n)
        emotion = root / "Emotion" / subject / seq
        if code is not None:
            emotion.mkdir(parents=True)
            (emotion / f"{subject}_{seq}_{frames:08d}_emotion.txt").write_text(f"   {code:.7e}\n")
        elif k == 1:
            emotion.mkdir(parents=True)  # the published Emotion/ has empty folders for unlabelled sequences
    (root / "Landmarks").mkdir()  # other published folders are ignored
    return root


@pytest.fixture(scope="module")
def ck_root(tmp_path_factory):
    return _write_ck(tmp_path_factory.mktemp("ck") / "CK+")


@pytest.fixture
def fresh_root(tmp_path):
    return _write_ck(tmp_path / "CK+")


def _ck(root, split="test", **options):
    return build_dataset("ckplus", root=root, split=split, **{"crop_face": False, "image_size": 32, **options})


def _all_splits(root, **options):
    return [_ck(root, split, **options) for split in ("train", "val", "test")]


def _frames_by_sequence(datasets):
    """``{sequence: [(frame number read from the pixels, class name), ...]}`` over the given data sets."""
    out: dict[str, list] = {}
    for ds in datasets:
        for i in range(len(ds)):
            item = ds[i]
            frame = int(item["image"][0].float().mean()) / 20
            assert frame.is_integer() and item["subject"] == ds.sequences[i].split("/")[0]
            out.setdefault(ds.sequences[i], []).append((int(frame), CLASSES[item["label"]]))
    return out


def test_registered_with_description():
    assert "ckplus" in list_datasets()
    info = dataset_info("ckplus")
    assert info.needs_root is True and "jeffcohn.net" in info.description
    assert "593" in info.description and "10-fold" in info.description and "fold=k" in info.description


def test_labels_class_by_class(ck_root):
    splits = _all_splits(ck_root)
    assert all(ds.classes == CLASSES and ds.num_classes == 8 for ds in splits)
    seen = {}
    for ds in splits:
        for seq, label in zip(ds.sequences, ds.labels, strict=True):
            seen.setdefault(seq, set()).add(CLASSES[label])
    assert set(seen) == set(LABELLED)
    for seq, (_, _, _, code) in LABELLED.items():
        assert seen[seq] == {CK_NAMES[code]}, seq
    assert {v[3] for v in LABELLED.values()} == set(range(8))  # every code 0-7 is checked


def test_items_subjects_and_sizes(ck_root):
    ds = _ck(ck_root, "test")
    assert ds.fold_subjects == ("S005", "S055")  # positions 0 and 10 of the sorted subjects: fold 0 of 10
    assert set(ds.subjects) == {"S005", "S055"} and len(ds) == 3 * 5
    assert ds.sequences[0] == "S005/001" and ds.paths[0].name == "S005_001_00000002.png"
    item = ds[0]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 32, 32)
    assert item["subject"] == "S005" and item["index"] == 0 and item["label"] == ds.labels[0]
    assert browse.face(ds, 0)["subject"] == "S005"
    big = build_dataset("ckplus", root=ck_root, split="test", crop_face=False)  # default image_size 224
    assert big.image_size == 224 and tuple(big[len(big) - 1]["image"].shape) == (3, 224, 224)
    with pytest.raises(IndexError):
        ds[len(ds)]


@pytest.mark.parametrize("last", [1, 3])
def test_last_frames_by_pixel_content(ck_root, last):
    frames = _frames_by_sequence(_all_splits(ck_root, last_frames=last))
    for seq, (_, _, n, code) in LABELLED.items():
        assert frames[seq] == [(f, CK_NAMES[code]) for f in range(n - last + 1, n + 1)], seq


def test_neutral_first_and_short_sequences(ck_root):
    frames = _frames_by_sequence(_all_splits(ck_root, last_frames=2, neutral_first=True))
    for seq, (_, _, n, code) in LABELLED.items():
        assert frames[seq] == [(1, "neutral"), (n - 1, CK_NAMES[code]), (n, CK_NAMES[code])], seq
    short = {s for s, v in LABELLED.items() if v[2] == 4}
    ds = _ck(ck_root, last_frames=5)
    assert set(ds.short_sequences) == short
    frames = _frames_by_sequence(_all_splits(ck_root, last_frames=5, neutral_first=True))
    for seq, (_, _, n, code) in LABELLED.items():  # the first frame is never also one of the last frames
        assert frames[seq] == [(1, "neutral")] + [(f, CK_NAMES[code]) for f in range(max(2, n - 4), n + 1)], seq
    short = {s for s, v in LABELLED.items() if v[2] < 6}  # 5 frames after the first one need 6
    assert set(_ck(ck_root, last_frames=5, neutral_first=True).short_sequences) == short


@pytest.mark.parametrize("folds", [10, 3])
def test_folds_subject_independent(ck_root, folds):
    everything = sorted(str(p) for ds in _all_splits(ck_root) for p in ds.paths)
    tests = []
    for k in range(folds):
        tr, va, te = _all_splits(ck_root, folds=folds, fold=k)
        assert not (set(tr.subjects) & set(va.subjects) or set(tr.subjects) & set(te.subjects)
                    or set(va.subjects) & set(te.subjects))
        assert set(te.fold_subjects) == set(SUBJECTS[k::folds]) and set(te.subjects) == set(te.fold_subjects)
        assert set(va.subjects) == set(SUBJECTS[(k + 1) % folds::folds])
        assert sorted(str(p) for ds in (tr, va, te) for p in ds.paths) == everything
        assert va.paths == _ck(ck_root, "test", folds=folds, fold=(k + 1) % folds).paths
        assert tr.config["fold"] == k and tr.config["folds"] == folds
        tests += [str(p) for p in te.paths]
    assert sorted(tests) == everything  # every sample in exactly one test fold
    again = _ck(ck_root, "train", folds=folds, fold=1)
    assert again.paths == _ck(ck_root, "train", folds=folds, fold=1).paths


def test_unlabelled_sequences_counted(ck_root):
    assert len(SEQUENCES) - len(LABELLED) == 3
    for ds in _all_splits(ck_root, fold=4):
        assert ds.dropped == {"unlabelled_sequences": 3}
        assert not {"S010/002", "S030/002", "S050/002"} & set(ds.sequences)


def test_crop_face_falls_back_to_centre_square(fresh_root):
    ds = build_dataset("ckplus", root=fresh_root, split="test", image_size=32)  # crop_face=True by default
    assert ds.crop_face is True and ds.no_face == set()
    frame = np.full((49, 64, 3), 100, np.uint8)  # no face; white bands left and right of the 49x49 centre square
    frame[:, :7] = 255
    frame[:, 56:] = 255
    Image.fromarray(frame).save(ds.paths[0])
    image = ds[0]["image"]
    assert tuple(image.shape) == (3, 32, 32) and int(image.min()) == int(image.max()) == 100
    assert ds.no_face == {ds.paths[0]}
    ds[1]
    assert ds.no_face == {ds.paths[0], ds.paths[1]}
    whole = _ck(fresh_root, "test")[0]["image"]  # crop_face=False keeps the whole frame, bands and all
    assert int(whole.max()) == 255


def test_errors_name_the_file_or_value(fresh_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cohn-kanade-images and .*Emotion.*jeffcohn\.net/Resources"):
        _ck(tmp_path / "nowhere")
    emotion = fresh_root / "Emotion" / "S015" / "001" / "S015_001_00000006_emotion.txt"
    assert emotion.exists()
    for text, line in [("   9.0000000e+00\n", 1), ("   2.5000000e+00\n", 1), ("happy\n", 1), ("", 1),
                       ("   3.0000000e+00\n   5.0000000e+00\n", 2)]:
        emotion.write_text(text)
        with pytest.raises(ValueError, match=rf"S015_001_00000006_emotion\.txt line {line}"):
            _ck(fresh_root)
    emotion.write_text("   1.0000000e+00\r\n")  # CRLF is fine
    assert len(_ck(fresh_root, "train")) > 0
    (emotion.parent / "S015_001_00000005_emotion.txt").write_text("   1.0000000e+00\n")
    with pytest.raises(ValueError, match=r"S015.001 holds 2 emotion files"):
        _ck(fresh_root)
    (emotion.parent / "S015_001_00000005_emotion.txt").unlink()
    frames = fresh_root / "cohn-kanade-images" / "S015" / "001"
    (frames / "S015_001_00000006.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"S015_001_00000006\.png \(the last frame named by .*_emotion"):
        _ck(fresh_root)
    shutil.rmtree(frames)
    with pytest.raises(FileNotFoundError, match=r"1 labelled CK\+ sequence.*S015.001 \(the sequence folder"):
        _ck(fresh_root)


def test_option_errors(ck_root, monkeypatch):
    for options, message in [({"fold": 10}, "fold=10"), ({"fold": -1}, "fold=-1"), ({"folds": 2}, "folds=2"),
                             ({"folds": 13}, "folds=13 is more than the 12 subjects"), ({"last_frames": 0},
                             "last_frames=0"), ({"image_size": None}, "image_size must be set"),
                             ({"neutral_first": "yes"}, "neutral_first='yes'")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            _ck(ck_root, **options)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        _ck(ck_root, "dev")
    with pytest.raises(ValueError, match="defines no subsets.*'occlusion'"):
        build_dataset("ckplus", root=ck_root, split="test", subset="occlusion", crop_face=False)
    assert len(build_dataset("ckplus", root=ck_root, split="test", subset="all", crop_face=False)) == 15
    with pytest.raises(ValueError, match="unknown option.*colour.*valid: last_frames, neutral_first, folds, fold, "
                                         "crop_face, image_size"):
        _ck(ck_root, colour=True)
    monkeypatch.delenv("FER_DATA", raising=False)  # no configured data folder to fall back on
    with pytest.raises(ValueError, match="reads files from disk"):
        build_dataset("ckplus", split="test")


def test_config_json_and_materialize(ck_root):
    ds = _ck(ck_root, "val", fold=3, neutral_first=True)
    cfg = json.loads(json.dumps(ds.config))
    assert cfg == {"name": "ckplus", "split": "val", "subset": "all", "root": str(ck_root), "last_frames": 3,
                   "neutral_first": True, "folds": 10, "fold": 3, "crop_face": False, "image_size": 32}
    images, labels = materialize(ds)
    assert images.shape == (len(ds), 3, 32, 32) and images.dtype == torch.uint8
    assert labels.tolist() == ds.labels.tolist() and CLASSES.index("neutral") in labels.tolist()
