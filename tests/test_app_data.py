"""AppTest tests of the Data sets and SCN attention pages, and of the fer_core helpers they use.

The Data sets page runs on a small SynthFACS (sizes and image size preset in ``session_state``, as if set in its
options expander) so a test renders a few dozen 32x32 faces; the "real data set" is a stand-in registered for the
test that needs files, like FER2013 does. The SCN page reads a tiny SCN run trained once per session (SCN head on
the small CNN, 30% label noise, relabelling from epoch 1 with no margin so that relabels happen in seconds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apphelpers import ROOT, app, array, charts_on, copy_run
from streamlit.testing.v1 import AppTest

from app import charts, ui
from fer_core import io
from fer_core.config import load_config
from fer_core.data import browse, build_dataset, register_dataset
from fer_core.data.registry import _REGISTRY
from fer_core.data.synthfaces import OCCLUDERS
from fer_core.data.synthfaces.aus import AU_INDEX, AUS, prototype_vector
from fer_core.data.synthfaces.dataset import compose_face
from fer_core.explain import attention
from fer_core.labels import label_set

DATASETS = "../pages/datasets.py"
SCN = "../pages/scn.py"
SYNTH = {"train_size": 120, "val_size": 40, "test_size": 120, "image_size": 32}
SMALL = {f"datasets.{k}": v for k, v in SYNTH.items()} | {"datasets.per_class": 2}
SCN_RUN_ID = "20260101-000000-tiny-scn-0001"
SCN_OVERRIDES = ("data.options.image_size=32", "data.options.train_size=64", "data.options.val_size=32",
                 "data.options.test_size=32", "model.input_size=32", "train.batch_size=32", "train.epochs=3",
                 "model.name=scn", "model.options.backbone=small_cnn", "train.method.name=scn",
                 "train.method.relabel_epoch=1", "train.method.margin_2=0.0", "data.label_noise=0.3",
                 "name=tiny-scn")


def image_element(at: AppTest, caption_start: str):
    """The one st.image element whose first caption starts with ``caption_start``."""
    found = [el for el in at.image if el.captions and el.captions[0].startswith(caption_start)]
    assert len(found) == 1, [el.captions[:2] for el in at.image]
    return found[0]


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def scn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny finished SCN run (3 epochs, 64 training faces at 32x32, 30% injected label noise)."""
    from fer_core.train import train

    run_dir = tmp_path_factory.mktemp("scn_runs") / SCN_RUN_ID
    result = train(load_config(ROOT / "configs" / "smoke.yaml", SCN_OVERRIDES), run_dir)
    assert result["state"] == "done", ui.log_tail(run_dir)[1]
    return run_dir


@pytest.fixture
def gated_dataset():
    """A stand-in for a licence-gated data set: registered as needing a root, and failing the way loaders do."""
    name = "gatedfer"

    def builder(root=None, split="train", subset=None, **options):
        raise FileNotFoundError(f"{Path(root) / 'gatedfer.csv'} not found: download gatedfer.csv from the "
                                "publisher's site and put it in this folder")

    register_dataset(name, description="a licence-gated stand-in for tests", needs_root=True)(builder)
    yield name
    _REGISTRY.pop(name, None)


# --------------------------------------------------------------------------------------------- Data sets page
def test_datasets_page_shows_class_counts_faces_and_subsets(runs_root: Path):
    at = app(DATASETS, SMALL)
    assert [t.value for t in at.title] == ["Data sets"] and at.selectbox[0].value == "synthfaces"
    assert [s.value for s in at.subheader] == ["Classes", "Faces per class", "Challenge subsets"]
    assert not at.error

    counts = next(f for f in charts_on(at) if f["layout"]["title"]["text"] == "Faces per class and split")
    assert [t["name"].split(" ")[0] for t in counts["data"]] == ["train", "val", "test"]
    for trace in counts["data"]:
        ds = build_dataset("synthfaces", split=trace["name"].split(" ")[0], **SYNTH)
        assert list(trace["x"]) == list(ds.classes) and len(ds.classes) == 7
        assert array(trace["y"]).tolist() == np.bincount(ds.labels, minlength=7).tolist()
        assert array(trace["y"]).sum() == len(ds)

    train = build_dataset("synthfaces", split="train", **SYNTH)
    rows = [el for el in at.image if len(set(el.captions)) == 1 and el.captions[0] in train.classes]  # one per class
    assert [el.captions[0] for el in rows] == list(train.classes)
    assert all(len(el.value) == 2 for el in rows)  # 2 faces per class, as preset

    occlusion = build_dataset("synthfaces", split="test", subset="occlusion", **SYNTH)
    assert at.radio[0].value == "occlusion"
    assert any(f"{len(occlusion):,} of 120 test faces" in c.value for c in at.caption)
    grid = [el for el in at.image if el.captions and all(" · yaw " in c for c in el.captions)]
    assert len(grid) == 1 and len(grid[0].value) == min(24, len(occlusion))
    assert all(c.split(" · ")[-1] in OCCLUDERS[1:] for c in grid[0].captions)  # class · yaw · occluder

    before = rows[0].value
    at.toggle(key="datasets.masks").set_value(True).run()
    assert not at.exception
    after = [el for el in at.image if el.captions and el.captions[0] == train.classes[0]][0].value
    assert len(after) == len(before) and after != before  # the same faces, now with their masks tinted


