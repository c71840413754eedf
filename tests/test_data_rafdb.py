"""RAF-DB and image-folder loaders on tiny fixtures written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.data import build_dataset, dataset_info, list_datasets
from fer_core.data import imagefolder as imagefolder_mod  # noqa: F401  (registers imagefolder, caer_s)
from fer_core.data import rafdb as rafdb_mod  # noqa: F401  (registers rafdb)
from fer_core.labels import CLASSES

# code (1..7) -> canonical name: surprise, fear, disgust, happiness, sadness, anger, neutral
RAF_LINES = [("train_00001.jpg", 5), ("train_00002.jpg", 4), ("train_00003.jpg", 1), ("train_00004.jpg", 7),
             ("train_00005.jpg", 2), ("train_00006.jpg", 3), ("train_00007.jpg", 6), ("train_00008.jpg", 4),
             ("train_00009.jpg", 4), ("train_00010.jpg", 1),
             ("test_0001.jpg", 1), ("test_0002.jpg", 7), ("test_0003.jpg", 6), ("test_0004.jpg", 4)]


def _jpeg(path, value, size=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path, quality=95)


@pytest.fixture
def raf_root(tmp_path):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "".join(f"{n} {c}\n" for n, c in RAF_LINES))
    for k, (n, _) in enumerate(RAF_LINES):
        _jpeg(root / "Image" / "aligned" / n.replace(".jpg", "_aligned.jpg"), 10 * k)
    lists = tmp_path / "lists"
    lists.mkdir()
    # CRLF, a duplicate, and an entry matching no image
    (lists / "occlusion.txt").write_bytes(b"test_0003_aligned 5 4\r\ntest_0001_aligned 0 1\r\n"
                                          b"test_0003_aligned 5 4\r\ntest_0999_aligned 2 2\r\n")
    (lists / "pose30.txt").write_text("0/test_0004_aligned.jpg\n1/test_0002_aligned.jpg\n")
    (lists / "pose45.txt").write_text("0/test_0004_aligned.jpg\n")
    return root, lists


def test_registered_with_descriptions():
    assert {"rafdb", "imagefolder", "caer_s"} <= set(list_datasets())
    assert "whdeng.cn/raf" in dataset_info("rafdb").description
    assert dataset_info("caer_s").needs_root is True


def test_rafdb_test_split_labels_and_items(raf_root):
    root, _ = raf_root
    ds = build_dataset("rafdb", root=root, split="test")
    assert len(ds) == 4 and ds.num_classes == 7 and ds.classes == CLASSES[:7]
    assert ds.image_size == 100 and ds.channels == 3 and ds.labels.dtype == np.int64
    assert [CLASSES[i] for i in ds.labels] == ["surprise", "neutral", "anger", "happy"]
    item = ds[1]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 100, 100)
    assert item["label"] == CLASSES.index("neutral") and item["index"] == 1
    assert abs(int(item["image"].float().mean()) - 110) <= 3  # the 12th fixture image, value 110
    assert ds.config["split"] == "test" and ds.subsets == ()
    with pytest.raises(IndexError):
        ds[4]


def test_rafdb_train_val_disjoint_deterministic(raf_root):
    root, _ = raf_root
    train = build_dataset("rafdb", root=root, split="train")
    val = build_dataset("rafdb", root=root, split="val")
    assert len(train) == 9 and len(val) == 1
    assert not set(train.paths) & set(val.paths)
    assert build_dataset("rafdb", root=root, split="val").paths == val.paths
    val3 = build_dataset("rafdb", root=root, split="val", val_fraction=0.3, seed=1)
    assert len(val3) == 3 and len(build_dataset("rafdb", root=root, split="train", val_fraction=0.3, seed=1)) == 7
    assert "no validation split" in " ".join(rafdb_mod.__doc__.split())


def test_rafdb_subsets_and_unmatched(raf_root):
    root, lists = raf_root
    opts = {"occlusion_list": lists / "occlusion.txt", "pose30_list": lists / "pose30.txt",
            "pose45_list": lists / "pose45.txt"}
    occ = build_dataset("rafdb", root=root, split="test", subset="occlusion", **opts)
    assert occ.subsets == ("occlusion", "pose30", "pose45")
    assert sorted(p.name for p in occ.paths) == ["test_0001_aligned.jpg", "test_0003_aligned.jpg"]
    assert occ.unmatched == ["test_0999"] and occ.duplicates == 1
    assert occ.subset == "occlusion" and occ.config["subset"] == "occlusion"
    p30 = build_dataset("rafdb", root=root, split="test", subset="pose30", **opts)
    assert [CLASSES[i] for i in p30.labels] == ["neutral", "happy"] and p30.unmatched == []
    p45 = build_dataset("rafdb", root=root, split="test", subset="pose45", **opts)
    assert len(p45) == 1 and p45[0]["label"] == CLASSES.index("happy")
    with pytest.raises(ValueError, match="pose45_list"):
        build_dataset("rafdb", root=root, split="test", subset="pose45")
    with pytest.raises(ValueError, match="unknown subset"):
        build_dataset("rafdb", root=root, split="test", subset="blur", **opts)


def test_rafdb_errors(raf_root, tmp_path):
    root, _ = raf_root
    with pytest.raises(FileNotFoundError, match=r"list_patition_label\.txt.*whdeng\.cn/raf/model1\.html"):
        build_dataset("rafdb", root=tmp_path / "nowhere", split="test")
    label_file = root / "EmoLabel" / "list_patition_label.txt"
    label_file.write_text("train_00001.jpg 5\ntest_0001.jpg 9\n")
    with pytest.raises(ValueError, match=r"list_patition_label\.txt line 2"):
        build_dataset("rafdb", root=root, split="test")
    label_file.write_text("".join(f"{n} {c}\n" for n, c in RAF_LINES))
    (root / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    (root / "Image" / "aligned" / "test_0004_aligned.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 image\(s\).*test_0002_aligned\.jpg, test_0004_aligned\.jpg"):
        build_dataset("rafdb", root=root, split="test")
    with pytest.raises(ValueError, match="unknown option"):
        build_dataset("rafdb", root=root, split="train", colour=True)
    with pytest.raises(ValueError, match="reads files from disk"):
        build_dataset("rafdb", split="test")


def _folder_tree(root, splits=("train", "test"), classes=("Angry", "Happy", "Surprise", "Neutral"), n=3):
    for split in splits:
        for c in classes:
            for k in range(n):
                _jpeg(root / split / c / f"{k}.jpg", 40 * k, size=64)


def test_imagefolder_and_caer_s(tmp_path):
    root = tmp_path / "caer"
    _folder_tree(root)
    test = build_dataset("imagefolder", root=root, split="test")
    assert len(test) == 12 and test.image_size == 64 and test.classes == CLASSES[:7]
    assert sorted({CLASSES[i] for i in test.labels}) == ["anger", "happy", "neutral", "surprise"]
    item = test[0]
    assert item["image"].dtype == torch.uint8 and tuple(item["image"].shape) == (3, 64, 64)
    assert item["label"] == CLASSES.index("anger")
    with pytest.raises(FileNotFoundError, match="val_fraction"):
        build_dataset("imagefolder", root=root, split="val")
    tr = build_dataset("imagefolder", root=root, split="train", val_fraction=0.25)
    va = build_dataset("imagefolder", root=root, split="val", val_fraction=0.25)
    assert len(tr) == 9 and len(va) == 3 and not set(tr.paths) & set(va.paths)
    caer_tr = build_dataset("caer_s", root=root, split="train")
    caer_va = build_dataset("caer_s", root=root, split="val")
    assert caer_tr.name == "caer_s" and len(caer_va) == 1 and len(caer_tr) == 11
    assert "CAER" in dataset_info("caer_s").description


def test_imagefolder_label_map_contempt_and_unknown(tmp_path):
    root = tmp_path / "tree"
    _folder_tree(root, splits=("train", "val"), classes=("Contempt", "calm"), n=2)
    with pytest.raises(ValueError, match=r"calm.*valid names.*angry"):
        build_dataset("imagefolder", root=root, split="train")
    ds = build_dataset("imagefolder", root=root, split="val", label_map={"Contempt": "contempt", "calm": "neutral"})
    assert ds.classes == CLASSES and sorted(ds.labels.tolist()) == [0, 0, 7, 7]
    with pytest.raises(ValueError, match="not a canonical class"):
        build_dataset("imagefolder", root=root, split="val", label_map={"calm": "relaxed"})
    with pytest.raises(ValueError, match="not both"):
        build_dataset("imagefolder", root=root, split="train", val_fraction=0.5)


def test_config_json_and_materialize(raf_root):
    import json

    from fer_core.data import materialize

    root, lists = raf_root
    ds = build_dataset("rafdb", root=root, split="test", subset="pose30", pose30_list=lists / "pose30.txt")
    cfg = json.loads(json.dumps(ds.config))
    assert cfg["name"] == "rafdb" and cfg["pose30_list"].endswith("pose30.txt") and cfg["subset"] == "pose30"
    images, labels = materialize(ds)
    assert images.shape == (2, 3, 100, 100) and images.dtype == torch.uint8
    assert labels.tolist() == ds.labels.tolist()


def test_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "mixed"
    _jpeg(root / "train" / "Happy" / "a.jpg", 50, size=64)
    _jpeg(root / "train" / "Happy" / "b.jpg", 90, size=80)
    two = imagefolder_mod.ImageFolderFaces(root, "train")  # both images
    with pytest.raises(ValueError, match=r"b\.jpg is 80x80 but the first image .* is 64x64: give the option"):
        two[1]
    sized = imagefolder_mod.ImageFolderFaces(root, "train", image_size=48)
    assert sized.image_size == 48 and sized.config["image_size"] == 48
    assert [tuple(sized[i]["image"].shape) for i in range(2)] == [(3, 48, 48), (3, 48, 48)]
    assert abs(float(sized[1]["image"].float().mean()) - 90) <= 3  # resized, not re-coloured
    with pytest.raises(ValueError, match="image_size must be an integer"):
        imagefolder_mod.ImageFolderFaces(root, "train", image_size=3)


def test_fer_data_folder_and_subset_lists_found_in_root(raf_root, tmp_path, monkeypatch):
    from fer_core.data import configured_datasets, resolve_root

    root, lists = raf_root
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FER_DATA", str(home))
    assert configured_datasets() == {} and resolve_root("rafdb") is None
    with pytest.raises(ValueError, match=r"put it in .*home.rafdb"):
        build_dataset("rafdb", split="test")
    (home / "rafdb").symlink_to(root, target_is_directory=True)
    assert configured_datasets() == {"rafdb": home / "rafdb"}
    assert resolve_root("synthfaces") is None and resolve_root("rafdb", "/x") == Path("/x")
    assert len(build_dataset("rafdb", split="test")) == 4  # no root: $FER_DATA/rafdb
    # RAN's lists in <root>/subsets/ are used when no option names them
    (root / "subsets").mkdir()
    (root / "subsets" / "pose30.txt").write_bytes((lists / "pose30.txt").read_bytes())
    ds = build_dataset("rafdb", split="test")
    assert ds.subsets == ("pose30",)
    assert len(build_dataset("rafdb", split="test", subset="pose30")) == 2


def test_data_info_counts_and_reports(raf_root, capsys):
    from fer_core.cli import main
    from fer_core.data.browse import summary

    root, lists = raf_root
    info = summary("rafdb", root=root, occlusion_list=str(lists / "occlusion.txt"))
    assert info["classes"] == list(CLASSES[:7]) and set(info["splits"]) == {"train", "val", "test"}
    assert sum(info["splits"][s]["n"] for s in ("train", "val")) == 10 and info["splits"]["test"]["n"] == 4
    test_counts = info["splits"]["test"]["counts"]
    assert test_counts["surprise"] == test_counts["neutral"] == test_counts["anger"] == test_counts["happy"] == 1
    occ = info["subsets"]["occlusion"]
    assert occ["n"] == 2 and occ["unmatched"] == ["test_0999"] and occ["duplicates"] == 1
    occlusion = f"occlusion_list={lists / 'occlusion.txt'}"
    assert main(["data", "info", "rafdb", "--root", str(root), "--set", occlusion]) == 0
    out = capsys.readouterr().out
    assert "test/occlusion" in out and "list entries matching no image: 1 (e.g. test_0999)" in out
    assert "repeated list entries: 1" in out
    assert main(["data", "info", "rafdb", "--root", str(root), "--json"]) == 0
    assert '"subsets": {}' in capsys.readouterr().out


def test_subset_lists_found_by_published_names_in_order(raf_root):
    """Option, then <root>/subsets/<subset>.txt, then RAN's published name (subsets/, then root), then the names
    earlier exports wrote: the first file found is the list."""
    root, lists = raf_root
    one, two = "0/test_0004_aligned.jpg\n", "0/test_0004_aligned.jpg\n1/test_0002_aligned.jpg\n"
    (root / "subsets").mkdir()
    (root / "subsets" / "pose_30_list.txt").write_text(two + "0/test_0001_aligned.jpg\n")  # an earlier export's
    assert len(build_dataset("rafdb", root=root, split="test", subset="pose30")) == 3
    (root / "val_raf_db_list.txt").write_text(two)  # RAN's name for pose > 30, even in the root, comes before it
    assert len(build_dataset("rafdb", root=root, split="test", subset="pose30")) == 2
    (root / "subsets" / "val_raf_db_list.txt").write_text(one)  # RAN's name in subsets/ comes before the root
    ds = build_dataset("rafdb", root=root, split="test", subset="pose30")
    assert len(ds) == 1 and ds.config["pose30_list"] == str(root / "subsets" / "val_raf_db_list.txt")
    (root / "subsets" / "pose30.txt").write_text(two)  # FER Lab's own name comes first
    assert len(build_dataset("rafdb", root=root, split="test", subset="pose30")) == 2
    opt = build_dataset("rafdb", root=root, split="test", subset="pose30", pose30_list=lists / "pose45.txt")
    assert len(opt) == 1  # an option overrides every file
    assert build_dataset("rafdb", root=root, split="test").subsets == ("pose30",)
    (root / "rafdb_occlusion_list.txt").write_bytes((lists / "occlusion.txt").read_bytes())
    (root / "val_raf_db_list_45.txt").write_text(one)
    assert build_dataset("rafdb", root=root, split="test").subsets == ("occlusion", "pose30", "pose45")


def test_synthfaces_export_round_trips_through_the_rafdb_loader(tmp_path, monkeypatch, capsys):
    """`data export synthfaces` writes RAN's list names, so the rafdb loader and `data info` find the challenge
    subsets of the export with no option, and they are SynthFACS's own test subsets: same faces, same labels."""
    from fer_core.cli import main
    from fer_core.data.subsets import RAN_LIST_NAMES
    from fer_core.data.synthfaces import SynthFaces

    options = {"train_size": 12, "test_size": 80, "image_size": 32}
    out = tmp_path / "rafdb"
    assert main(["data", "export", "synthfaces", "--out", str(out),
                 *(a for k, v in options.items() for a in ("--set", f"{k}={v}"))]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.glob("*.txt")) == sorted([*RAN_LIST_NAMES["rafdb"].values(), "README.txt"])
    assert b"\r\n" in (out / "rafdb_occlusion_list.txt").read_bytes()  # CRLF, as RAN's RAF-DB occlusion list
    assert build_dataset("rafdb", root=out, split="test").subsets == ("occlusion", "pose30", "pose45")
    for subset in ("all", "occlusion", "pose30", "pose45"):
        raf = build_dataset("rafdb", root=out, split="test", subset=subset)
        synth = SynthFaces("test", subset=subset, **options)
        assert len(raf) == len(synth) > 0, subset
        # test_0001 is SynthFACS test face 0, so the stems give the faces' indices in the split
        assert [int(p.name.split("_")[1]) - 1 for p in raf.paths] == list(synth.split_indices), subset
        assert [raf.classes[k] for k in raf.labels] == [synth.classes[k] for k in synth.labels], subset
        assert raf.unmatched == [] and raf.duplicates == 0
    monkeypatch.setenv("FER_DATA", str(tmp_path))
    assert main(["data", "info", "rafdb"]) == 0
    text = capsys.readouterr().out
    assert "test/occlusion" in text and "test/pose30" in text and "test/pose45" in text
    assert "no challenge subsets" not in text
