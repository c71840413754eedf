"""SynthFACS clips: video files that decode to their label files, ground truth that says what the faces show, two
faces that never touch and swap sizes, determinism, every error, the CLI, and OpenCV's detector on the frames."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_core.cli import main
from fer_core.data.synthfaces import ClipInfo, clip_frames, read_labels, write_clip
from fer_core.data.synthfaces.clip import _canvas, _gap, label_columns
from fer_core.labels import label_set
from fer_core.videoio import WRITERS

TINY = {"seconds": 2.0, "fps": 10.0, "width": 320, "height": 240}


def _decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    return frames


def _iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_written_video_decodes_to_as_many_frames_as_the_labels_have(tmp_path, suffix):
    calls = []
    info = write_clip(tmp_path / f"clip{suffix}", progress=lambda done, total: calls.append((done, total)), **TINY)
    assert isinstance(info, ClipInfo)
    assert info.path == tmp_path / f"clip{suffix}" and info.labels_path == tmp_path / "clip.labels.csv"
    assert (info.frames, info.fps, info.width, info.height, info.faces) == (20, 10.0, 320, 240, 1)
    assert info.classes == label_set("basic7")
    assert calls == [(i, 20) for i in range(1, 21)]
    frames = _decode(info.path)
    df = read_labels(info.labels_path)
    assert len(frames) == info.frames == df["frame"].nunique() == len(df)
    assert {f.shape for f in frames} == {(240, 320, 3)}
    assert df["frame"].tolist() == list(range(20))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_labels_round_trip_and_equal_what_clip_frames_yields(tmp_path):
    options = {**TINY, "faces": 2, "seed": 3, "label_set": "basic8"}
    info = write_clip(tmp_path / "two.avi", labels=tmp_path / "truth" / "two.csv", **options)
    df = read_labels(info.labels_path)
    assert list(df.columns) == label_columns(label_set("basic8"))
    assert df.attrs["classes"] == label_set("basic8")
    rows = pd.DataFrame([r for _, truth in clip_frames(**options) for r in truth])
    pd.testing.assert_frame_equal(df, rows, check_dtype=False, check_exact=False, atol=1e-6)
    assert df["face_id"].tolist() == [1, 2] * 20
    assert df.groupby("face_id")["subject"].nunique().tolist() == [1, 1]
    assert df["subject"].nunique() == 2 and df["subject"].between(680, 829).all()
    assert np.allclose(df["time_s"], df["frame"] / 10.0)
    probs = df[[f"prob_{c}" for c in label_set("basic8")]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert (np.array(label_set("basic8"))[probs.argmax(1)] == df["label"]).all()


def test_the_label_is_the_expression_at_the_apex_and_neutral_in_the_holds():
    apex, holds, episodes = [], [], set()
    for seed in range(4):
        for faces in (1, 2):
            for _, rows in clip_frames(faces=faces, seconds=16.0, fps=4.0, width=128, height=96, seed=seed):
                for r in rows:
                    if r["intensity"] >= 0.8:  # the apex holds (apexes are drawn in [0.8, 1])
                        apex.append(r["label"] == r["expression"])
                        episodes.add(r["expression"])
                    elif r["intensity"] == 0.0:
                        assert r["expression"] == "neutral"
                        holds.append(r["label"] == "neutral")
    assert episodes == set(label_set("basic7")) - {"neutral"}
    assert len(apex) > 200 and len(holds) > 200
    # measured: 1.0 and 1.0 (seeds 0-5, basic7 and basic8); the generator's label of a full expression is its class
    assert np.mean(apex) >= 0.95, f"apex frames labelled as their expression: {np.mean(apex):.3f}"
    assert np.mean(holds) >= 0.95, f"neutral holds labelled neutral: {np.mean(holds):.3f}"


def test_episodes_follow_the_ck_plus_shape_and_cycle_the_given_expressions():
    rows = [truth[0] for _, truth in clip_frames(seconds=8.0, fps=10.0, width=128, height=96, seed=1,
                                                  expressions=["happy", "surprise"])]
    intensity = np.array([r["intensity"] for r in rows])
    expression = [r["expression"] for r in rows]
    runs = [expression[0]] + [e for a, e in zip(expression, expression[1:], strict=False) if e != a]
    assert runs[0] == "neutral" and runs[-1] == "neutral"  # starts and ends at rest
    assert [e for e in runs if e != "neutral"] == ["happy", "surprise", "happy"]  # three episodes in 8 s, cycled
    assert np.abs(np.diff(intensity)).max() < 0.5  # smooth: no jump from rest to apex
    assert intensity.max() <= 1.0 and (intensity >= 0.8).sum() >= 3 * 5  # an apex hold per episode (~0.8 s each)


def test_boxes_are_inside_the_frame_on_the_face_and_the_rest_is_the_canvas(tmp_path):
    options = {**TINY, "seed": 5}
    canvas = _canvas(320, 240, 5).astype(int)
    info = write_clip(tmp_path / "c.mp4", **options)
    decoded = _decode(info.path)
    for k, (frame, rows) in enumerate(clip_frames(**options)):
        (r,) = rows
        x, y, w, h = r["x"], r["y"], r["w"], r["h"]
        assert 0 <= x and 0 <= y and x + w <= 320 and y + h <= 240 and w > 20 and h > 20
        inner = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
        for image in (frame, decoded[k]):
            changed = (np.abs(image.astype(int)[inner] - canvas[inner]).max(-1) > 25).mean()
            assert changed > 0.8, f"frame {k}: the box's centre is mostly canvas ({changed:.2f} changed)"
        # far from the box (beyond the hair and shoulders) the frame is the canvas, exactly before encoding
        far = np.ones((240, 320), bool)
        far[max(0, y - h):y + 2 * h, max(0, x - w):x + 2 * w] = False
        assert np.array_equal(frame[far], canvas[far].astype(np.uint8))
        assert np.abs(decoded[k].astype(int)[far] - canvas[far]).mean() < 4


def test_two_faces_never_touch_and_swap_which_is_larger():
    for seed in range(5):
        areas, gaps = [], []
        for _, (left, right) in clip_frames(faces=2, seconds=8.0, fps=4.0, width=320, height=240, seed=seed):
            assert (left["face_id"], right["face_id"]) == (1, 2)
            gaps.append(right["x"] - (left["x"] + left["w"]))
            areas.append(left["w"] * left["h"] - right["w"] * right["h"])
        assert min(gaps) >= _gap(320), f"seed {seed}: boxes {min(gaps)} px apart"
        signs = np.sign(areas)
        assert (np.diff(signs[signs != 0]) != 0).sum() >= 1, f"seed {seed}: the same face is larger throughout"


def test_same_seed_same_clip_other_seed_other_clip():
    def take(seed):
        return list(clip_frames(seconds=1.0, fps=5.0, width=128, height=96, seed=seed, faces=2))

    a, b, c = take(7), take(7), take(8)
    assert all(np.array_equal(fa, fb) and ra == rb for (fa, ra), (fb, rb) in zip(a, b, strict=True))
    assert not np.array_equal(a[0][0], c[0][0])
    assert [r["subject"] for r in a[0][1]] != [r["subject"] for r in c[0][1]]


@pytest.mark.parametrize(("options", "message"), [
    ({"faces": 3}, "faces must be 1 or 2 .got 3"),
    ({"faces": 0}, "faces must be 1 or 2"),
    ({"seconds": 0}, "seconds must be a positive number"),
    ({"seconds": float("nan")}, "seconds must be a positive number"),
    ({"fps": 0}, r"fps must be in \(0, 120\]"),
    ({"fps": 121}, r"fps must be in \(0, 120\]"),
    ({"width": 63}, "width must be a whole number of pixels from 64 to 3840"),
    ({"width": 3841}, "width must be .* 3840x2160"),
    ({"height": 2161}, "height must be a whole number of pixels from 64 to 2160"),
    ({"width": 640.5}, "width must be a whole number"),
    ({"face_size": 450}, "face_size=450 does not fit a 640x480 frame with 1 face.*at most 444 here"),
    ({"face_size": 270, "faces": 2}, "face_size=270 does not fit a 640x480 frame with 2 face.*at most 262 here"),
    ({"face_size": 10}, "face_size must be a whole number of pixels >= 24"),
    ({"faces": 2, "width": 64, "height": 64}, "a 64x64 frame is too small for 2 faces"),
    ({"expressions": ["happy", "joy"]}, "unknown expression.*'joy'.*valid: neutral, happy, sad, surprise, fear, "
                                        "disgust, anger"),
    ({"expressions": ["contempt"]}, "'contempt'.*label set 'basic7'.*basic8"),
    ({"expressions": []}, "expressions is empty"),
    ({"label_set": "basic9"}, "unknown label set 'basic9'; valid: basic7, basic8"),
    ({"subjects": [700, 700], "faces": 2}, "subjects must be 2 different"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        clip_frames(**options)  # raised by the call, before any frame is asked for


def test_write_clip_errors(tmp_path):
    for name in ("clip.mkv", "clip"):
        with pytest.raises(ValueError, match=r"cannot write a video to .*clip.*unknown suffix.*\.mp4, \.avi, \.webm"):
            write_clip(tmp_path / name, **TINY)
    with pytest.raises(ValueError, match="unknown clip option.*colour.*valid: faces"):
        write_clip(tmp_path / "c.mp4", colour="red", **TINY)
    with pytest.raises(ValueError, match="overwrite the video"):
        write_clip(tmp_path / "c.mp4", labels=tmp_path / "c.mp4", **TINY)
    with pytest.raises(ValueError, match="faces must be 1 or 2"):
        write_clip(tmp_path / "c.mp4", faces=5, **TINY)
    # a writer that cannot open: its temporary file's name is taken by a folder
    (tmp_path / f".c.{os.getpid()}.tmp.avi").mkdir()
    with pytest.raises(ValueError,
                       match=r"could not open a MJPG writer for .*c\.\d+\.tmp\.avi.*try another of \.mp4, \.avi"):
        write_clip(tmp_path / "c.avi", **TINY)
    assert not (tmp_path / "c.avi").exists() and not (tmp_path / "c.labels.csv").exists()


def test_read_labels_names_the_file_column_and_line(tmp_path):
    info = write_clip(tmp_path / "c.avi", seconds=0.5, fps=10.0, width=128, height=96)
    good = info.labels_path.read_text().splitlines()
    header = good[0].split(",")

    def variant(name: str, line: int, column: str, value: str) -> Path:
        lines = list(good)
        cells = lines[line - 1].split(",")
        cells[header.index(column)] = value
        lines[line - 1] = ",".join(cells)
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return path

    with pytest.raises(FileNotFoundError, match="no such label file"):
        read_labels(tmp_path / "none.csv")
    with pytest.raises(ValueError, match=r"bad\.csv, line 4, column w: must be a whole number \(got '1.5'\)"):
        read_labels(variant("bad.csv", 4, "w", "1.5"))
    with pytest.raises(ValueError, match=r"line 3, column intensity: must be in \[0, 1\]"):
        read_labels(variant("i.csv", 3, "intensity", "1.5"))
    with pytest.raises(ValueError, match="line 2, column expression: must be one of neutral, happy"):
        read_labels(variant("e.csv", 2, "expression", "joy"))
    with pytest.raises(ValueError, match="line 5, column frame: must be a number|line 5, column frame: must be a "
                                         "whole number"):
        read_labels(variant("f.csv", 5, "frame", "x"))
    with pytest.raises(ValueError, match="line 2: the prob_ columns sum to"):
        read_labels(variant("p.csv", 2, "prob_happy", "0.9"))
    df = read_labels(info.labels_path)
    wrong = "happy" if df.at[0, "label"] != "happy" else "sad"
    with pytest.raises(ValueError, match="line 2, column label: must be the class with the highest prob_"):
        read_labels(variant("l.csv", 2, "label", wrong))
    with pytest.raises(ValueError, match="line 3: frame 0 has a second row for face_id 1"):
        read_labels(variant("d.csv", 3, "frame", "0"))
    path = tmp_path / "cols.csv"
    df.drop(columns=["yaw"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"cols\.csv is not a clip label file \(missing yaw\)"):
        read_labels(path)
    df.rename(columns={"prob_sad": "prob_bored"}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="prob_bored name no class"):
        read_labels(path)


def test_cli_writes_a_clip_and_its_labels(tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["data", "video", "synthfaces", "--out", str(out), "--faces", "2", "--seconds", "1", "--fps", "5",
                 "--size", "160x120", "--seed", "2", "--expressions", "happy,surprise", "--label-set", "basic8"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"wrote {out} (5 frames, 160x120, 5 fps, 2 faces) and {tmp_path / 'clip.labels.csv'}"
    df = read_labels(tmp_path / "clip.labels.csv")
    assert len(_decode(out)) == 5 and len(df) == 10 and "prob_contempt" in df
    assert set(df["expression"]) <= {"neutral", "happy", "surprise"}
    assert main(["data", "video", "rafdb", "--out", str(out)]) == 2
    assert "only 'synthfaces' renders video clips (got 'rafdb')" in capsys.readouterr().err
    assert main(["data", "video", "synthfaces", "--out", str(out), "--size", "640by480"]) == 2
    assert "--size '640by480': give WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["data", "video", "synthfaces", "--out", str(out), "--faces", "3"]) == 1
    assert "faces must be 1 or 2" in capsys.readouterr().err


def test_opencv_finds_the_face_in_most_frames():
    found, ious = [], []
    for frame, (truth,) in clip_frames(seconds=8.0, fps=5.0, seed=0):  # 640x480, the whole pose range
        from fer_core.face import detect_faces

        box = (truth["x"], truth["y"], truth["w"], truth["h"])
        best = max((_iou(box, f.box) for f in detect_faces(frame, max_side=320, align=False)), default=0.0)
        found.append(best >= 0.3)
        ious.append(best)
    # measured: 40/40 frames found (seeds 0-2: 1.0), mean IoU with the truth box 0.77
    assert np.mean(found) >= 0.8, f"the Haar detector found the face in {np.mean(found):.2f} of the frames"
    assert np.mean(ious) >= 0.6