def test_playground_renders_a_face_and_a_slider_changes_it(runs_root: Path, smoke_run: tuple[Path, dict]):
    run_id = "20260101-000000-synth-run-0003"
    copy_run(smoke_run[0], runs_root, run_id)  # a finished SynthFACS run: offered as a model beside mini-Xception
    at = app(DATASETS, SMALL)
    face = image_element(at, "AU ")
    assert face.captions == ["AU 6 0.80, AU 12 1.00"]  # the happy prototype, the default start
    assert at.slider(key="datasets.play.au.12").value == 1.0
    probs = next(f for f in charts_on(at) if f["data"][0].get("orientation") == "h")
    model, truth = probs["data"]
    assert model["name"] == "mini_xception_fer2013" and truth["name"] == "SynthFACS soft label"
    assert abs(np.nansum(array(model["x"]).astype(float)) - 100.0) < 0.5  # probabilities in percent
    expected = compose_face({"6": 0.8, "12": 1.0}, subject=700)
    assert np.allclose(array(truth["x"]).astype(float), 100.0 * expected.label_dist, atol=1e-3)

    at.slider(key="datasets.play.au.12").set_value(0.0).run()
    assert not at.exception
    moved = image_element(at, "AU ")
    assert moved.captions == ["AU 6 0.80"] and moved.value != face.value

    at.slider(key="datasets.play.yaw").set_value(40.0).run()
    assert image_element(at, "AU ").value not in (face.value, moved.value)

    at.selectbox(key="datasets.play.preset").set_value("surprise").run()  # a prototype sets every AU slider
    assert not at.exception
    vec = prototype_vector("surprise")
    assert [at.slider(key=f"datasets.play.au.{au}").value for au in AUS] == [round(float(v), 2) for v in vec]

    models = at.selectbox(key="datasets.play.model")
    assert models.options[0].startswith("mini_xception_fer2013") and models.options[1].startswith(f"run {run_id}")
    models.set_value(f"run:{run_id}").run()
    assert not at.exception and not at.error
    model = next(f for f in charts_on(at) if f["data"][0].get("orientation") == "h")["data"][0]
    assert model["name"].startswith(run_id) and list(model["y"]) == list(label_set("basic7"))


