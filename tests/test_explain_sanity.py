"""Sanity checks of explanation methods (fer_core.explain.sanity, ``explain-sanity``): which weights each
randomisation touches, the similarity measures, a method that ignores the model failing and a gradient method on a
trained model doing better, label shuffling, the CLI's files and the Explain page's verdicts.

Models are the tiny smoke run (32 px small CNN, 2 epochs) or a shrunk small CNN; 2-3 faces, 2-3 methods.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from apphelpers import app

from fer_core.cli import main
from fer_core.config import load_config
from fer_core.explain import core, register_method
from fer_core.explain.sanity import (
    RESULTS_PATH,
    layer_groups,
    load_report,
    map_similarity,
    method_verdicts,
    randomisation_steps,
    randomize,
    read_results,
    record_verdicts,
    sanity_check,
)
from fer_core.losses import shuffle_labels
from fer_core.models import create_model
from fer_core.runs import load_run_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


@pytest.fixture
def trained_like() -> torch.nn.Module:
    """A tiny small CNN whose parameters and BatchNorm statistics are all moved away from their initial values
    (as training would), so a re-initialisation visibly changes every one of them."""
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=7, widths=(4, 8, 8, 8)).eval()
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(torch.rand_like(t) + 0.5)
    return model


def _faces(n: int = 3, size: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        cv2.circle(img, tuple(int(v) for v in rng.integers(10, size - 10, 2)), int(rng.integers(5, 12)),
                   tuple(int(v) for v in rng.integers(60, 255, 3)), -1)
        out.append(img)
    return out


def _owner(name: str, groups: list[str]) -> str | None:
    return next((g for g in groups if name.startswith(g + ".")), None)


# --------------------------------------------------------------------------------------------- randomisation
def test_layer_groups_of_the_small_cnn_and_mini_xception_top_first(trained_like):
    assert [(g.name, g.kind) for g in layer_groups(trained_like)] == [
        ("fc", "Linear"), ("blocks.3", "ConvBlock"), ("blocks.2", "ConvBlock"), ("blocks.1", "ConvBlock"),
        ("blocks.0", "ConvBlock")]
    assert sum(g.params for g in layer_groups(trained_like)) == sum(p.numel() for p in trained_like.parameters())
    mini = create_model("mini_xception_fer2013", num_classes=7, pretrained=False)
    assert [g.name for g in layer_groups(mini)] == [
        "head_conv", "stages.3", "stages.2", "stages.1", "stages.0", "stem.bn2", "stem.conv2", "stem.bn1",
        "stem.conv1"]


def test_cascade_and_independent_steps_change_exactly_their_groups(trained_like):
    before = {k: v.clone() for k, v in trained_like.state_dict().items()}
    groups = layer_groups(trained_like)
    names = [g.name for g in groups]
    steps = randomisation_steps(groups)
    cascade = [s for s in steps if s.mode == "cascade"]
    independent = [s for s in steps if s.mode == "independent"]
    assert [s.groups for s in cascade] == [tuple(names[:k]) for k in range(1, len(names) + 1)]
    assert [s.groups for s in independent] == [(n,) for n in names] and cascade[-1].label == "all"
    for step in steps:
        state = randomize(trained_like, step.groups, seed=3).state_dict()
        for key, value in state.items():
            owner = _owner(key, names)
            if key.endswith("num_batches_tracked"):
                continue
            if owner in step.groups:
                assert not torch.equal(value, before[key]), (step, key)
            else:
                assert torch.equal(value, before[key]), (step, key)  # bitwise
        bn = dict(randomize(trained_like, step.groups).named_modules())
        for g in step.groups:
            for m in bn[g].modules():
                if isinstance(m, torch.nn.BatchNorm2d):  # running statistics reset too
                    assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
                    assert torch.equal(m.running_var, torch.ones_like(m.running_var))
    # the same group gets the same random weights in every step it is part of (seeded per group)
    a = randomize(trained_like, ["fc"], seed=1).fc.weight
    b = randomize(trained_like, ["fc", "blocks.3"], seed=1).fc.weight
    c = randomize(trained_like, ["fc"], seed=2).fc.weight
    assert torch.equal(a, b) and not torch.equal(a, c)
    after = trained_like.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # the original is never modified
    with pytest.raises(ValueError, match="unknown layer group.*fc, blocks.3"):
        randomize(trained_like, ["blocks.9"])


# --------------------------------------------------------------------------------------------- similarity
def test_map_similarity_on_hand_made_maps():
    rng = np.random.default_rng(0)
    m = rng.random((32, 32)).astype(np.float32)
    same = map_similarity(m, m, signed=True)
    assert same["spearman_abs"] == pytest.approx(1.0) and same["spearman_signed"] == pytest.approx(1.0)
    assert same["ssim"] == pytest.approx(1.0)
    flipped = map_similarity(m, 1 - m)  # ranks exactly reversed
    assert flipped["spearman_abs"] == pytest.approx(-1.0) and np.isnan(flipped["spearman_signed"])
    signed = np.linspace(-1, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    mirror = map_similarity(signed, -signed, signed=True)  # same magnitudes, opposite signs
    assert mirror["spearman_abs"] == pytest.approx(1.0) and mirror["spearman_signed"] == pytest.approx(-1.0)
    noise = map_similarity(m, rng.random((32, 32)).astype(np.float32))
    assert abs(noise["spearman_abs"]) < 0.1 and noise["ssim"] < 0.2
    zeros = np.zeros((32, 32), np.float32)
    assert map_similarity(zeros, zeros)["spearman_abs"] == 1.0 and map_similarity(m, zeros)["spearman_abs"] == 0.0
    assert map_similarity(m, m, size=(16, 16))["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same shape"):
        map_similarity(m, m[:10])


# --------------------------------------------------------------------------------------------- the check
@pytest.fixture
def edges_method():
    """A registered method that ignores the model: the Sobel edge magnitude of the image (test only)."""
    def edges(inputs, targets, **_options):
        grey = cv2.cvtColor(inputs.image, cv2.COLOR_RGB2GRAY) if inputs.image.ndim == 3 else inputs.image
        g = grey.astype(np.float32)
        mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
        return np.repeat(mag[None], len(targets), axis=0), {}

    register_method("test_edges", edges, family="activation", library="fer_core", per_class=False)
    yield "test_edges"
    del core._METHODS["test_edges"]


def test_a_method_that_ignores_the_model_fails_and_saliency_does_better(finished_run, edges_method):
    model = load_run_model(finished_run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    faces = _faces()
    report = sanity_check(model, faces, ["saliency", edges_method], shuffled=load_run_model(finished_run))
    edges, sal = report.verdicts[edges_method], report.verdicts["saliency"]
    assert not edges.passed and edges.label == "failed"
    assert edges.means["cascade"] == {"spearman_abs": pytest.approx(1.0), "ssim": pytest.approx(1.0)}
    assert "fully randomised model: mean |rho| 1.00 >= 0.5" in edges.reason
    # the "shuffled" model here is the model itself: identical maps, so even saliency fails that half
    assert sal.means["shuffled"]["spearman_abs"] == pytest.approx(1.0) and not sal.passed
    assert sal.means["cascade"]["spearman_abs"] < edges.means["cascade"]["spearman_abs"] - 0.3
    assert sal.means["cascade"]["ssim"] < 0.5
    s = report.summary
    assert len(s) == 2 * (2 * len(report.groups) + 1) and set(s["n"]) == {len(faces)}
    assert len(report.records) == len(s) * len(faces)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)  # never modified
    without = sanity_check(model, faces[:1], ["saliency"], modes=("cascade",))
    assert without.verdicts["saliency"].checks == ("cascade",)
    assert without.verdicts["saliency"].label in ("passed (model randomisation only)", "failed")
    with pytest.raises(ValueError, match="lack 'cascade'"):
        sanity_check(model, faces, ["saliency"], modes=("independent",))
    with pytest.raises(ValueError, match="unknown explanation method"):
        sanity_check(model, faces, ["nope"])


def test_recorded_verdicts_round_trip(finished_run, tmp_path):
    model = load_run_model(finished_run)
    report = sanity_check(model, _faces(2), ["gradcam"], modes=("cascade",))
    path = record_verdicts(report, "smoke", "smoke run on shapes", "cmd", tmp_path / "v.json")
    record_verdicts(report, "other", "another model", "cmd2", path)
    data = read_results(path)
    assert set(data["models"]) == {"smoke", "other"}
    assert [v["description"] for v in method_verdicts("gradcam", data)] == ["smoke run on shapes", "another model"]
    assert [v["label"] for v in method_verdicts("gradcam", data)] == ["smoke", "other"]  # the key without a label
    assert method_verdicts("lime", data) == []
    path.write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_results(path)


# --------------------------------------------------------------------------------------------- shuffled labels
def test_shuffle_labels_is_a_seeded_permutation():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 6] * 10)
    a, b, c = shuffle_labels(labels, 1), shuffle_labels(labels, 1), shuffle_labels(labels, 2)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, labels)
    assert torch.equal(torch.sort(a).values, torch.sort(labels).values)  # the same multiset
    assert torch.equal(labels, torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 4, 5, 6, 6] * 10))  # input untouched


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory) -> Path:
    from fer_core.train import train

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg["data"]["shuffle_labels"] = True
    run_dir = tmp_path_factory.mktemp("shuffled") / "smoke-shuffled"
    assert train(cfg, run_dir)["state"] == "done"
    return run_dir


def test_shuffled_training_uses_permuted_labels_and_records_it(shuffled_run):
    from fer_core.train import _load_training_data

    cfg = load_config(shuffled_run / "config.yaml")
    assert cfg.data.shuffle_labels is True  # recorded in the run's config
    data, _x, _y = _load_training_data(cfg, torch.device("cpu"))
    assert torch.equal(torch.sort(data.labels).values, torch.sort(data.clean_labels).values)
    assert (data.labels != data.clean_labels).float().mean() > 0.5
    again, _x, _y = _load_training_data(cfg, torch.device("cpu"))
    assert torch.equal(again.labels, data.labels)  # the run seed fixes the permutation
    assert "training labels shuffled" in (shuffled_run / "log.txt").read_text()


# --------------------------------------------------------------------------------------------- CLI and page
def test_cli_writes_its_files(finished_run, shuffled_run, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["explain-sanity", str(finished_run), "--n", "2", "--methods", "saliency,gradcam", "--shuffled",
                 str(shuffled_run), "--sheets", "1", "--out", str(out), "--record", str(tmp_path / "rec.json"),
                 "--quiet"])
    assert code == 0
    for name in ("sanity.md", "sanity.json", "sanity_faces.csv", "sanity_sheet_0.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "sanity.json").read_text())
    assert set(report["verdicts"]) == {"saliency", "gradcam"} and report["faces"] == 2
    assert report["verdicts"]["gradcam"]["checks"] == ["cascade", "shuffled"]
    again = load_report(out)  # the same verdicts from the per-face rows
    assert {m: v.to_dict() for m, v in again.verdicts.items()} == report["verdicts"]
    text = (out / "sanity.md").read_text()
    assert "| saliency | **" in text and "--shuffled smoke-shuffled" in text and "SynthFACS test faces" in text
    sheet = cv2.imread(str(out / "sanity_sheet_0.png"))
    assert sheet.shape[0] == 20 + 2 * 96 and sheet.shape[1] == 6 * 96 + 110  # header + 2 methods; 6 tiles + name
    recorded = read_results(tmp_path / "rec.json")["models"]
    assert set(recorded) == {finished_run.name}
    assert recorded[finished_run.name]["label"] == f"small_cnn on synthfaces ({finished_run.name})"
    assert main(["explain-sanity", str(finished_run), "--shuffled", str(finished_run), "--out", str(out)]) == 2
    assert "was not trained with data.shuffle_labels" in capsys.readouterr().err
    assert main(["explain-sanity", "no-such-run", "--out", str(out)]) == 2


def test_explain_page_shows_verdicts_and_randomised_maps(runs_root):
    methods = ["saliency", "gradcam"]
    at = app("../pages/explain.py", {"explain.source": "SynthFACS test face", "explain.index": 1,
                                     "explain.methods": methods})
    assert "Sanity checks" in at.subheader[-1].value
    table = next(d.value for d in at.dataframe if list(d.value.columns)[0] == "method" and "mass" not in d.value)
    assert list(table["method"]) == methods
    expected = read_results(RESULTS_PATH)
    for method, row in zip(methods, table.to_dict(orient="records"), strict=True):
        found = method_verdicts(method, expected)
        cells = {v for k, v in row.items() if k != "method"}
        assert cells == ({v["verdict"] for v in found} if found else {"not checked"}), row
    assert any("EXPLANATIONS.md" in c.value for c in at.caption)
    numbers = next(e for e in at.expander if e.label == "The numbers behind the verdicts").markdown[0].value
    for method in methods:
        for v in method_verdicts(method, expected):
            m = v["means"]["cascade"]
            assert f"**{method}** on {v['label']}: all layers random: mean |rho| {m['spearman_abs']:.2f}" in numbers
    at.toggle(key="explain.randomised").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="explain.randomised_method").select("gradcam").run()
    captions = [c for el in at.image for c in el.captions]
    assert any(c.startswith("trained model ·") for c in captions), captions
    assert any(c.startswith("all layers random ·") for c in captions)
    assert sum("random ·" in c for c in captions) == 3
