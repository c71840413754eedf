"""SynthFACS: determinism, splits, subsets, labels, masks, noise, export and contact sheet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fer_core.data import build_dataset, dataset_info, list_datasets, materialize
from fer_core.data.synthfaces import SUBSETS, VERSION, SynthFaces, subset_rule
from fer_core.data.synthfaces.aus import PROTOTYPES, label_distribution, prototype_vector
from fer_core.data.synthfaces.render import face_region
from fer_core.labels import CLASSES

SMALL = {"train_size": 300, "val_size": 60, "test_size": 300, "image_size": 64}


def test_registry_lists_synthfaces_and_rejects_unknown_names():
    assert "synthfaces" in list_datasets()
    assert dataset_info("synthfaces").needs_root is False
    with pytest.raises(ValueError, match="valid: .*synthfaces"):
        build_dataset("synthfacez")
    with pytest.raises(ValueError, match="unknown synthfaces option.*imgsize.*valid"):
        build_dataset("synthfaces", imgsize=64)
    with pytest.raises(ValueError, match="noise_rate"):
        build_dataset("synthfaces", noise_rate=1.5)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build_dataset("synthfaces", split="dev")


def test_sample_is_a_pure_function_of_config_seed_and_index():
    a = build_dataset("synthfaces", split="train", **SMALL)
    b = build_dataset("synthfaces", split="train", **{**SMALL, "train_size": 20})  # size does not change sample i
    for i in (0, 7, 19):
        xa, xb = a[i], b[i]
        assert torch.equal(xa["image"], xb["image"])
        assert torch.equal(xa["mask"], xb["mask"])
        assert xa["label"] == xb["label"]
    c = build_dataset("synthfaces", split="train", **{**SMALL, "seed": 1})
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert VERSION.count(".") == 1


def test_sample_fields_follow_the_contract():
    ds = build_dataset("synthfaces", split="test", **SMALL)
    item = ds[3]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 64, 64)
    assert item["mask"].shape == (64, 64) and set(item["mask"].unique().tolist()) <= {0, 1}
    assert item["index"] == 3 and 0 <= item["label"] < ds.num_classes
    assert item["label_dist"].shape == (7,) and item["pose"].shape == (3,)
    assert ds.classes == CLASSES[:7]
    assert build_dataset("synthfaces", label_set="basic8", **SMALL).num_classes == 8


def test_splits_are_subject_disjoint():
    subjects = {}
    for split in ("train", "val", "test"):
        ds = build_dataset("synthfaces", split=split, **SMALL)
        subjects[split] = {ds.meta(i).subject for i in range(len(ds))}
    assert not subjects["train"] & subjects["val"]
    assert not subjects["train"] & subjects["test"]
    assert not subjects["val"] & subjects["test"]
    assert len(subjects["train"]) > 100  # many people, not a handful


def test_subsets_are_selected_by_their_rule():
    full = build_dataset("synthfaces", split="test", **SMALL)
    for name in SUBSETS:
        sub = build_dataset("synthfaces", split="test", subset=name, **SMALL)
        expected = [i for i in range(len(full)) if subset_rule(name, full.meta(i))]
        assert list(sub.split_indices) == expected
        assert 0 < len(sub) < len(full), name
    pose45 = build_dataset("synthfaces", split="test", subset="pose45", **SMALL)
    assert all(abs(pose45.meta(i).spec.yaw) > 45 for i in range(len(pose45)))
    occ = build_dataset("synthfaces", split="test", subset="occlusion", **SMALL)
    assert all(occ[i]["occluder"] != "none" for i in range(0, len(occ), 10))
    with pytest.raises(ValueError, match="unknown SynthFACS subset"):
        build_dataset("synthfaces", split="test", subset="pose90", **SMALL)


def test_label_distributions_are_valid_and_agree_with_prototypes():
    ds = build_dataset("synthfaces", split="test", **SMALL)
    dists = np.stack([ds.meta(i).label_dist for i in range(len(ds))])
    assert np.all(dists >= 0) and np.allclose(dists.sum(1), 1, atol=1e-5)
    assert (dists.argmax(1) == ds.labels).mean() > 0.85  # soft labels mostly agree with hard ones...
    assert (dists.max(1) < 0.9).mean() > 0.05  # ...but not all are one-hot
    classes = tuple(PROTOTYPES)
    for k, cls in enumerate(classes):  # each full prototype is its own most likely class
        assert label_distribution(prototype_vector(cls), classes).argmax() == k, cls


def test_class_balance_option():
    imb = build_dataset("synthfaces", split="train", **SMALL).labels
    bal = build_dataset("synthfaces", split="train", balance="balanced", **SMALL).labels
    assert np.bincount(imb, minlength=7).max() > 3 * np.bincount(imb, minlength=7).min()
    assert np.bincount(bal, minlength=7).min() > 20


@pytest.mark.parametrize("mode", ["uniform", "confusable"])
def test_label_noise_rate_is_honoured_and_clean_label_kept(mode):
    opts = {**SMALL, "train_size": 3000}
    clean = build_dataset("synthfaces", split="train", **opts)
    noisy = build_dataset("synthfaces", split="train", noise_rate=0.3, noise_mode=mode, **opts)
    flipped = noisy.labels != noisy.clean_labels
    assert abs(flipped.mean() - 0.3) < 0.03
    assert np.array_equal(noisy.clean_labels, clean.labels)  # clean_label is the truth
    assert np.array_equal(noisy.clean_labels, clean.clean_labels)
    test = build_dataset("synthfaces", split="test", noise_rate=0.3, **SMALL)
    assert np.array_equal(test.labels, test.clean_labels)  # evaluation labels stay clean
    if mode == "confusable":  # fear is only ever flipped to surprise
        fear = noisy.classes.index("fear")
        targets = set(noisy.labels[flipped & (noisy.clean_labels == fear)].tolist())
        assert targets == {noisy.classes.index("surprise")}


def test_masks_are_non_empty_and_inside_the_face():
    import cv2

    ds = build_dataset("synthfaces", split="test", image_size=96, test_size=60)
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"].numpy().astype(bool)
        assert mask.sum() > 0.002 * mask.size or item["occluder"] != "none", i
        face = cv2.dilate(face_region(ds.meta(i).spec, 96), np.ones((5, 5), np.uint8)).astype(bool)
        if mask.any():  # inside the head's silhouette, allowing the mask's own 2-pixel dilation
            assert (mask & face).sum() / mask.sum() > 0.95, i


def test_mask_marks_the_region_that_moves():
    from dataclasses import replace

    from fer_core.data.synthfaces import render
    from fer_core.data.synthfaces.aus import AU_INDEX

    ds = SynthFaces("test", image_size=96, test_size=50, occlusion_rate=0.0)
    spec = ds.meta(0).spec
    spec = replace(spec, yaw=0.0, pitch=0.0, roll=0.0, identity=replace(spec.identity, glasses=False))
    centre = {}
    for au in ("4", "12"):
        vec = np.zeros_like(spec.au)
        vec[AU_INDEX[au]] = 1.0
        _, mask, _ = render(replace(spec, au=vec), 96)
        centre[au] = np.nonzero(mask)[0].mean() / 96
    # brow lowerer marks the brows, lip corner puller the mouth: far apart vertically
    assert centre["4"] < 0.45 < 0.6 < centre["12"], centre


def test_materialize_caches_to_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path))
    ds = build_dataset("synthfaces", split="val", **SMALL)
    images, labels = materialize(ds)
    assert images.shape == (60, 3, 64, 64) and images.dtype == torch.uint8
    assert torch.equal(images[5], ds[5]["image"]) and labels[5] == ds[5]["label"]
    files = list((tmp_path / "synthfaces").glob("val-*/images.npy"))
    assert len(files) == 1 and not list((tmp_path / "synthfaces").glob(".*"))  # no temporary folder left
    sub = build_dataset("synthfaces", split="val", subset="pose30", **SMALL)
    sub_images, _ = materialize(sub)
    assert torch.equal(sub_images[0], images[int(sub.split_indices[0])])
    small, _ = materialize(build_dataset("synthfaces", split="val", **{**SMALL, "image_size": 32}))
    assert small.shape == (60, 3, 32, 32)  # another image size is another cache file
    assert len(list((tmp_path / "synthfaces").glob("val-*/images.npy"))) == 2
    files[0].write_bytes(b"corrupt")  # a broken cache is rendered again, not trusted
    again, _ = materialize(build_dataset("synthfaces", split="val", **SMALL))
    assert torch.equal(again, images)


def test_export_writes_rafdb_layout(tmp_path):
    from fer_core.data.export import export_folder
    from fer_core.labels import DATASET_ORDERS

    out = tmp_path / "raf"
    counts = export_folder("synthfaces", out, train_size=12, test_size=30, image_size=48)
    lines = (out / "EmoLabel" / "list_patition_label.txt").read_text().splitlines()
    assert len(lines) == 42 and lines[0].startswith("train_00001.jpg ") and lines[12].startswith("test_0001.jpg ")
    ds = SynthFaces("test", train_size=12, test_size=30, image_size=48)
    name, code = lines[12].split()
    assert DATASET_ORDERS["rafdb"][int(code) - 1] == ds.classes[ds.labels[0]]
    assert (out / "Image" / "aligned" / "test_0001_aligned.jpg").exists()
    assert (out / "masks" / "train_00012_mask.png").exists()
    assert counts["occlusion"] == (out / "rafdb_occlusion_list.txt").read_bytes().count(b"\r\n")  # CRLF, as RAN
    with pytest.raises(FileExistsError):
        export_folder("synthfaces", out, train_size=2, test_size=2)
    with pytest.raises(ValueError, match="contempt"):
        export_folder("synthfaces", tmp_path / "b", label_set="basic8")


def test_contact_sheet_has_a_row_per_class_occluder_and_pose(tmp_path):
    import cv2

    from fer_core.data.sheet import contact_sheet, synthfaces_rows

    rows = synthfaces_rows(per_row=3, image_size=48)
    titles = [t for t, _ in rows]
    assert titles[:8] == list(CLASSES)
    assert "occ: sunglasses" in titles and "yaw 45-60" in titles
    assert all(len(idx) == 3 for _, idx in rows)
    path = contact_sheet("synthfaces", tmp_path / "sheet.png", per_row=3, image_size=48)
    img = cv2.imread(str(path))
    assert img.shape[0] >= len(rows) * 48 and img.std() > 20
