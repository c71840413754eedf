"""Export SynthFACS in RAF-DB's published folder layout, so any RAF-DB pipeline can read it.

Layout written (as RAF-DB basic, plus SynthFACS's extras)::

    OUT/EmoLabel/list_patition_label.txt   "train_00001.jpg 5" (RAF codes 1-7; the file name's typo is RAF-DB's)
    OUT/Image/aligned/train_00001_aligned.jpg
    OUT/masks/train_00001_mask.png          ground-truth relevance mask (0/255)
    OUT/rafdb_occlusion_list.txt            "test_0003_aligned 3 4" (stem, 0-based RAF label, occluder id), CRLF
    OUT/val_raf_db_list.txt                 pose > 30 degrees: "3/test_0004_aligned.jpg" (0-based RAF label/name)
    OUT/val_raf_db_list_45.txt              pose > 45 degrees, the same format
    OUT/synthfaces_meta.csv                 subject, pose, occluder, clean label, label distribution per image
    OUT/README.txt                          version and options that produced it

The three challenge-subset lists have the names and line formats of RAN's published RAF-DB lists
(``fer_core.data.subsets.RAN_LIST_NAMES``), so a RAN pipeline reads them as they are, and the ``rafdb`` loader finds
them in the export's root without options; they hold exactly SynthFACS's own ``occlusion``, ``pose30`` and ``pose45``
test subsets (``fer_core.data.synthfaces.subset_rule``).
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
    from .subsets import RAN_LIST_NAMES
    from .synthfaces import OCCLUDERS, VERSION, SynthFaces, subset_rule

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
                if subset_rule("occlusion", meta):
                    occ_lines.append(f"{stem}_aligned {code - 1} {OCCLUDERS.index(meta.spec.occluder)}")
                if subset_rule("pose30", meta):
                    pose30.append(f"{code - 1}/{stem}_aligned.jpg")
                if subset_rule("pose45", meta):
                    pose45.append(f"{code - 1}/{stem}_aligned.jpg")
            meta_rows.append([f"{stem}_aligned.jpg", split, meta.subject, f"{meta.spec.yaw:.2f}",
                              f"{meta.spec.pitch:.2f}", f"{meta.spec.roll:.2f}", meta.spec.occluder,
                              ds.classes[meta.clean_label], ds.classes[meta.label],
                              *[f"{p:.5f}" for p in meta.label_dist]])
        counts[split] = len(ds)
    (out / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(labels_lines) + "\n")
    ran = RAN_LIST_NAMES["rafdb"]
    (out / ran["occlusion"]).write_bytes("".join(f"{line}\r\n" for line in occ_lines).encode())  # CRLF, as RAN's
    (out / ran["pose30"]).write_text("".join(f"{line}\n" for line in pose30))
    (out / ran["pose45"]).write_text("".join(f"{line}\n" for line in pose45))
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
