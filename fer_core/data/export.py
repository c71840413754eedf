"""Export SynthFACS in RAF-DB's published folder layout, so any RAF-DB pipeline can read it.

Layout written (as RAF-DB basic, plus SynthFACS's extras)::

    OUT/EmoLabel/list_patition_label.txt   "train_00001.jpg 5" (RAF codes 1-7; the file name's typo is RAF-DB's)
    OUT/Image/aligned/train_00001_aligned.jpg
    OUT/masks/train_00001_mask.png          ground-truth relevance mask (0/255)
    OUT/occlusion_list.txt                  "test_0003_aligned 3 4" (stem, 0-based RAF label, occluder id), as RAN
    OUT/pose_30_list.txt, pose_45_list.txt  "0/test_0004_aligned.jpg", as RAN
    OUT/synthfaces_meta.csv                 subject, pose, occluder, clean label, label distribution per image
    OUT/README.txt                          version and options that produced it
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from fer_core.labels import DATASET_ORDERS

RAF_SPLITS = ("train", "test")


def export_folder(name: str, out: str | Path, jpeg_quality: int = 95, **options) -> dict:
    """Render SynthFACS's train and test splits into RAF-DB's layout under ``out``.

    Returns:
        counts of images written per split.
    """
    if name != "synthfaces":
        raise ValueError(f"only 'synthfaces' can be exported (got {name!r})")
    from .cache import render_split
    from .synthfaces import OCCLUDERS, VERSION, SynthFaces

    if options.get("label_set", "basic7") != "basic7":
        raise ValueError("RAF-DB's layout has seven classes and no contempt: export with label_set=basic7")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder so nothing is overwritten")
    raf_order = DATASET_ORDERS["rafdb"]
    (out / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (out / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    labels_lines, occ_lines, pose30, pose45, meta_rows, counts = [], [], [], [], [], {}
    for split in RAF_SPLITS:
        ds = SynthFaces(split, **options)
        images, masks, _ = render_split(ds.cfg.to_dict(), split, len(ds))
        for i in range(len(ds)):
            stem = f"{split}_{i + 1:05d}" if split == "train" else f"{split}_{i + 1:04d}"
            meta = ds.meta(i)
            code = raf_order.index(ds.classes[meta.label]) + 1
            cv2.imwrite(str(out / "Image" / "aligned" / f"{stem}_aligned.jpg"), images[i][..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            cv2.imwrite(str(out / "masks" / f"{stem}_mask.png"), masks[i] * 255)
            labels_lines.append(f"{stem}.jpg {code}")
            if split == "test":
                if meta.spec.occluder != "none":
                    occ_lines.append(f"{stem}_aligned {code - 1} {OCCLUDERS.index(meta.spec.occluder)}")
                if abs(meta.spec.yaw) > 30:
                    pose30.append(f"0/{stem}_aligned.jpg")
                if abs(meta.spec.yaw) > 45:
                    pose45.append(f"0/{stem}_aligned.jpg")
            meta_rows.append([f"{stem}_aligned.jpg", split, meta.subject, f"{meta.spec.yaw:.2f}",
                              f"{meta.spec.pitch:.2f}", f"{meta.spec.roll:.2f}", meta.spec.occluder,
                              ds.classes[meta.clean_label], ds.classes[meta.label],
                              *[f"{p:.5f}" for p in meta.label_dist]])
        counts[split] = len(ds)
    (out / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(labels_lines) + "\n")
    (out / "occlusion_list.txt").write_text("\r\n".join(occ_lines) + "\r\n")
    (out / "pose_30_list.txt").write_text("\n".join(pose30) + "\n")
    (out / "pose_45_list.txt").write_text("\n".join(pose45) + "\n")
    with open(out / "synthfaces_meta.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "split", "subject", "yaw", "pitch", "roll", "occluder", "clean_label", "label",
                         *[f"p_{c}" for c in ds.classes]])
        writer.writerows(meta_rows)
    (out / "README.txt").write_text(
        f"SynthFACS {VERSION} exported in RAF-DB basic layout by FER Lab.\n"
        f"RAF labels: {', '.join(f'{k + 1}={c}' for k, c in enumerate(raf_order))}\n"
        f"options: {json.dumps(ds.cfg.to_dict(), sort_keys=True)}\n"
        f"images: {counts}; occlusion {len(occ_lines)}, pose>30 {len(pose30)}, pose>45 {len(pose45)}\n")
    return {**counts, "occlusion": len(occ_lines), "pose30": len(pose30), "pose45": len(pose45),
            "mean_mask_fraction": float(np.mean(masks))}
