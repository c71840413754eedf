"""AffectNet loader on a tiny fixture in the published CSV layout, written into tmp_path."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.data import affectnet as affectnet_mod  # noqa: F401  (registers affectnet)
from fer_core.data import build_dataset, dataset_info, list_datasets
from fer_core.labels import CLASSES

HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
# AffectNet's own codes 0-7, written out by hand: the canonical class each must become
CODE_NAMES = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger", 7: "contempt"}
TRAIN_CODES = [*range(11), *range(11), 1, 1]  # 24 rows: every code twice, two more happiness
TEST_CODES = [*range(11), 7]  # 12 rows: every code once, a second contempt
SUBDIRS = ("12", "689", "1040")
BOX_COLOUR = (250, 10, 120)


def _row(g: int, code: int):
    """Fixture row ``g`` (global over both files): name, image size, box, background value, valence, arousal."""
    name = f"{SUBDIRS[g % 3]}/{hashlib.sha224(f'face{g}'.encode()).hexdigest()}.jpg"
    size = (48 + 8 * (g % 4), 40 + 8 * (g % 3))  # (width, height): sizes differ
    box = (8 * (1 + g % 2), 8, 24, 16 + 8 * (g % 2))  # x, y, w, h on the 8-pixel JPEG grid
    valence, arousal = (-2.0, -2.0) if code == 10 else (round(g / 40 - 0.5, 3), round(0.4 - g / 50, 3))
    return name, size, box, 5 + 7 * g, valence, arousal


def _csv_line(g: int, code: int) -> str:
    name, _, (x, y, w, h), _, valence, arousal = _row(g, code)
    landmarks = ";".join(f"{10 + 1.25 * i:.2f}" for i in range(12))
    return f"{name},{x},{y},{w},{h},{landmarks},{code},{valence},{arousal}"


def _write_image(root, g: int, code: int):
    name, (width, height), (x, y, w, h), bg, _, _ = _row(g, code)
    pixels = np.full((height, width, 3), bg, np.uint8)
    pixels[y:y + h, x:x + w] = BOX_COLOUR
    path = root / "Manually_Annotated_Images" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, subsampling=0)


TRAIN_ROWS = list(enumerate(TRAIN_CODES))
TEST_ROWS = [(len(TRAIN_CODES) + k, c) for k, c in enumerate(TEST_CODES)]


@pytest.fixture
def aff_root(tmp_path):
    root = tmp_path / "affectnet"
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    # training.csv with CRLF line endings; validation.csv with a UTF-8 BOM and a trailing blank line
    (lists / "training.csv").write_bytes("".join(f"{line}\r\n" for line in
                                                 [HEADER, *(_csv_line(g, c) for g, c in TRAIN_ROWS)]).encode())
    (lists / "validation.csv").write_bytes(("\ufeff" + "".join(f"{line}\n" for line in
                                                               [HEADER, *(_csv_line(g, c) for g, c in TEST_ROWS)])
                                            + "\n").encode())
    for g, c in TRAIN_ROWS + TEST_ROWS:
        _write_image(root, g, c)
    return root


def _name(g: int) -> str:
    return _row(g, 0)[0]


def _stem(g: int) -> str:
    return _name(g).rsplit("/", 1)[1][:-4]


def test_registered_with_description():
    assert "affectnet" in list_datasets()
    info = dataset_info("affectnet")
    assert info.needs_root is True
    for words in ("mohammadmahoor.com/pages/databases/affectnet", "7-class", "8-class", "official validation set"):
        assert words in info.description


def test_test_split_labels_class_by_class(aff_root):
    ds = build_dataset("affectnet", root=aff_root, split="test", classes=8)
    assert ds.classes == CLASSES and ds.num_classes == 8 and ds.labels.dtype == np.int64
    got = dict(zip(ds.image_names, ds.labels.tolist(), strict=True))
    for g, code in TEST_ROWS:
        if code <= 7:
            assert CLASSES[got.pop(_name(g))] == CODE_NAMES[code], f"AffectNet code {code}"
    assert got == {}  # codes 8-10 dropped
    assert ds.dropped == {"contempt": 0, "none": 1, "uncertain": 1, "no_face": 1}
    kept = [(g, c) for g, c in TEST_ROWS if c <= 7]
    assert ds.image_names == [_name(g) for g, _ in kept]
    assert ds.valence.dtype == np.float32 and ds.arousal.dtype == np.float32
    assert np.allclose(ds.valence, [_row(g, c)[4] for g, c in kept])
    assert np.allclose(ds.arousal, [_row(g, c)[5] for g, c in kept])
    item = ds[3]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 224, 224)
    assert item["label"] == CLASSES.index("surprise") and item["index"] == 3
    assert ds.subsets == () and ds.unmatched == [] and ds.duplicates == 0
    cfg = json.loads(json.dumps(ds.config))
    assert cfg["name"] == "affectnet" and cfg["classes"] == 8 and cfg["image_size"] == 224 and not cfg["crop_face"]


def test_seven_vs_eight_class_protocols(aff_root):
    seven = build_dataset("affectnet", root=aff_root, split="test")
    assert seven.classes == CLASSES[:7] and len(seven) == 7
    assert seven.dropped == {"contempt": 2, "none": 1, "uncertain": 1, "no_face": 1}
    assert sorted(CLASSES[i] for i in seven.labels) == sorted(CODE_NAMES[c] for c in range(7))
    eight = build_dataset("affectnet", root=aff_root, split="test", classes=8)
    assert len(eight) == 9 and eight.labels.tolist().count(CLASSES.index("contempt")) == 2
    assert len(seven) + sum(seven.dropped.values()) == len(TEST_CODES) == len(eight) + sum(eight.dropped.values())
    with pytest.raises(ValueError, match="classes must be 7"):
        build_dataset("affectnet", root=aff_root, split="test", classes=6)


def test_train_val_disjoint_deterministic(aff_root):
    for classes, kept_codes in ((7, range(7)), (8, range(8))):
        train = build_dataset("affectnet", root=aff_root, split="train", classes=classes, val_fraction=0.25)
        val = build_dataset("affectnet", root=aff_root, split="val", classes=classes, val_fraction=0.25)
        assert not set(train.image_names) & set(val.image_names)
        kept = {_name(g) for g, c in TRAIN_ROWS if c in kept_codes}
        assert set(train.image_names) | set(val.image_names) == kept and len(train) + len(val) == len(kept)
        total = {reason: train.dropped[reason] + val.dropped[reason] for reason in train.dropped}
        assert total == {"contempt": 2 if classes == 7 else 0, "none": 2, "uncertain": 2, "no_face": 2}
        again = build_dataset("affectnet", root=aff_root, split="val", classes=classes, val_fraction=0.25)
        assert again.image_names == val.image_names and again.paths == val.paths
    # the held-out rows are chosen over all of training.csv: the 7-class val is the 8-class val without contempt
    val7 = build_dataset("affectnet", root=aff_root, split="val", val_fraction=0.25, seed=3)
    val8 = build_dataset("affectnet", root=aff_root, split="val", classes=8, val_fraction=0.25, seed=3)
    contempt = {_name(g) for g, c in TRAIN_ROWS if c == 7}
    assert val7.image_names == [n for n in val8.image_names if n not in contempt]
    default = build_dataset("affectnet", root=aff_root, split="val", classes=8)
    assert len(default) + sum(default.dropped.values()) == 2  # round(0.1 * 24) rows held out


def test_images_resize_and_crop_face(aff_root):
    ds = build_dataset("affectnet", root=aff_root, split="test", classes=8, image_size=64)
    crop = build_dataset("affectnet", root=aff_root, split="test", classes=8, image_size=64, crop_face=True)
    assert crop.config["crop_face"] is True
    for i, name in enumerate(ds.image_names):
        g = next(g for g, _ in TEST_ROWS if _name(g) == name)
        bg = _row(g, 0)[3]
        whole = ds[i]["image"]
        assert tuple(whole.shape) == (3, 64, 64) and whole.dtype == torch.uint8
        assert np.abs(whole[:, :3, :3].numpy().astype(int) - bg).max() <= 6  # corner: this image's background
        face = crop[i]["image"].numpy().astype(int)
        assert tuple(face.shape) == (3, 64, 64)
        assert np.abs(face[:, 4:-4, 4:-4] - np.array(BOX_COLOUR)[:, None, None]).max() <= 12  # all face box
    native = build_dataset("affectnet", root=aff_root, split="test", image_size=None)  # only when asked for
    with pytest.raises(ValueError, match="give the option image_size"):  # the released sizes differ
        [native[i] for i in range(len(native))]
    with pytest.raises(ValueError, match="crop_face"):
        build_dataset("affectnet", root=aff_root, split="test", crop_face="yes")


def _write_csv(root, lines, name="validation.csv"):
    folder = root / "Manually_Annotated_file_lists"
    folder.mkdir(parents=True, exist_ok=True)
    (root / "Manually_Annotated_Images").mkdir(exist_ok=True)
    (folder / name).write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize(("bad", "message"), [
    ("12/a.jpg,1,2,3,4,5.0;6.0,1,0.1", r"line 3: expected 9 fields"),
    ("12/a.jpg,1,2,3,4,5.0;6.0,happy,0.1,0.2", r"line 3: expression must be an integer 0-10, got 'happy'"),
    ("12/a.jpg,1,2,3,4,5.0;6.0,11,0.1,0.2", r"line 3: expression must be an integer 0-10.*got 11"),
    ("12/a.jpg,1,two,3,4,5.0;6.0,1,0.1,0.2", r"line 3: face_x, face_y, face_width, face_height must be numbers"),
    ("12/a.jpg,1,2,3,4,5.0;6.0,1,high,0.2", r"line 3: valence and arousal must be numbers"),
])
def test_malformed_rows_name_file_and_line(tmp_path, bad, message):
    _write_csv(tmp_path, [HEADER, "12/b.jpg,1.0,2,3,4,5.0;6.0,1,0.1,0.2", bad])
    with pytest.raises(ValueError, match=r"validation\.csv: " + message):
        build_dataset("affectnet", root=tmp_path, split="test")


def test_header_mismatch(tmp_path):
    _write_csv(tmp_path, [HEADER.replace("expression", "emotion"), "12/a.jpg,1,2,3,4,5.0;6.0,1,0.1,0.2"],
               name="training.csv")
    with pytest.raises(ValueError, match=r"training\.csv: line 1: expected the header 'subDirectory_filePath,"):
        build_dataset("affectnet", root=tmp_path, split="train")


def test_missing_files(aff_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"validation\.csv.*mohammadmahoor\.com/pages/databases/affectnet"):
        build_dataset("affectnet", root=tmp_path / "nowhere", split="test")
    (aff_root / "Manually_Annotated_file_lists" / "training.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \S*Manually_Annotated_file_lists/training\.csv;"):
        build_dataset("affectnet", root=aff_root, split="val")
    images = aff_root / "Manually_Annotated_Images"
    no_face = next(g for g, c in TEST_ROWS if c == 10)
    (images / _name(no_face)).unlink()  # a dropped row's image is not needed
    assert len(build_dataset("affectnet", root=aff_root, split="test")) == 7
    gone = [g for g, c in TEST_ROWS if c in (2, 5)]
    for g in gone:
        (images / _name(g)).unlink()
    with pytest.raises(FileNotFoundError, match=rf"2 image\(s\) listed in .*validation\.csv are missing .*"
                                                rf"{_name(gone[0])}, {_name(gone[1])}"):
        build_dataset("affectnet", root=aff_root, split="test")


def test_subsets_match_on_stem(aff_root, tmp_path):
    g_of = {c: g for g, c in reversed(TEST_ROWS)}  # first test row of each code
    lists = tmp_path / "lists"
    lists.mkdir()
    # CRLF; a duplicate; an entry matching no image; the contempt image (a sample only under 8 classes)
    (lists / "occlusion.txt").write_bytes(f"{_stem(g_of[1])}.jpg 1 3\r\n{_stem(g_of[4])} 4 0\r\n{_stem(g_of[1])}.jpg"
                                          f" 1 3\r\nffff0000.jpg 2 1\r\n{_stem(g_of[7])}.jpg 7 2\r\n".encode())
    (lists / "pose30.txt").write_text(f"0/{_stem(g_of[0])}.jpg\n1/{_stem(g_of[6])}.jpg\n")
    (lists / "pose45.txt").write_text(f"{_name(g_of[6])}\n")
    opts = {"occlusion_list": lists / "occlusion.txt", "pose30_list": lists / "pose30.txt",
            "pose45_list": lists / "pose45.txt"}
    occ = build_dataset("affectnet", root=aff_root, split="test", subset="occlusion", **opts)
    assert occ.subsets == ("occlusion", "pose30", "pose45") and occ.subset == "occlusion"
    assert occ.image_names == [_name(g_of[1]), _name(g_of[4])]
    assert [CLASSES[i] for i in occ.labels] == ["happy", "fear"] and len(occ.valence) == 2
    assert occ.unmatched == sorted(["ffff0000", _stem(g_of[7])]) and occ.duplicates == 1
    occ8 = build_dataset("affectnet", root=aff_root, split="test", subset="occlusion", classes=8, **opts)
    assert len(occ8) == 3 and occ8.unmatched == ["ffff0000"]
    for sub, classes in ((occ, 7), (occ8, 8)):  # where the subset's samples sit in the whole split
        whole = build_dataset("affectnet", root=aff_root, split="test", classes=classes, **opts)
        assert [whole.image_names[i] for i in sub.split_positions] == sub.image_names
    p30 = build_dataset("affectnet", root=aff_root, split="test", subset="pose30", **opts)
    assert [CLASSES[i] for i in p30.labels] == ["neutral", "anger"] and p30.unmatched == []
    p45 = build_dataset("affectnet", root=aff_root, split="test", subset="pose45", crop_face=True, **opts)
    assert len(p45) == 1 and p45[0]["label"] == CLASSES.index("anger") and p45.config["pose45_list"].endswith("45.txt")
    with pytest.raises(ValueError, match="pose45_list"):
        build_dataset("affectnet", root=aff_root, split="test", subset="pose45")
    (aff_root / "subsets").mkdir()  # RAN's lists in <root>/subsets/ are used when no option names them
    (aff_root / "subsets" / "pose30.txt").write_bytes((lists / "pose30.txt").read_bytes())
    found = build_dataset("affectnet", root=aff_root, split="test", subset="pose30")
    assert found.subsets == ("pose30",) and found.image_names == p30.image_names
    # and under the name RAN published it, in the data set's folder
    (aff_root / "occlusion_affectnet_list.txt").write_bytes((lists / "occlusion.txt").read_bytes())
    named = build_dataset("affectnet", root=aff_root, split="test", subset="occlusion")
    assert named.subsets == ("occlusion", "pose30") and named.image_names == occ.image_names


def test_unknown_option_lists_valid(aff_root, monkeypatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    with pytest.raises(ValueError, match=r"unknown option\(s\) colour for affectnet; valid: classes, crop_face"):
        build_dataset("affectnet", root=aff_root, split="test", colour=True)
    with pytest.raises(ValueError, match="reads files from disk"):
        build_dataset("affectnet", split="test")
    with pytest.raises(ValueError, match="unknown split"):
        build_dataset("affectnet", root=aff_root, split="dev")
