"""Video prediction (fer_core.video, ``python -m fer_core predict clip.mp4``): decoding and time stamps, seeking,
the tracker's ids, the smoothing against hand computation, frames without a face, bad clips, the overlay video and
the command line.

Clips are written here with OpenCV (Motion JPEG in AVI: every frame a key frame, so frames can be compared) from a
real face (scikit-image's astronaut) moving across a plain background, with blank frames in the middle.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage import data

from fer_core.cli import main
from fer_core.predict import Predictor
from fer_core.video import (
    FaceTracker,
    VideoError,
    columns,
    face_of,
    iter_frames,
    match_truth,
    predict_video,
    probe_video,
    read_frame,
    smooth_probabilities,
    summarize_video,
    video_writer,
    write_overlay,
    write_predictions,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FPS = 10.0
N_FRAMES = 24
BLANK = range(10, 14)  # frames without a face
W, H = 320, 240


def _face() -> np.ndarray:
    """The astronaut's head and shoulders, 150 px square."""
    return cv2.resize(np.ascontiguousarray(data.astronaut()[0:280, 100:380]), (150, 150),
                      interpolation=cv2.INTER_AREA)


def _frames(n: int = N_FRAMES) -> list[np.ndarray]:
    face = _face()
    out = []
    for i in range(n):
        frame = np.full((H, W, 3), 90, np.uint8)
        cv2.putText(frame, str(i), (5, 230), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        if i not in BLANK:
            x = 20 + 5 * i  # drifts right, 5 px a frame
            frame[40:190, x:x + 150] = face
        out.append(frame)
    return out


def _write(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    writer = video_writer(path, fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("video") / "clip.avi", _frames())


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.from_model("mini_xception_fer2013")


@pytest.fixture(scope="module")
def table(predictor: Predictor, clip: Path) -> pd.DataFrame:
    return predict_video(predictor, clip)


# --------------------------------------------------------------------------------------------- decoding
def test_probe_and_frames_round_trip(clip: Path) -> None:
    info = probe_video(clip)
    assert (info.frames, info.fps, info.width, info.height, info.codec) == (N_FRAMES, FPS, W, H, "MJPG")
    assert math.isclose(info.duration_s, N_FRAMES / FPS)
    decoded = list(iter_frames(clip))
    assert [i for i, _, _ in decoded] == list(range(N_FRAMES))
    assert np.allclose([t for _, t, _ in decoded], np.arange(N_FRAMES) / FPS)
    originals = _frames()
    for (_, _, got), want in zip(decoded, originals, strict=True):  # Motion JPEG: close, not equal
        assert got.shape == (H, W, 3) and np.abs(got.astype(int) - want).mean() < 4


def test_read_frame_seeks_to_the_frame(clip: Path) -> None:
    decoded = {i: f for i, _, f in iter_frames(clip)}
    for index in (0, 7, 17, N_FRAMES - 1):
        assert np.array_equal(read_frame(clip, index), decoded[index])
    with pytest.raises(VideoError, match="no frame 99"):
        read_frame(clip, 99)


# --------------------------------------------------------------------------------------------- tracking
def test_tracker_keeps_ids_when_the_size_order_flips() -> None:
    tracker = FaceTracker()
    ids = []
    for k in range(20):  # face A (left) shrinks, face B (right) grows: the larger one changes at k = 10
        a = (50, 50, 100 - 3 * k, 100 - 3 * k)
        b = (300, 50, 70 + 3 * k, 70 + 3 * k)
        boxes = sorted([a, b], key=lambda r: r[2], reverse=True)  # a detector's order: largest first
        got = dict(zip(boxes, tracker.update(boxes, k / 25), strict=True))
        ids.append((got[a], got[b]))
    assert set(ids) == {(1, 2)}


def test_tracker_ends_a_face_after_max_missing_and_never_reuses_ids() -> None:
    tracker = FaceTracker(max_missing_s=0.5)
    box = (10, 10, 50, 50)
    assert tracker.update([box], 0.0) == [1]
    assert tracker.update([], 0.4) == []
    assert tracker.update([box], 0.45) == [1]  # back within 0.5 s of its last sighting: the same face
    assert tracker.update([box], 1.5) == [2]   # gone 1.05 s: a new face
    assert tracker.update([(200, 10, 50, 50)], 1.54) == [3]  # no overlap with face 2: another face
    with pytest.raises(ValueError, match="min_iou"):
        FaceTracker(min_iou=0)


def test_tracker_finds_a_lost_face_again_after_it_moved() -> None:
    """A face lost for a second that comes back 1.2 of its sides away (no overlap left) keeps its id; a face three
    sides away is someone else; a face matched by overlap is never taken over by the distance stage."""
    tracker = FaceTracker()
    assert tracker.update([(100, 100, 50, 50), (400, 100, 50, 50)], 0.0) == [1, 2]
    assert tracker.update([(400, 100, 50, 50)], 0.5) == [2]
    # face 1 reappears 60 px (1.2 sides) lower; a new face 150 px (3 sides) right of face 1's last box
    assert tracker.update([(100, 160, 50, 50), (250, 100, 50, 50), (402, 100, 50, 50)], 1.2) == [1, 3, 2]
    assert FaceTracker(max_jump=0).update([(0, 0, 5, 5)], 0) == [1]
    with pytest.raises(ValueError, match="max_jump"):
        FaceTracker(max_jump=-1)


def test_tracker_iou_gate_by_hand() -> None:
    tracker = FaceTracker(min_iou=0.3, max_jump=0.5)  # centres 6 px = 0.6 sides apart: not within the jump either
    tracker.update([(0, 0, 10, 10)], 0.0)
    # (6, 0, 10, 10) overlaps 4 x 10 = 40 of 160: IoU 0.25 < 0.3, a new face; (3, 0, 10, 10): 70 / 130 = 0.54
    assert tracker.update([(6, 0, 10, 10)], 0.04) == [2]
    assert tracker.update([(3, 0, 10, 10)], 0.08) == [1]


def test_smoothing_by_hand() -> None:
    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    t = np.array([0.0, 0.1, 0.3])
    got = smooth_probabilities(t, p, 0.2)
    a1, a2 = 1 - math.exp(-0.5), 1 - math.exp(-1.0)
    s1 = 1 - a1
    s2 = s1 + a2 * (0 - s1)
    assert np.allclose(got[:, 0], [1.0, s1, s2], atol=1e-6)
    assert np.allclose(got.sum(1), 1.0, atol=1e-6)
    assert np.array_equal(smooth_probabilities(t, p, 0), p.astype(np.float32))
    with pytest.raises(ValueError, match="smooth_s"):
        smooth_probabilities(t, p, -1)


# --------------------------------------------------------------------------------------------- prediction
def test_table_marks_frames_without_a_face_and_keeps_one_id(table: pd.DataFrame, predictor: Predictor) -> None:
    assert list(table.columns) == columns(predictor.class_names)
    assert table["frame"].tolist() == list(range(N_FRAMES))  # one face per frame, or a no-face row
    none = table[table["status"] == "no face"]
    assert none["frame"].tolist() == list(BLANK)
    assert none["face_id"].isna().all() and none["prob_happy"].isna().all()
    faces = table[table["status"] == "ok"]
    # the face is gone 0.4 s (under the tracker's 2 s): it keeps its id
    assert faces["face_id"].unique().tolist() == [1]
    probs = faces[[f"prob_{c}" for c in predictor.class_names]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    # the box follows the face: 5 px a frame to the right
    slope = np.polyfit(faces["frame"], faces["x"].astype(float), 1)[0]
    assert 4.0 < slope < 6.0
    assert np.allclose(table["time_s"], np.arange(N_FRAMES) / FPS)
    summary = summarize_video(table)
    assert (summary["frames"], summary["frames_with_face"], summary["faces"]) == (N_FRAMES, N_FRAMES - 4, 1)


def test_per_frame_probabilities_equal_the_photo_path(table: pd.DataFrame, predictor: Predictor, clip: Path) -> None:
    """A frame's row is what Predictor.predict says of that frame (same detection settings)."""
    frame = read_frame(clip, 5)
    photo = predictor.predict(frame, faces="all", max_side=320, align=False)[0]
    row = table[table["frame"] == 5].iloc[0]
    assert tuple(int(row[c]) for c in "xywh") == photo.box
    assert np.allclose([row[f"prob_{c}"] for c in predictor.class_names], list(photo.probs.values()), atol=1e-5)


def test_detect_every_carries_boxes_and_smoothing_is_causal(predictor: Predictor, clip: Path,
                                                            table: pd.DataFrame) -> None:
    sparse = predict_video(predictor, clip, detect_every=3, smooth_s=0.5, max_frames=9)
    assert sparse["detected"].tolist() == [True, False, False] * 3
    assert (sparse["x"].iloc[1], sparse["x"].iloc[2]) == (sparse["x"].iloc[0], sparse["x"].iloc[0])
    # smoothing uses the past only: the first 9 frames' smoothed values do not depend on the frames after them
    full = predict_video(predictor, clip, smooth_s=0.5)
    short = predict_video(predictor, clip, smooth_s=0.5, max_frames=9)
    cols = [f"smooth_{c}" for c in predictor.class_names]
    assert np.allclose(full[cols].iloc[:9].to_numpy(float), short[cols].to_numpy(float))


def test_tables_round_trip(table: pd.DataFrame, tmp_path: Path) -> None:
    for name in ("frames.csv", "frames.parquet"):
        path = write_predictions(table, tmp_path / name)
        back = pd.read_csv(path) if name.endswith(".csv") else pd.read_parquet(path)
        assert len(back) == len(table) and list(back.columns) == list(table.columns)
        assert np.allclose(back["prob_happy"].astype(float), table["prob_happy"].astype(float), equal_nan=True)


# --------------------------------------------------------------------------------------------- ground truth
def _faces_table(rows: list[tuple]) -> pd.DataFrame:
    """A video table of hand-made rows ``(frame, face_id, box, top, smooth_top)``; face_id None: a no-face row."""
    out = []
    for frame, face_id, box, top, smooth_top in rows:
        base = {"frame": frame, "time_s": frame / 10}
        out.append({**base, "status": "no face"} if face_id is None else {
            **base, "face_id": face_id, **dict(zip("xywh", box, strict=True)), "top": top, "smooth_top": smooth_top,
            "status": "ok"})
    return pd.DataFrame(out)


def test_match_truth_by_hand() -> None:
    """Boxes are matched by IoU, not by id: the tracked ids are the labels' swapped; a false detection and a box
    that overlaps too little get no truth."""
    df = _faces_table([(0, 1, (0, 0, 10, 10), "happy", "happy"), (0, 2, (100, 0, 10, 10), "sad", "neutral"),
                       (1, 1, (0, 0, 10, 10), "fear", "happy"), (1, 3, (50, 50, 10, 10), "sad", "sad"),
                       (2, None, None, None, None), (3, 1, (0, 0, 10, 10), "happy", "happy")])
    labels = pd.DataFrame([(0, 1, "sad", 100, 0, 10, 10), (0, 2, "happy", 2, 0, 10, 10),
                           (1, 2, "happy", 5, 0, 10, 10), (1, 1, "sad", 100, 0, 10, 10),
                           (2, 2, "happy", 0, 0, 10, 10), (3, 2, "happy", 6, 0, 10, 10)],
                          columns=["frame", "face_id", "label", "x", "y", "w", "h"])
    got = match_truth(df, labels)
    assert list(zip(got["frame"], got["face_id"], strict=True)) == [(0, 1), (0, 2), (1, 1), (1, 3), (3, 1)]
    assert got["truth_id"].tolist() == [2, 1, 2, pd.NA, pd.NA]
    # IoU by hand: 80/120 (2 px apart), 1, 50/150 (5 px apart, over 0.3); 40/160 = 0.25 (6 px apart) is under 0.3
    assert np.allclose(got["iou"], [80 / 120, 1.0, 50 / 150, 0.0, 0.0])
    assert got["truth"].tolist() == ["happy", "sad", "happy", None, None]
    assert got["agree"].tolist() == [True, True, False, pd.NA, pd.NA]
    assert got["smooth_agree"].tolist() == [True, False, True, pd.NA, pd.NA]
    assert got.attrs["agreement"] == {
        "matched": 3, "unmatched": 2, "top": pytest.approx(2 / 3), "smooth_top": pytest.approx(2 / 3), "per_face": {
            1: {"truth_id": 2, "matched": 2, "top": 0.5, "smooth_top": 1.0},
            2: {"truth_id": 1, "matched": 1, "top": 1.0, "smooth_top": 0.0},
            3: {"truth_id": None, "matched": 0, "top": None, "smooth_top": None}},
        "recall": 0.5, "id_switches": 0}  # 3 of the 6 labelled faces of frames 0-3 matched; each to one id
    assert match_truth(df, labels, min_iou=0.2)["truth"].tolist() == ["happy", "sad", "happy", None, "happy"]
    # labelled face 2 seen by tracked face 1, then by tracked face 3: one identity switch
    switched = labels.copy()
    switched.loc[(switched["frame"] == 1) & (switched["face_id"] == 2), ["x", "y"]] = [50, 50]
    assert match_truth(df, switched).attrs["agreement"]["id_switches"] == 1
    with pytest.raises(ValueError, match="no label column"):
        match_truth(df, labels.drop(columns="label"))
    with pytest.raises(ValueError, match="min_iou"):
        match_truth(df, labels, min_iou=0)


def test_face_of_is_the_crop_the_table_classified(table: pd.DataFrame, predictor: Predictor, clip: Path) -> None:
    row = table[table["frame"] == 5].iloc[0]
    face = face_of(read_frame(clip, 5), row)
    probs = predictor.probabilities([face.crop])[0]
    assert np.allclose(probs, [row[f"prob_{c}"] for c in predictor.class_names], atol=1e-5)
    with pytest.raises(ValueError, match="no face"):
        face_of(read_frame(clip, BLANK[0]), table[table["frame"] == BLANK[0]].iloc[0])


# --------------------------------------------------------------------------------------------- bad clips
def test_bad_clips_get_clear_errors(tmp_path: Path, predictor: Predictor, clip: Path) -> None:
    cases = {"missing.mp4": None, "empty.mp4": b"", "text.mp4": b"hello, not a video\n" * 10,
             "noise.webm": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
             "header_only.avi": clip.read_bytes()[:2048]}
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(VideoError, match=name.replace(".", r"\.")) as err:
            predict_video(predictor, path)
        assert any(w in str(err.value) for w in ("no such", "empty", "cannot decode", "no frame")), err.value
    with pytest.raises(VideoError, match=r"320 x 240 pixels are larger than the 10,000-pixel limit"):
        predict_video(predictor, clip, max_pixels=10_000)
    with pytest.raises(VideoError, match="is a folder"):
        probe_video(tmp_path)


def test_a_clip_cut_short_keeps_its_frames(tmp_path: Path, predictor: Predictor, clip: Path) -> None:
    raw = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(raw[: len(raw) * 6 // 10])  # the AVI header still announces every frame
    df = predict_video(predictor, cut)
    assert 5 <= df["frame"].nunique() < N_FRAMES
    assert "decoding stopped at frame" in df.attrs["decode_note"]
    assert "decode_note" in summarize_video(df)


# --------------------------------------------------------------------------------------------- overlay and CLI
def test_overlay_video_draws_the_faces(tmp_path: Path, predictor: Predictor, clip: Path, table: pd.DataFrame) -> None:
    out = write_overlay(clip, table, tmp_path / "overlay.webm", predictor=predictor, method="gradcam")
    info = probe_video(out)
    assert (info.width, info.height, info.fps) == (W, H, FPS) and info.codec == "VP90"
    frames = {i: f for i, _, f in iter_frames(out)}
    assert len(frames) == N_FRAMES
    original = {i: f for i, _, f in iter_frames(clip)}
    changed = [np.abs(frames[i].astype(int) - original[i]).mean() for i in range(N_FRAMES)]
    assert min(changed[i] for i in range(N_FRAMES) if i not in BLANK) > 5  # heat map and box on every face frame
    assert max(changed[i] for i in BLANK) < 3  # nothing drawn where there is no face (codec noise only)
    assert not list(tmp_path.glob(".*partial*"))
    with pytest.raises(ValueError, match="write a .mp4, .avi, .webm file"):
        write_overlay(clip, table, tmp_path / "overlay.gif")


def test_cli_predict_video(tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, overlay = tmp_path / "frames.csv", tmp_path / "o.mp4"
    assert main(["predict", str(clip), "--out", str(out), "--overlay", str(overlay), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == N_FRAMES and report["faces"] == 1 and report["frames_with_face"] == N_FRAMES - 4
    assert report["video"]["fps"] == FPS and overlay.exists() and probe_video(overlay).frames == N_FRAMES
    df = pd.read_csv(out)
    assert df["status"].value_counts().to_dict() == {"ok": N_FRAMES - 4, "no face": 4}
    assert main(["predict", str(clip), "--out", str(tmp_path / "x.csv"), "--method", "gradcam"]) == 2
    assert "--overlay" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nothing.mp4")]) == 1
    assert "no such video file" in capsys.readouterr().err


def test_video_through_an_onnx_file_without_torch(tmp_path: Path, clip: Path, table: pd.DataFrame) -> None:
    """``predict clip --onnx model.onnx`` imports nothing that needs torch, and gives the PyTorch table."""
    import subprocess
    import sys

    from fer_core.export import export_registered

    repo = Path(__file__).resolve().parents[1]
    model = export_registered("mini_xception_fer2013", "onnx", out=tmp_path / "mx.onnx")
    out = tmp_path / "frames.csv"
    cli = ("import sys; sys.modules['torch'] = None\n"
           "from fer_core.cli import main\n"
           f"raise SystemExit(main(['predict', {str(clip)!r}, '--onnx', {str(model)!r}, '--out', {str(out)!r}]))\n")
    done = subprocess.run([sys.executable, "-c", cli], capture_output=True, text=True, cwd=repo,
                          env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    onnx = pd.read_csv(out)
    assert onnx["status"].tolist() == table["status"].tolist()
    assert onnx["top"].fillna("").tolist() == table["top"].fillna("").tolist()
    assert np.allclose(onnx["prob_happy"], table["prob_happy"].astype(float), atol=1e-4, equal_nan=True)


def test_cli_predict_video_against_the_true_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--truth`` on a SynthFACS clip: the agreement printed is match_truth's of the table written, every tracked
    face frame finds the clip's one face under its box, and the matching is written beside the table."""
    from fer_core.data.synthfaces.clip import read_labels, write_clip

    info = write_clip(tmp_path / "acting.avi", faces=1, seconds=2.0, fps=10.0, width=320, height=240, seed=1)
    out = tmp_path / "frames.csv"
    assert main(["predict", str(info.path), "--out", str(out), "--truth", str(info.labels_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["truth"]
    table, labels = pd.read_csv(out), read_labels(info.labels_path)
    want = match_truth(table, labels).attrs["agreement"]
    assert report == {**want, "per_face": {str(k): v for k, v in want["per_face"].items()}, "out": report["out"]}
    faces = int((table["status"] == "ok").sum())
    assert report["matched"] == faces >= 15 and report["unmatched"] == 0
    assert {v["truth_id"] for v in report["per_face"].values()} == {1}
    matched = pd.read_csv(report["out"])
    assert len(matched) == faces and set(matched["truth"]) <= set(labels["label"])
    assert main(["predict", str(info.path), "--out", str(out), "--truth", str(tmp_path / "none.csv")]) == 1
    assert "no such label file" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "x.jpg"), "--truth", str(info.labels_path)]) == 2
    assert "--truth are for a video" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- SynthFACS clips
SYNTH_WEIGHTS = Path(__file__).parent / "data" / "synthfaces_small_cnn_e0_fp16.safetensors"
"""A small CNN trained on SynthFACS (64x64 RGB, 7 classes): the best weights of the run
``e0-pretraining--pretrained--s0`` of ``python scripts/experiments.py run e0`` (20 epochs on 4,000 faces; 84% on the
test split), stored in float16 (785 KB)."""


def _synthfaces_predictor() -> Predictor:
    from safetensors.torch import load_file

    from fer_core.models import create_model

    model = create_model("small_cnn", num_classes=7, input_size=64, drop_rate=0.2)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in load_file(SYNTH_WEIGHTS).items()})
    return Predictor(model.eval(), name="synthfaces small CNN (e0)")


def test_tracker_keeps_both_ids_on_a_two_face_synthfaces_clip(tmp_path: Path, predictor: Predictor) -> None:
    """Two SynthFACS faces whose sizes swing in opposite ways (the larger one changes during the clip, so ids given
    by size order would swap): no identity switch, and each tracked face is one labelled face."""
    from fer_core.data.synthfaces.clip import read_labels, write_clip
    from fer_core.video import match_truth

    for seed in (0, 1):  # seed 1: the detector loses the right face for 1.4 s, in which it moves 1.04 widths
        clip = write_clip(tmp_path / f"two{seed}.mp4", faces=2, seconds=8, fps=10, seed=seed)
        labels = read_labels(clip.labels_path)
        larger = labels.assign(area=labels["w"] * labels["h"]).sort_values("area").groupby("frame")["face_id"].last()
        assert larger.nunique() == 2  # the test means something: the size order flips
        df = predict_video(predictor, clip.path)
        agreement = match_truth(df, labels).attrs["agreement"]
        assert agreement["id_switches"] == 0, agreement
        assert agreement["recall"] >= 0.8, agreement
        assert len(agreement["per_face"]) == 2
        assert {v["truth_id"] for v in agreement["per_face"].values()} == {1, 2}


def test_pipeline_agrees_with_synthfaces_labels_frame_by_frame(tmp_path: Path) -> None:
    """A model trained on SynthFACS, run through the whole pipeline (decode, detect, track, crop, classify) on a
    one-face clip of neutral -> apex -> neutral episodes: the class of each frame is the generator's per-frame label
    far more often than the majority label's share (measured: 0.88, against 0.41)."""
    from fer_core.data.synthfaces.clip import read_labels, write_clip
    from fer_core.video import match_truth

    clip = write_clip(tmp_path / "one.mp4", faces=1, seconds=8, fps=10, seed=0)
    labels = read_labels(clip.labels_path)
    df = predict_video(_synthfaces_predictor(), clip.path)
    agreement = match_truth(df, labels).attrs["agreement"]
    majority = labels["label"].value_counts(normalize=True).max()
    assert agreement["recall"] >= 0.95 and agreement["id_switches"] == 0, agreement
    assert agreement["top"] >= 0.75 and agreement["top"] > majority + 0.3, (agreement, majority)
    assert agreement["smooth_top"] >= 0.7, agreement