def test_real_datasets_come_only_from_fer_data(runs_root: Path, gated_dataset: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("FER_DATA", raising=False)
    at = app(DATASETS, SMALL, dataset=gated_dataset)
    assert at.selectbox[0].value == "synthfaces" and gated_dataset not in at.selectbox[0].options
    assert any(gated_dataset in c.value and "FER_DATA` is not set" in c.value for c in at.caption)
    assert not at.error and "Classes" in [s.value for s in at.subheader]

    monkeypatch.setenv("FER_DATA", str(tmp_path))
    (tmp_path / gated_dataset).mkdir()
    at = app(DATASETS, SMALL, dataset=gated_dataset)
    assert at.selectbox[0].value == gated_dataset and not at.exception
    assert any("gatedfer.csv not found" in e.value and "publisher" in e.value for e in at.error)
    assert "Classes" not in [s.value for s in at.subheader]
    assert image_element(at, "AU ")  # the SynthFACS playground still works


def test_rafdb_from_fer_data_counts_skips_and_subset_report(runs_root: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    from test_data_rafdb import RAF_LINES, _jpeg

    root = tmp_path / "data" / "rafdb"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in RAF_LINES))
    for k, (n, _) in enumerate(RAF_LINES):
        _jpeg(root / "Image" / "aligned" / n.replace(".jpg", "_aligned.jpg"), 10 * k)
    (root / "subsets").mkdir()
    (root / "subsets" / "occlusion.txt").write_bytes(b"test_0003_aligned 5 4\r\ntest_0999_aligned 2 2\r\n")
    monkeypatch.setenv("FER_DATA", str(tmp_path / "data"))
    at = app(DATASETS, {"datasets.per_class": 2}, dataset="rafdb")
    assert at.selectbox[0].value == "rafdb" and not at.exception and not at.error
    assert any(str(root) in c.value for c in at.caption)
    counts = next(f for f in charts_on(at) if f["layout"]["title"]["text"] == "Faces per class and split")
    shown = {t["name"].split(" ")[0]: dict(zip(t["x"], t["y"], strict=True)) for t in counts["data"]}
    expected = {s: dict(zip(ds.classes, browse.class_counts(ds).tolist(), strict=True))
                for s in ("train", "val", "test") for ds in [build_dataset("rafdb", split=s)]}
    assert shown == expected
    assert at.radio(key="datasets.subset").options == ["occlusion"]
    assert any("occlusion list matching no test image: 1 (e.g. test_0999)" in w.value for w in at.warning)
    at.text_input(key="datasets.options").input("{val_fraction: 0.3}").run()
    assert not at.exception and any("val: 3 faces" in c.value for c in at.caption)
    at.text_input(key="datasets.options").input("{colour: true}").run()
    assert any("unknown option(s) colour for rafdb" in e.value for e in at.error)


# --------------------------------------------------------------------------------------------- SCN page
def test_scn_page_shows_weights_faces_and_relabels(runs_root: Path, scn_run: Path):
    copy_run(scn_run, runs_root, SCN_RUN_ID)
    at = app(SCN)
    assert at.selectbox[0].value == SCN_RUN_ID and not at.error and not at.warning
    assert [s.value for s in at.subheader] == ["Importance weights", "Faces SCN trusts least and most",
                                               "Relabel events"]
    assert at.select_slider[0].value == 3  # the last epoch, 1-based as in metrics.jsonl

    figures = charts_on(at)
    hist = figures[0]
    classes = list(build_dataset("synthfaces", split="train", **{"image_size": 32, "train_size": 64}).classes)
    titles = [a["text"].split(" (")[0] for a in hist["layout"]["annotations"]]
    assert titles == classes
    assert {t["type"] for t in hist["data"]} == {"histogram"}
    assert sum(len(array(t["x"])) for t in hist["data"]) == 64  # every training face, once
    weights = attention.read_scn_weights(scn_run, 2)
    assert np.allclose(np.sort(np.concatenate([array(t["x"]) for t in hist["data"]])), np.sort(weights["weight"]))

    low, high = image_element(at, f"{weights['weight'].min():.3f}"), image_element(at, f"{weights['weight'].max():.3f}")
    assert len(low.value) == len(high.value) == 8
    low_w = [float(c.split(" · ")[0]) for c in low.captions]
    assert low_w == sorted(low_w) and max(low_w) <= min(float(c.split(" · ")[0]) for c in high.captions)

    metrics = io.read_metrics(scn_run)
    logged = {k: sum(m[k] for m in metrics) for k in ("scn_relabelled", "scn_relabel_fixed", "scn_relabel_broke")}
    assert logged["scn_relabelled"] > 0, "the tiny run should relabel something"
    shown = {m.label: int(m.value.replace(",", "")) for m in at.metric if m.label in ("Relabelled", "Fixed", "Broke")}
    assert shown == {"Relabelled": logged["scn_relabelled"], "Fixed": logged["scn_relabel_fixed"],
                     "Broke": logged["scn_relabel_broke"]}
    events = at.dataframe[-1].value
    assert list(events.columns) == ["epoch", "index", "from", "to", "clean label", "result"]
    assert len(events) == logged["scn_relabelled"] and set(events["epoch"]) <= {2, 3}
    assert (events["result"] == "fixed").sum() == logged["scn_relabel_fixed"]
    assert (events["result"] == "broke").sum() == logged["scn_relabel_broke"]
    assert set(events["from"]) | set(events["to"]) <= set(classes)
    assert any("Same counts as metrics.jsonl" in c.value for c in at.caption)

    at.select_slider[0].set_value(1).run()  # epoch 1: before any relabel
    assert not at.exception
    assert any(c.value.startswith("Epoch 1:") for c in at.caption)


