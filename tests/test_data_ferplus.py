"""FERPlus beyond the CSV release: the image-folder release and RAN's challenge subsets, on fixtures in the
published formats (the CSV-release fixture is shared with test_data_fer2013.py)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
from test_data_fer2013 import USAGE, VOTES, _pixels, _row, _write

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
    # RAN's lists under the names RAN published them are found in the data set's folder without options
    (root / "subsets").mkdir(exist_ok=True)
    (root / "subsets" / "jianfei_occlusion_list.txt").write_bytes((lists / "occlusion.txt").read_bytes())
    (root / "pose_30_ferplus_list.txt").write_bytes((lists / "pose30.txt").read_bytes())
    found = build_dataset("ferplus", root=root, split="test", subset="occlusion")
    assert found.subsets == ("occlusion", "pose30") and found.image_names == occ.image_names


def test_subset_needs_its_list(roots):
    csv_root, _, _ = roots
    with pytest.raises(ValueError, match="pose45.*pose45_list"):
        build_dataset("ferplus", root=csv_root, split="test", subset="pose45")
    with pytest.raises(ValueError, match="unknown subset 'blur'"):
        build_dataset("ferplus", root=csv_root, split="test", subset="blur")
    with pytest.raises(ValueError, match=r"unknown option\(s\) pose_list for ferplus; valid: mode, cache_dir, occl"):
        build_dataset("ferplus", root=csv_root, split="test", pose_list="x")


# The published majority rule at its boundaries (Barsoum et al. 2016; FERPlus's ferplus.py): votes of 1 are zeroed,
# the top class is kept only with strictly more than half of the remaining votes (so exactly half, and every tie,
# is dropped), and a top class of unknown or NF drops the row. (votes, label kept or None, drop reason)
# neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF
BOUNDARY = [
    ([3, 5, 2, 0, 0, 0, 0, 0, 0, 0], None, "no_majority"),        # exactly half: 5 of 10
    ([4, 6, 0, 0, 0, 0, 0, 0, 0, 0], "happy", ""),                 # just over half: 6 of 10
    ([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], None, "no_majority"),        # a tie at half
    ([0, 0, 4, 4, 2, 0, 0, 0, 0, 0], None, "no_majority"),        # a tie below half
    ([4, 5, 0, 1, 0, 0, 0, 0, 0, 0], "happy", ""),                 # 5 of 10 raw, but 5 of 9 once the 1 is zeroed
    ([2, 4, 2, 1, 1, 0, 0, 0, 0, 0], None, "no_majority"),        # exactly half of the 8 votes left
    ([0, 0, 0, 0, 0, 0, 0, 6, 0, 4], "contempt", ""),              # just over half against NF
    ([0, 4, 0, 0, 0, 0, 0, 0, 6, 0], None, "unknown_or_nf"),      # unknown over half
    ([0, 3, 0, 2, 0, 0, 0, 0, 0, 5], None, "no_majority"),        # NF exactly half: no majority (not unknown/NF)
    ([0, 5, 0, 0, 0, 0, 0, 0, 5, 0], None, "no_majority"),        # an emotion tied with unknown at half
    ([0, 0, 0, 0, 0, 0, 6, 0, 0, 5], "fear", ""),                  # 11 taggers: 6 of 11 is over half
    ([1, 1, 1, 1, 1, 1, 1, 1, 1, 1], None, "no_majority"),        # nothing left once single votes are zeroed
]


def _write_boundary_release(root, layout: str):
    """BOUNDARY as training rows of the CSV release (``fer2013.csv`` + ``fer2013new.csv``) or of the image-folder
    release (``FER2013Train/label.csv`` + PNGs)."""
    names = [f"fer{i:07d}.png" for i in range(len(BOUNDARY))]
    if layout == "csv":
        root.mkdir()
        (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(
            _row(i, emotion=0, usage="Training") for i in range(len(BOUNDARY))))
        header = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        (root / "fer2013new.csv").write_text(header + "".join(
            f"Training,{name},{','.join(map(str, votes))}\n" for name, (votes, _, _) in zip(names, BOUNDARY,
                                                                                             strict=True)))
    else:
        folder = root / "FER2013Train"
        folder.mkdir(parents=True)
        with open(folder / "label.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            for i, (name, (votes, _, _)) in enumerate(zip(names, BOUNDARY, strict=True)):
                cv2.imwrite(str(folder / name), _pixels(i).reshape(48, 48))
                writer.writerow([name, "(0, 0, 48, 48)", *votes])
    return names


@pytest.mark.parametrize("layout", ["csv", "folders"])
def test_majority_rule_keeps_strictly_more_than_half_and_drops_ties(tmp_path, monkeypatch, layout):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path / "cache"))
    names = _write_boundary_release(tmp_path / layout, layout)
    ds = build_dataset("ferplus", root=tmp_path / layout, split="train")
    kept = [(name, label) for name, (_, label, _) in zip(names, BOUNDARY, strict=True) if label is not None]
    assert list(zip(ds.image_names, [ds.classes[k] for k in ds.labels], strict=True)) == kept
    reasons = [reason for _, _, reason in BOUNDARY]
    assert ds.dropped == {"empty_name": 0, "no_majority": reasons.count("no_majority"),
                          "unknown_or_nf": reasons.count("unknown_or_nf")}
    # the soft label stays the raw vote vector over the 8 emotions, single votes included
    at = ds.image_names.index(names[4])
    assert np.allclose(ds.label_dists[at][[ds.classes.index(c) for c in ("neutral", "happy", "sad")]],
                       [0.4, 0.5, 0.1])
