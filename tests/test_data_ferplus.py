"""FERPlus beyond the CSV release: the image-folder release and RAN's challenge subsets, on fixtures in the
published formats (the CSV-release fixture is shared with test_data_fer2013.py)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from test_data_fer2013 import USAGE, VOTES, _pixels, _write

from fer_core.data import build_dataset

FOLDER = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}


@pytest.fixture()
def roots(tmp_path, monkeypatch):
    """The same 12 faces as the CSV release (``csv``) and as the image-folder release (``folders``)."""
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    csv_root = _write(tmp_path / "csv")
    folders = tmp_path / "folders"
    for usage, name in FOLDER.items():
        (folders / name).mkdir(parents=True)
        with open(folders / name / "label.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            for i, (votes, image) in enumerate(VOTES):
                if USAGE[i] != usage or not image:  # generate_training_data.py skips rows without a name
                    continue
                cv2.imwrite(str(folders / name / image), _pixels(i).reshape(48, 48))
                writer.writerow([image, "(0, 0, 48, 48)", *votes])
    lists = tmp_path / "lists"
    lists.mkdir()
    # RAN's FERPlus lists: CRLF, a class prefix on the name, a duplicate and one name that is not in the test split
    (lists / "occlusion.txt").write_bytes(b"1_fer0000009.png 8 0\r\n5_fer0000011.png 0 1\r\n"
                                          b"1_fer0000009.png 8 0\r\n3_fer0099999.png 2 2\r\n")
    (lists / "pose30.txt").write_text("0/fer0000010.jpg\n2/fer0000011.jpg\n")
    return csv_root, folders, lists


@pytest.mark.parametrize("mode", ["majority", "probability"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_folder_release_reads_as_the_csv_release(roots, split, mode):
    csv_root, folders, _ = roots
    a = build_dataset("ferplus", root=csv_root, split=split, mode=mode)
    b = build_dataset("ferplus", root=folders, split=split, mode=mode)
    assert (a.layout, b.layout) == ("csv", "folders")
    assert b.image_names == a.image_names and np.array_equal(b.labels, a.labels)
    assert np.allclose(b.label_dists, a.label_dists)
    assert all(np.array_equal(b[i]["image"].numpy(), a[i]["image"].numpy()) for i in range(len(a)))
    # the folder release has no unnamed rows, so it drops none for that reason; the rest is the same
    assert {k: v for k, v in b.dropped.items() if k != "empty_name"} == \
        {k: v for k, v in a.dropped.items() if k != "empty_name"}


def test_folder_release_errors_name_the_file(roots):
    _, folders, _ = roots
    (folders / "FER2013Valid" / "fer0000007.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) listed in .*label.csv.*fer0000007.png"):
        build_dataset("ferplus", root=folders, split="val")
    cv2.imwrite(str(folders / "FER2013Test" / "fer0000010.png"), np.zeros((40, 48), np.uint8))
    with pytest.raises(ValueError, match=r"fer0000010.png: expected a 48x48 image, got 48x40"):
        build_dataset("ferplus", root=folders, split="test")
    with open(folders / "FER2013Train" / "label.csv", "a") as fh:
        fh.write("fer0000099.png,\"(0, 0, 48, 48)\",1,2,x,0,0,0,0,0,0,0\n")
    with pytest.raises(ValueError, match=r"FER2013Train.label.csv: line 6: vote counts"):
        build_dataset("ferplus", root=folders, split="train")


def test_missing_ferplus_names_both_layouts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fer2013new.csv.*FER2013Train, FER2013Valid, FER2013Test"):
        build_dataset("ferplus", root=tmp_path, split="train")


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_ran_subsets_match_on_the_fer_number(roots, layout):
    csv_root, folders, lists = roots
    root = csv_root if layout == "csv" else folders
    occ = build_dataset("ferplus", root=root, split="test", subset="occlusion", occlusion_list=lists / "occlusion.txt")
    assert occ.image_names == ["fer0000009.png", "fer0000011.png"]
    assert occ.unmatched == ["fer0099999"] and occ.duplicates == 1 and occ.subsets == ("occlusion",)
    whole = build_dataset("ferplus", root=root, split="test")
    assert [whole.image_names[i] for i in occ.split_positions] == occ.image_names
    assert [occ.classes[k] for k in occ.labels] == ["surprise", "neutral"]
    assert occ.label_dists.shape == (2, 8) and np.array_equal(occ[1]["image"][0].numpy().ravel(), _pixels(11))
    pose = build_dataset("ferplus", root=root, split="test", subset="pose30", pose30_list=lists / "pose30.txt")
    assert pose.image_names == ["fer0000010.png", "fer0000011.png"] and pose.unmatched == []
    # the whole split is unchanged by giving the lists
    full = build_dataset("ferplus", root=root, split="test", occlusion_list=lists / "occlusion.txt")
    assert len(full) == 3 and full.subsets == ("occlusion",)


def test_subset_needs_its_list(roots):
    csv_root, _, _ = roots
    with pytest.raises(ValueError, match="pose45.*pose45_list"):
        build_dataset("ferplus", root=csv_root, split="test", subset="pose45")
    with pytest.raises(ValueError, match="unknown subset 'blur'"):
        build_dataset("ferplus", root=csv_root, split="test", subset="blur")
    with pytest.raises(ValueError, match=r"unknown option\(s\) pose_list for ferplus; valid: mode, cache_dir, occl"):
        build_dataset("ferplus", root=csv_root, split="test", pose_list="x")