def test_scn_page_without_scn_runs_says_how_to_train_one(runs_root: Path, smoke_run: tuple[Path, dict]):
    copy_run(smoke_run[0], runs_root, "20260101-000000-smoke-0002")  # a small CNN run (configs/smoke.yaml): not SCN
    at = app(SCN)
    assert not at.selectbox
    assert any("configs/synth/scn.yaml" in i.value and "No Self-Cure Network runs" in i.value for i in at.info)
    assert (ROOT / "configs" / "synth" / "scn.yaml").exists()


# --------------------------------------------------------------------------------------------- fer_core helpers
def test_scn_summary_and_relabels_match_the_metrics(scn_run: Path):
    summary = attention.scn_epoch_summary(scn_run)
    relabels = attention.read_scn_relabels(scn_run)
    metrics = io.read_metrics(scn_run)
    assert summary["epoch"].tolist() == [m["epoch"] for m in metrics] == [1, 2, 3]
    for row, m in zip(summary.to_dict("records"), metrics, strict=True):
        assert (row["relabelled"], row["fixed"], row["broke"]) == (
            m["scn_relabelled"], m["scn_relabel_fixed"], m["scn_relabel_broke"])
        assert row["label_noise"] == pytest.approx(m["scn_label_noise"])
        assert row["weight_noisy"] == pytest.approx(m["scn_weight_noisy"], abs=1e-4)
        assert row["weight_clean"] == pytest.approx(m["scn_weight_clean"], abs=1e-4)
        assert row["seen"] == 64 and row["weight_low"] < row["weight_high"]
    assert not (relabels["fixed"] & relabels["broke"]).any()
    assert (relabels["fixed"] == (relabels["new_label"] == relabels["clean_label"])).all()

    last = attention.scn_samples(scn_run)  # the latest epoch
    first = attention.scn_samples(scn_run, 0)
    assert (last["initial_label"] == first["initial_label"]).all()  # relabelling never changes the start
    assert (first["label"] == first["initial_label"]).all()  # epoch 0 (file numbering) relabels nothing here
    assert last["relabelled"].sum() == (last["label"] != last["initial_label"]).sum() > 0
    config = load_config(scn_run / "config.yaml")
    ds = build_dataset("synthfaces", split="train", **config.data.options)
    assert (first["clean_label"].to_numpy() == ds.clean_labels).all()
    assert 0 < first["noisy"].mean() < 0.6  # 30% injected noise on 64 faces


def test_scn_helpers_on_a_run_without_scn_files(tmp_path: Path):
    assert attention.scn_epochs(tmp_path) == []
    assert attention.scn_epoch_summary(tmp_path).empty
    assert list(attention.read_scn_relabels(tmp_path).columns) == ["epoch", "index", "old_label", "new_label",
                                                                   "clean_label", "fixed", "broke"]


def test_compose_face_follows_the_chosen_action_units_pose_and_occluder():
    happy = compose_face({"6": 0.8, "12": 1.0}, subject=700, image_size=64)
    again = compose_face({"6": 0.8, "12": 1.0}, subject=700, image_size=64)
    assert happy.image.shape == (64, 64, 3) and happy.image.dtype == np.uint8
    assert np.array_equal(happy.image, again.image)  # a pure function of its arguments
    assert happy.classes[int(happy.label_dist.argmax())] == "happy" and happy.mask.sum() > 0
    rest = compose_face({}, subject=700, image_size=64)
    assert not np.array_equal(rest.image, happy.image)
    assert rest.classes[int(rest.label_dist.argmax())] == "neutral"
    turned = compose_face({"6": 0.8, "12": 1.0}, subject=700, image_size=64, yaw=45)
    assert not np.array_equal(turned.image, happy.image)
    masked = compose_face({"6": 0.8, "12": 1.0}, subject=700, image_size=64, occluder="mask")
    assert masked.occluder_mask.sum() > 0 and masked.mask.sum() < happy.mask.sum()
    assert len(compose_face({}, label_set="basic8", image_size=32).label_dist) == 8
    assert set(AU_INDEX) == set(AUS)
    with pytest.raises(ValueError, match="unknown action unit.*99.*valid"):
        compose_face({"99": 0.5})
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        compose_face({"12": 1.5})
    with pytest.raises(ValueError, match="unknown occluder 'scarf'"):
        compose_face({}, occluder="scarf")


