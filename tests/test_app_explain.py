"""AppTest tests of the Explain and Filters pages, and of the fer_core helpers they use (layers, crop explanations,
display tiles).

The pages run with the pretrained mini-Xception (64x64 grey, milliseconds per face) on SynthFACS test faces, a
corrupt upload and an upload of noise; settings are preset in ``session_state`` (few methods, few gradient-ascent
steps, tiny images) so each test takes seconds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from apphelpers import app, array, charts_on, copy_run
from PIL import Image
from streamlit.testing.v1 import AppTest

from fer_core.explain import explain, feature_layers, method_info, stage_layers
from fer_core.explain.render import draw_boxes, enlarge, mask_tile, outline, overlay_tile
from fer_core.models import create_model
from fer_core.predict import Predictor

EXPLAIN = "../pages/explain.py"
FILTERS = "../pages/filters.py"
MINI_CLASSES = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def images(at: AppTest) -> list[tuple[int, list[str]]]:
    """Every st.image element on the page: (number of images, captions)."""
    return [(len(el.value), el.captions) for el in at.image]


def png(array_: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array_).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------- Explain page
def test_explain_page_without_a_face_says_what_to_do(runs_root: Path):
    at = app(EXPLAIN)
    assert [t.value for t in at.title] == ["Explain a face"]
    assert at.selectbox[0].value == "model:mini_xception_fer2013"
    assert at.radio[0].value == "Upload a photo" and len(at.file_uploader) == 1
    assert any("Upload a photo" in i.value and "SynthFACS" in i.value for i in at.info)
    assert not charts_on(at)


def test_explain_page_on_a_synthfaces_face(runs_root: Path):
    methods = ["saliency", "gradcam", "scorecam_fast"]
    at = app(EXPLAIN, {"explain.source": "SynthFACS test face", "explain.subset": "occlusion",
                          "explain.index": 2, "explain.methods": methods})
    assert not at.error, [e.value for e in at.error]
    (chart,) = charts_on(at)
    bars = chart["data"][0]
    assert list(bars["y"]) == MINI_CLASSES  # 7 class names, the model's order
    probs = array(bars["x"])
    assert probs.shape == (7,) and abs(probs.sum() - 100) < 0.1 and probs.min() >= 0
    assert chart["layout"]["xaxis"]["title"]["text"] == "probability (%)"
    assert any("True class" in m.value for m in at.markdown)

    captions = [c for _n, caps in images(at) for c in caps]
    for method in methods:
        assert sum(c.startswith(f"{method} ·") for c in captions) == 1, captions
    assert any(c.startswith("the face") for c in captions)
    assert any("ground-truth relevance mask" in c for c in captions)

    table = at.dataframe[0].value
    assert list(table["method"]) == [*methods, "random map (chance)"]
    assert set(table["pointing"][:-1]) <= {"hit", "miss"}
    assert ((table["mass"] >= 0) & (table["mass"] <= 100)).all()
    assert ((table["rank"] >= 0) & (table["rank"] <= 100)).all()

    at.selectbox(key="explain.target").select("surprise").run()  # another class: the maps follow it
    assert not at.exception
    captions = [c for _n, caps in images(at) for c in caps]
    assert any(c.startswith("gradcam · surprise") for c in captions), captions
    assert any(h.value.startswith("Explanations for surprise") for h in at.subheader)


def test_explain_page_reports_a_corrupt_upload(runs_root: Path):
    at = app(EXPLAIN)
    at.file_uploader[0].set_value(("holiday.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG", "image/jpeg")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.error) == 1 and "holiday.jpg" in at.error[0].value and "Upload a JPEG" in at.error[0].value
    assert not charts_on(at)


def test_explain_page_offers_the_whole_image_when_there_is_no_face(runs_root: Path):
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    at = app(EXPLAIN, {"explain.methods": ["gradcam"]})
    at.file_uploader[0].set_value(("noise.png", png(noise), "image/png")).run()
    assert not at.exception and not at.error
    assert any("No face found" in w.value and "noise.png" in w.value for w in at.warning)
    (whole,) = [c for c in at.checkbox if c.label.startswith("Use the whole image")]
    assert whole.value is False and not charts_on(at)

    whole.check().run()
    assert not at.exception, [e.value for e in at.exception]
    (chart,) = charts_on(at)
    assert list(chart["data"][0]["y"]) == MINI_CLASSES
    captions = [c for _n, caps in images(at) for c in caps]
    assert sum(c.startswith("gradcam ·") for c in captions) == 1
    assert not [d for d in at.dataframe if "pointing" in d.value], "no mask, no localisation table"


def test_explain_page_finds_the_face_in_a_photo(runs_root: Path):
    skimage_data = pytest.importorskip("skimage.data")
    at = app(EXPLAIN, {"explain.methods": ["gradcam"]})
    at.file_uploader[0].set_value(("astronaut.png", png(skimage_data.astronaut()), "image/png")).run()
    assert not at.exception and not at.error and not at.warning
    captions = [c for _n, caps in images(at) for c in caps]
    assert "astronaut.png: 512×512 pixels" in captions
    assert any(c.startswith("the crop the model sees") for c in captions)
    assert at.metric[0].value == "happy"  # the pretrained model on a smiling face
    assert sum(c.startswith("gradcam · happy") for c in captions) == 1


def test_explain_page_with_a_finished_run_uses_its_own_test_faces(runs_root: Path, finished_run: Path):
    copy_run(finished_run, runs_root, finished_run.name)
    at = app(EXPLAIN, {"explain.source": "SynthFACS test face", "explain.methods": ["gradcam"]})
    models = at.selectbox(key="explain.model")
    assert models.options[1:] and finished_run.name in models.options[1]
    models.select(f"run:{finished_run.name}").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("small_cnn" in c.value and "RGB 32×32" in c.value for c in at.caption)
    assert at.number_input(key="explain.index").max == 95  # the run's own 96-face test split (smoke.yaml)
    (chart,) = charts_on(at)
    assert set(chart["data"][0]["y"]) == set(MINI_CLASSES)
    assert sum(c.startswith("gradcam ·") for _n, caps in images(at) for c in caps) == 1
    assert list(at.dataframe[0].value["method"]) == ["gradcam", "random map (chance)"]


# --------------------------------------------------------------------------------------------- Filters page
def test_filters_page_draws_the_requested_channels(runs_root: Path):
    at = app(FILTERS, {"filters.layers": ["stages.0", "stages.2"], "filters.channels": 3, "filters.first": 1,
                          "filters.steps": 2, "filters.size": 32})
    assert not at.error, [e.value for e in at.error]
    assert [t.value for t in at.title] == ["Filters and activations"]
    grids = [(n, caps) for n, caps in images(at) if caps and caps[0].startswith("channel")]
    assert grids == [(3, ["channel 1", "channel 2", "channel 3"])] * 2
    assert any("stages.0 (16 channels, 30x30)" in m.value for m in at.markdown)

    at.number_input(key="filters.channels").set_value(5).run()
    assert not at.exception
    assert [n for n, caps in images(at) if caps and caps[0].startswith("channel")] == [5, 5]


def test_filters_page_defaults_to_the_stages_and_shows_activations(runs_root: Path):
    at = app(FILTERS, {"filters.steps": 2, "filters.size": 32, "filters.channels": 1,
                          "filters.source": "SynthFACS test face", "filters.top_k": 4})
    assert at.multiselect(key="filters.layers").value == ["stem", "stages.0", "stages.1", "stages.2", "stages.3"]
    activation = [caps[0] for n, caps in images(at) if caps and "most active" in caps[0]]
    assert len(activation) == 5 and activation[0].startswith("stem (8 channels, 60x60): the 4 most active")


# --------------------------------------------------------------------------------------------- fer_core helpers
def test_stage_layers_follow_the_architecture():
    resnet = create_model("resnet18", num_classes=7)
    assert [layer.name for layer in stage_layers(resnet)] == ["bn1", "layer1", "layer2", "layer3", "layer4"]
    assert [(layer.channels, layer.height) for layer in stage_layers(resnet)][1:] == [(64, 56), (128, 28), (256, 14),
                                                                                    (512, 7)]
    small = create_model("small_cnn", num_classes=7)
    names = [layer.name for layer in feature_layers(small)]
    assert names[:3] == ["blocks", "blocks.0", "blocks.0.0"] and "fc" not in names  # containers first; no 1x1
    assert [layer.name for layer in stage_layers(small)] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3"]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in small.modules()), "hooks left behind"


def test_explain_crop_is_explain_on_the_crop():
    predictor = Predictor.from_model("mini_xception", pretrained=False)
    crop = np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    happy = predictor.class_names.index("happy")
    ours = predictor.explain_crop(crop, "gradcam", "happy")
    theirs = explain(predictor.model, crop, "gradcam", target=happy)
    assert ours.target == happy and ours.map.shape == (40, 40) and np.allclose(ours.map, theirs.map)
    with pytest.raises(ValueError, match="unknown class"):
        predictor.explain_crop(crop, "gradcam", "bored")
    assert method_info("gradcam").per_class


def test_display_tiles():
    face = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    assert enlarge(face, 96).shape == (96, 96, 3) and enlarge(face[..., 0], 16).shape == (16, 16, 3)
    plain = overlay_tile(face, np.ones((4, 4), np.float32), size=64)
    tile = overlay_tile(face, np.ones((4, 4), np.float32), size=64, mask=mask)
    assert tile.shape == plain.shape == (64, 64, 3)
    assert (tile.astype(int) - plain).max() > 100, "the mask is outlined in white"
    assert (tile[32, 32] == plain[32, 32]).all() and (tile[2, 2] == plain[2, 2]).all(), "only its border"
    shaded = mask_tile(face, mask, size=64)
    assert shaded[32, 32].tolist() == [100] * 3 and shaded[2, 2].tolist() == [35] * 3  # outside dimmed
    lined = outline(face, mask)
    assert (lined != face).any() and (lined[0, 0] == face[0, 0]).all()
    boxed = draw_boxes(np.zeros((100, 100, 3), np.uint8), [(20, 30, 40, 40), (60, 5, 20, 20)], selected=1)
    assert tuple(boxed[50, 20]) == (0, 200, 83) and tuple(boxed[15, 60]) == (255, 193, 7)
    with pytest.raises(ValueError, match="2 boxes"):
        draw_boxes(boxed, [(0, 0, 5, 5), (1, 1, 5, 5)], ["one"])
