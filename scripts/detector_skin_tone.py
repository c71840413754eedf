"""How often OpenCV's Haar cascades find a face, by skin tone: every SynthFACS test subject (680-829) with four
expressions (neutral, happy, surprise, fear) at yaw 0 and 20 degrees, drawn 216 px tall into a 640x480 frame, found
with ``fer_core.face.detect_faces(frame, max_side=320, align=False)`` as video prediction does. Subjects are split
into quartiles of their skin's luma (BT.601); the table is the share of faces found per quartile and expression.

    python scripts/detector_skin_tone.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_core.data.synthfaces.dataset import SUBJECT_RANGES, _identity, compose_face  # noqa: E402
from fer_core.face import detect_faces  # noqa: E402

EXPRESSIONS = {"neutral": {}, "happy": {"6": 0.8, "12": 0.9, "25": 0.5},
               "surprise": {"1": 0.9, "2": 0.9, "5": 0.8, "26": 0.9},
               "fear": {"1": 0.8, "4": 0.6, "20": 0.7, "26": 0.6}}


def main() -> None:
    rows = []
    for subject in range(*SUBJECT_RANGES["test"]):
        r, g, b = _identity(0, subject).skin
        luma = 0.299 * r + 0.587 * g + 0.114 * b
        for name, aus in EXPRESSIONS.items():
            for yaw in (0, 20):
                face = compose_face(aus, yaw=yaw, subject=subject, image_size=216).image
                frame = np.full((480, 640, 3), (120, 150, 100), np.uint8)
                frame[130:346, 200:416] = face
                rows.append((luma, name, bool(detect_faces(frame, max_side=320, align=False))))
    df = pd.DataFrame(rows, columns=["luma", "expression", "found"])
    df["skin"] = pd.qcut(df["luma"], 4, labels=["darkest quarter", "second", "third", "lightest quarter"])
    table = df.pivot_table(index="skin", columns="expression", values="found", aggfunc="mean", observed=True)
    table["all"] = df.groupby("skin", observed=True)["found"].mean()
    table.insert(0, "mean luma", df.groupby("skin", observed=True)["luma"].mean().round(0))
    print(f"faces found by the Haar cascades, {len(df)} faces of {df['luma'].nunique()} subjects:")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