def test_browse_counts_and_picks_faces_per_class():
    ds = build_dataset("synthfaces", split="val", **SYNTH)
    counts = browse.class_counts(ds)
    assert counts.tolist() == np.bincount(ds.labels, minlength=7).tolist() and counts.sum() == len(ds)
    picks = browse.per_class_indices(ds, 3, seed=0)
    assert sorted(picks) == list(range(7))
    for k, idx in picks.items():
        assert len(idx) == min(3, counts[k]) and idx == sorted(idx)
        assert all(ds.labels[i] == k for i in idx)
    assert picks == browse.per_class_indices(ds, 3, seed=0)
    face = browse.face(ds, picks[1][0])
    assert face["image"].shape == (32, 32, 3) and face["class_name"] == ds.classes[1]
    assert face["mask"].shape == (32, 32) and len(face["pose"]) == 3 and "occluder" in face
    with pytest.raises(ValueError, match="per_class"):
        browse.per_class_indices(ds, 0)


# --------------------------------------------------------------------------------------------- app.charts
def test_face_tiles_caption_faces_and_tint_masks():
    face = np.full((8, 8, 3), 100, np.uint8)
    mask = np.zeros((8, 8), np.uint8)
    mask[:4] = 1
    faces = [{"image": face, "class_name": "happy", "label": 1, "clean_label": 2, "mask": mask, "pose": (-31.6, 0, 0),
              "occluder": "sunglasses"},
             {"image": face, "class_name": "sad", "label": 2, "clean_label": 2, "mask": mask, "pose": (4.2, 0, 0),
              "occluder": "none"}]
    images, captions = charts.face_tiles(faces, ["neutral", "happy", "sad"])
    assert captions == ["happy (clean: sad)", "sad"] and all(img is face for img in images)
    images, captions = charts.face_tiles(faces, ["neutral", "happy", "sad"], masks=True, details=True)
    assert captions == ["happy (clean: sad) · yaw -32° · sunglasses", "sad · yaw +4°"]
    red, grey = images[0][:4].reshape(-1, 3), images[0][4:].reshape(-1, 3)  # the mask's rows, the others
    assert (red[:, 0] > red[:, 1]).all() and (grey[:, 0] == grey[:, 1]).all(), "the mask is tinted red"


def test_scn_figures_from_plain_frames():
    import pandas as pd

    samples = pd.DataFrame({"label": [0, 0, 1, 2], "weight": [0.1, 0.9, 0.5, np.nan],
                            "group": ["low", "high", "high", "low"], "noisy": [True, False, False, False]})
    by_group = charts.scn_weight_histograms(samples, ["a", "b", "c"], "group")
    assert [a.text for a in by_group.layout.annotations] == ["a (2)", "b (1)", "c (1)"]
    assert sorted(v for t in by_group.data for v in t.x) == [0.1, 0.5, 0.9]  # the face without a weight is left out
    assert [t.name for t in by_group.data if t.showlegend] == ["high-importance group", "low-importance group"]
    by_noise = charts.scn_weight_histograms(samples, ["a", "b", "c"], "noise")
    assert {t.marker.color for t in by_noise.data} == set(charts.NOISE_COLORS.values())
    summary = pd.DataFrame({"epoch": [1, 2], "weight_high": [0.8, 0.9], "weight_low": [0.3, 0.2],
                            "weight_clean": [0.7, 0.8], "weight_noisy": [0.4, 0.3], "relabelled": [0, 5],
                            "fixed": [0, 3], "broke": [0, 1]})
    assert len(charts.scn_weight_curves(summary, noisy=False).data) == 2
    assert [t.name for t in charts.scn_weight_curves(summary, noisy=True).data][:2] == [
        "faces with a clean label", "faces with injected noise"]
    bars = charts.scn_relabel_bars(summary)
    assert {t.name: list(t.y) for t in bars.data} == {"fixed": [0, 3], "broke": [0, 1], "still wrong": [0, 1]}
    counts = charts.class_counts({"train": np.array([3, 1]), "test": np.array([0, 2])}, ("x", "y"))
    assert [t.name for t in counts.data] == ["train (4)", "test (2)"] and list(counts.data[1].y) == [0, 2]
