"""AppTest tests of the Explain a video page (pages/video.py): without a clip, with an uploaded clip (summary,
timeline, scrubbing, explanation, CSV and overlay downloads), with broken uploads, and where it writes.

The clip is tests/test_video.py's: scikit-image's astronaut drifting across 20 frames of 320 x 240 at 10 fps, with
frames 10-13 blank, written as Motion JPEG; the model is the pretrained mini-Xception (milliseconds per face).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apphelpers import app, array, charts_on, ok
from fsaudit import outside, recording
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from test_video import BLANK, FPS, _frames, _write

from fer_core.data.synthfaces.clip import read_labels
from fer_core.predict import Predictor
from fer_core.video import predict_video

pytestmark = pytest.mark.usefixtures("one_thread")

PAGE = "../pages/video.py"
N = 20  # frames of the test clip; BLANK (10-13) have no face
MINI_CLASSES = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("video") / "walk.avi", _frames(N))


@pytest.fixture
def media(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, bytes]]:
    """What the page hands to Streamlit's media store (download buttons, videos): ``{file name or mimetype:
    bytes}``, recorded on the way through (AppTest's store itself is gone after each run)."""
    seen: dict[str, bytes] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def spy(self, path_or_data, mimetype, kind, filename=None):  # noqa: ANN001, ANN202 - Streamlit's signature
        data = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        seen[filename or mimetype] = data
        return original(self, path_or_data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", spy)
    yield seen


def _upload(at, name: str, data: bytes, mime: str = "video/x-msvideo"):
    at.file_uploader(key="video.upload").set_value((name, data, mime)).run()
    return ok(at)


def test_video_page_without_a_clip_says_what_to_do(runs_root: Path):
    at = app(PAGE)
    assert [t.value for t in at.title] == ["Explain a video"]
    assert any("Upload a video clip" in i.value for i in at.info)
    (uploader,) = at.file_uploader
    assert {".mp4", ".webm", ".avi", ".mkv", ".mov"} <= set(uploader.allowed_type)
    assert at.selectbox(key="video.method").value == "gradcam"
    assert any("Sanity checks" in c.value and "passed" in c.value for c in at.caption)
    assert any("python -m fer_core predict clip.mp4 --out frames.csv --overlay overlay.webm --method gradcam"
               in m.value for m in at.markdown)
    assert not charts_on(at) and not at.get("download_button")


def test_video_page_with_an_uploaded_clip(runs_root: Path, clip: Path, media: dict[str, bytes]):
    at = _upload(app(PAGE), "walk.avi", clip.read_bytes())
    assert not at.error, [e.value for e in at.error]
    assert [m.value for m in at.metric] == [str(N), str(N - len(BLANK)), "1", f"{N / FPS:.1f} s"]
    assert any("face 1: 0.00-1.90 s, 16 frames, most often" in m.value for m in at.markdown)

    (timeline, probs) = charts_on(at)  # one timeline (one face), then the chosen face's probabilities
    lines = {t["name"]: t for t in timeline["data"] if t["mode"] == "lines"}
    assert list(lines) == MINI_CLASSES
    happy = array(lines["happy"]["y"])
    assert len(happy) == N - len(BLANK) + 1 and np.isnan(happy[BLANK[0]])  # 16 frames and one break at the gap
    assert np.allclose(array(lines["happy"]["x"])[[0, -1]], [0.0, (N - 1) / FPS])
    (marker,) = timeline["layout"]["shapes"]
    assert marker["x0"] == 0.0  # the dotted line at the first frame
    assert [t["name"] for t in probs["data"]] == ["smoothed", "this frame alone"]
    assert list(probs["data"][0]["y"]) == MINI_CLASSES

    captions = [c for el in at.image for c in el.captions]
    assert captions[0].startswith("frame 0 · 1 face(s)")
    assert "the crop the model sees" in captions
    assert any(c.startswith("gradcam · ") for c in captions), captions

    # the CSV download is the table predict_video makes of the same clip
    (download,) = at.get("download_button")
    assert download.proto.label == "Download the table (CSV)"
    shown = pd.read_csv(io.BytesIO(media["walk_frames.csv"]))
    want = predict_video(Predictor.from_model("mini_xception_fer2013"), clip)
    assert list(shown.columns) == list(want.columns) and len(shown) == len(want) == N
    assert shown["status"].tolist() == want["status"].tolist()
    cols = [f"{k}_{c}" for k in ("prob", "smooth") for c in MINI_CLASSES]
    assert np.allclose(shown[cols].to_numpy(float), want[cols].to_numpy(float), atol=1e-5, equal_nan=True)

    # scrubbing: a blank frame says so, and the dotted line follows
    at.select_slider(key="video.frame").set_value(BLANK[1]).run()
    ok(at)
    assert any(i.value == "No face in this frame." for i in at.info)
    (timeline,) = charts_on(at)
    assert timeline["layout"]["shapes"][0]["x0"] == pytest.approx(BLANK[1] / FPS)
    at.select_slider(key="video.frame").set_value(15).run()
    ok(at)
    assert [c for el in at.image for c in el.captions][0].startswith("frame 15 · 1 face(s)")
    assert at.selectbox(key="video.face").value == 1

    # the overlay video: made on request, played and offered for download
    at.button(key="video.make_overlay").click().run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("video")) == 1 and len(at.get("download_button")) == 2
    webm = media["walk_overlay.webm"]
    assert webm[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic number of a WebM file


def test_video_page_reports_bad_uploads(runs_root: Path, clip: Path):
    at = app(PAGE)
    for name, data, expected in (("holiday.mp4", b"this is not a video\n" * 20, "cannot decode holiday.mp4"),
                                 ("empty.webm", b"", "empty.webm is empty"),
                                 ("half.avi", clip.read_bytes()[:2048], "half.avi")):
        _upload(at, name, data)
        (error,) = at.error  # named as uploaded, without the temporary folder
        assert error.value.startswith(f"Could not use **{name}**: ") and expected in error.value, error.value
        assert "fer-lab-clip-" not in error.value
        assert not charts_on(at) and not at.metric
    _upload(at, "walk.avi", clip.read_bytes())  # and the page goes on with a good clip
    assert not at.error and len(charts_on(at)) == 2


def test_uploads_and_overlays_stay_in_the_cache_folder(runs_root: Path, clip: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch):
    """The page writes the upload (OpenCV reads files) and the overlay video under ``$FER_CACHE_DIR/video/`` only,
    and deletes the previous upload when another replaces it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FER_CACHE_DIR", str(cache))
    at = app(PAGE)
    with recording() as rec:
        _upload(at, "walk.avi", clip.read_bytes())
        at.button(key="video.make_overlay").click().run()
        ok(at)
    assert outside(rec.written_paths(), cache) == [] and rec.network == []
    (first,) = (cache / "video").glob("fer-lab-clip-*/walk.avi")
    assert first.read_bytes() == clip.read_bytes()
    assert len(list((cache / "video").glob("fer-lab-overlay-*.webm"))) == 1
    _upload(at, "../../shorter.avi", clip.read_bytes()[: len(clip.read_bytes()) * 6 // 10])
    assert any("decoding stopped at frame" in w.value for w in at.warning)
    # the first upload and its overlay are gone; the new one keeps its plain name inside the cache folder
    assert [p.name for p in (cache / "video").rglob("*") if p.is_file()] == ["shorter.avi"]


@pytest.mark.slow
def test_video_page_example_clip_draws_the_true_classes(runs_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """The example button renders the SynthFACS clip of two faces (once, into the cache folder) and the timelines
    carry its true classes, matched to the tracked faces by their boxes."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FER_CACHE_DIR", str(cache))
    at = app(PAGE)
    at.button(key="video.example_button").click().run(timeout=300)
    ok(at)
    assert not at.error, [e.value for e in at.error]
    (labels_path,) = (cache / "video").glob("example-*.labels.csv")
    labels = read_labels(labels_path)
    assert [m.value for m in at.metric][:3] == ["60", "60", "2"]  # both faces tracked, one in every frame
    assert any(m.value.startswith("**Against the clip's true classes**") for m in at.markdown)
    timelines = [c for c in charts_on(at) if c["layout"]["title"]["text"].startswith("Face ")][:2]
    assert len(timelines) == 2
    for chart in timelines:
        assert "smoothed class = true class in" in chart["layout"]["title"]["text"]
        truth = [t for t in chart["data"] if t["name"].startswith("truth: ")]
        assert truth and {t["name"].removeprefix("truth: ") for t in truth} <= set(labels["label"])
        assert all(set(array(t["y"])) == {108.0} for t in truth)
    # the true class shown for face 1 at 3 s is the label of the labelled face under its box
    at.select_slider(key="video.frame").set_value(30).run()
    ok(at)
    (said,) = [m.value for m in at.markdown if m.value.startswith("True class (the clip's label)")]
    box = [float(b) for b in at.session_state["video.result"][1].query("frame == 30 and face_id == 1")[
        ["x", "y", "w", "h"]].iloc[0]]
    here = labels[labels["frame"] == 30]
    overlap = [max(0.0, min(box[0] + box[2], r.x + r.w) - max(box[0], r.x))
               * max(0.0, min(box[1] + box[3], r.y + r.h) - max(box[1], r.y)) for r in here.itertuples()]
    assert f"**{here['label'].iloc[int(np.argmax(overlap))]}**" in said
    at.button(key="video.example_button").click().run()  # a second time: the rendered clip is reused
    ok(at)
    assert len(list((cache / "video").glob("example-*"))) == 2  # the clip and its labels, nothing else
