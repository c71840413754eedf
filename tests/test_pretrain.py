"""Pretraining the offline way: the ``synthfaces_pretrain`` data set (subjects no FER split uses), a pretraining run
that is an ordinary run, and ``model.init_from`` starting each seed method's backbone from it, strictly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from apphelpers import app, charts_on, ok

from fer_core import io, lifecycle, runs
from fer_core.config import ConfigError, load_config
from fer_core.data import build_dataset, dataset_classes, materialize
from fer_core.data.synthfaces.dataset import SUBJECT_RANGES
from fer_core.data.synthfaces_pretrain import FIRST_SUBJECT
from fer_core.models.weights import WeightsMismatchError, backbone_state, read_state_dict
from fer_core.train import train

SUBJECTS = 120  # more than 100 classes: the pages' many-class paths
PRE_DATA = {"name": "synthfaces_pretrain", "options": {"subjects": SUBJECTS, "image_size": 16, "train_size": 240,
                                                        "val_size": 120, "test_size": 120}}
FER_DATA = {"name": "synthfaces", "options": {"image_size": 32, "train_size": 32, "val_size": 16, "test_size": 16}}
TINY_TRAIN = {"epochs": 1, "batch_size": 16, "augment": {"hflip": False, "crop_padding": 0}}
SMALL = {"backbone": "small_cnn"}


# --------------------------------------------------------------------------------------------- the data set
def test_pretraining_subjects_never_appear_in_a_fer_split():
    assert FIRST_SUBJECT == 830 and max(hi for _, hi in SUBJECT_RANGES.values()) == FIRST_SUBJECT
    opts = {"subjects": 50, "image_size": 16, "train_size": 200, "val_size": 100, "test_size": 100}
    fer = {"image_size": 16, "train_size": 200, "val_size": 100, "test_size": 100}
    fer_subjects = {int(build_dataset("synthfaces", split=s, **fer).meta(i).subject)
                    for s in ("train", "val", "test") for i in range(100)}
    for split in ("train", "val", "test"):
        ds = build_dataset("synthfaces_pretrain", split=split, **opts)
        subjects = {int(ds[i]["subject"]) for i in range(len(ds))}
        assert subjects == set(range(830, 880)), "every split holds every pretraining subject, and only them"
        assert not subjects & fer_subjects and max(fer_subjects) < 830
        assert ds.labels.tolist() == [s - 830 for s in ds.subjects.tolist()]


def test_identity_task_classes_and_splits_of_the_same_subjects():
    opts = {"subjects": 12, "image_size": 32, "train_size": 48, "val_size": 12, "test_size": 12}
    train_ds = build_dataset("synthfaces_pretrain", split="train", **opts)
    val_ds = build_dataset("synthfaces_pretrain", split="val", **opts)
    assert train_ds.classes == tuple(f"s{830 + k:04d}" for k in range(12)) == dataset_classes(
        "synthfaces_pretrain", opts)
    assert np.bincount(train_ds.labels).tolist() == [4] * 12 and train_ds.num_classes == 12
    assert val_ds.classes == train_ds.classes and val_ds.labels.tolist() == list(range(12))
    # sample 0 of train and of val: the same subject in two different pictures
    assert train_ds[0]["subject"] == val_ds[0]["subject"] == 830
    assert not torch.equal(train_ds[0]["image"], val_ds[0]["image"])
    assert train_ds.meta(0).spec.identity is val_ds.meta(0).spec.identity
    assert train_ds.subsets == () and train_ds.label_dists is None and "label_dist" not in train_ds[0]


def test_expression_task_is_clean_faces_with_the_expression_classes():
    ds = build_dataset("synthfaces_pretrain", split="train", task="expression", subjects=20, image_size=32,
                       train_size=300)
    assert ds.classes == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger")
    assert {ds.meta(i).spec.occluder for i in range(len(ds))} == {"none"}
    assert max(abs(ds.meta(i).spec.yaw) for i in range(len(ds))) <= 30
    assert len(set(ds.labels.tolist())) == 7 and ds.label_dists.shape == (300, 7)
    assert set(ds.subjects.tolist()) == set(range(830, 850))
    assert dataset_classes("synthfaces_pretrain", {"task": "expression", "label_set": "basic8"})[-1] == "contempt"


def test_faces_are_a_pure_function_of_the_options_and_cached_apart_from_synthfaces(tmp_path, monkeypatch):
    opts = {"subjects": 10, "image_size": 24, "val_size": 40}
    a = build_dataset("synthfaces_pretrain", split="val", **opts)
    first = [a.render(i)[0] for i in range(5)]
    b = build_dataset("synthfaces_pretrain", split="val", **{**opts, "val_size": 5})  # other split sizes
    assert all(np.array_equal(x, b.render(i)[0]) for i, x in enumerate(first))
    other_seed = build_dataset("synthfaces_pretrain", split="val", **{**opts, "seed": 1})
    assert not np.array_equal(first[0], other_seed.render(0)[0])
    monkeypatch.setenv("FER_CACHE_DIR", str(tmp_path))
    images, labels = materialize(a)
    again, _ = materialize(build_dataset("synthfaces_pretrain", split="val", **opts))
    assert torch.equal(images, again) and labels.tolist() == a.labels.tolist()
    assert np.array_equal(images[3].permute(1, 2, 0).numpy(), first[3])
    assert [p.name for p in tmp_path.iterdir()] == ["synthfaces_pretrain"]  # its own cache folder
    assert len(list((tmp_path / "synthfaces_pretrain").iterdir())) == 1


def test_bad_options_name_the_option():
    for options, words in (({"task": "faces"}, "task='faces'"), ({"subjects": 1}, "subjects=1"),
                           ({"image_size": 8}, "image_size=8"), ({"colour": 1}, "unknown synthfaces_pretrain option")):
        with pytest.raises(ValueError, match=words):
            build_dataset("synthfaces_pretrain", **options)
    with pytest.raises(ValueError, match="needs no root"):
        build_dataset("synthfaces_pretrain", root="/tmp")


# --------------------------------------------------------------------------------------------- pretraining runs
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A runs folder with two finished identity-pretraining runs of 120 subjects: ``pre-small`` (small_cnn) and
    ``pre-patt`` (PAtt-Lite, the published variant, which takes a tiny input)."""
    root = tmp_path_factory.mktemp("pretrain") / "runs"
    root.mkdir()
    for run_id, model in (("pre-small", {"name": "small_cnn", "input_size": 16}),
                          ("pre-patt", {"name": "patt_lite", "input_size": 32})):
        cfg = load_config({"name": run_id, "data": PRE_DATA, "model": model, "train": TINY_TRAIN})
        assert lifecycle.check_launch(cfg, root) == []
        result = train(cfg, lifecycle.open_run(cfg, run_id, root))
        assert result["state"] == "done"
    return root


def fer_config(model: str, init_from: str | None, **model_keys) -> dict:
    return {"name": f"fer-{model}", "data": FER_DATA, "model": {"name": model, "input_size": 32, "init_from": init_from,
            **model_keys}, "train": TINY_TRAIN, "eval": {"subsets": ["all"]}}


def test_a_pretraining_run_is_a_run_with_its_classes_everywhere(pretrained: Path):
    run_dir = pretrained / "pre-small"
    result = json.loads((run_dir / "eval" / "test_all.json").read_text())
    assert result["class_names"][:2] == ["s0830", "s0831"] and len(result["confusion"]) == SUBJECTS
    assert list(io.read_eval(run_dir)) == ["test/all"], "no challenge subsets"
    table = pd.read_csv(run_dir / "eval" / "test_all_predictions.csv")
    assert len(table) == 120 and "prob_s0949" in table.columns and table.filter(like="prob_").shape[1] == SUBJECTS
    assert runs.checkpoint_class_names(runs.weights_path(run_dir)) == result["class_names"]
    assert runs.load_run_model(run_dir).cfg.num_classes == SUBJECTS


SEED_METHODS = [  # target model, its options, the pretraining run, input size
    ("small_cnn", {}, "pre-small", 32),
    ("scn", SMALL, "pre-small", 32),
    ("region_attention", SMALL, "pre-small", 32),
    ("patt_lite", {}, "pre-patt", 32),
    ("patt_lite_patch", {}, "pre-patt", 193),  # the smallest input with a 2x2 patch map
]


@pytest.mark.parametrize(("name", "options", "source", "size"), SEED_METHODS, ids=[m[0] for m in SEED_METHODS])
def test_the_backbone_loads_into_each_seed_method(pretrained: Path, name, options, source, size):
    cfg = load_config(fer_config(name, source, options=options, input_size=size))
    assert lifecycle.check_launch(cfg, pretrained) == []
    model = runs.model_from_config(cfg, ["neutral", "happy", "sad"])
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = runs.init_backbone(model, source, root=pretrained)
    source_state = read_state_dict(runs.weights_path(pretrained / source))
    prefix = "backbone." if name in ("scn", "region_attention") else ""
    own = model.state_dict()
    assert report.matched and report.matched == sorted(prefix + k for k in backbone_state(model))
    for key in report.matched:
        assert torch.equal(own[key], source_state[key.removeprefix(prefix)]), key
    head = {"small_cnn": {"fc.weight", "fc.bias"}, "scn": {"fc.weight", "fc.bias", "alpha.0.weight", "alpha.0.bias"},
            "region_attention": {"fc.weight", "fc.bias", "attention.0.weight", "attention.0.bias"}}
    if name in head:
        assert set(report.new) == head[name]
    else:  # PAtt-Lite: the patch block, attention and classifier are new
        assert {k.split(".")[0] for k in report.new} == {"patch", "pre_fc", "pre_bn", "attn", "head"}
    for key in report.new:
        assert torch.equal(own[key], fresh[key]), f"{key} should keep its initialisation"
    source_head = {k for k in source_state if k.startswith(("fc.", "head.", "patch.", "pre_fc.", "pre_bn.", "attn."))}
    assert set(report.dropped) == source_head and report.source.startswith(f"run {source} (")
    assert "sha256" in report.source


@pytest.mark.parametrize(("name", "options", "source", "size"), SEED_METHODS, ids=[m[0] for m in SEED_METHODS])
def test_a_run_started_from_a_pretraining_run_logs_the_load(pretrained: Path, name, options, source, size):
    cfg = load_config(fer_config(name, source, options=options, input_size=size))
    run_dir = lifecycle.open_run(cfg, f"fer-{name}", pretrained)
    assert train(cfg, run_dir)["state"] == "done"
    log = (run_dir / "log.txt").read_text()
    digest = runs._sha256(runs.weights_path(pretrained / source))
    assert f"model.init_from {source}: " in log and digest in log
    line = next(x for x in log.splitlines() if f"INFO model {name}:" in x)
    assert f"tensors from run {source} (" in line and "new (initialised):" in line and "not used:" in line
    assert io.load_yaml((run_dir / "config.yaml").read_text())["model"]["init_from"] == source


def test_a_weights_file_starts_a_backbone_with_or_without_a_wrapper_prefix(pretrained: Path, tmp_path: Path):
    from safetensors.torch import save_file

    plain = tmp_path / "small.safetensors"
    shutil.copy(runs.weights_path(pretrained / "pre-small"), plain)
    wrapped = tmp_path / "scn.safetensors"  # an SCN-shaped checkpoint: keys behind backbone.
    save_file({("backbone." + k if k.startswith("blocks.") else k): v for k, v in read_state_dict(plain).items()},
              str(wrapped))
    for target, options, path in (("scn", SMALL, plain), ("small_cnn", {}, wrapped)):
        cfg = load_config(fer_config(target, str(path), options=options))
        assert lifecycle.check_launch(cfg, pretrained) == []
        model = runs.model_from_config(cfg, ["neutral", "happy"])
        report = runs.init_backbone(model, str(path), root=pretrained)
        assert report.source.startswith(f"weights file {path}") and {"fc.weight", "fc.bias"} <= set(report.dropped)
        assert len(report.matched) == len(backbone_state(model))


def test_a_mismatched_source_is_refused_before_any_run_exists(pretrained: Path):
    def problems(**keys) -> list[str]:
        return lifecycle.check_launch(load_config(fer_config(**keys)), pretrained)

    wrong = problems(model="resnet18", init_from="pre-small")  # another backbone
    assert len(wrong) == 1 and wrong[0].startswith("model.init_from: the backbone of run pre-small (small_cnn) "
                                                   "does not fit this model's (resnet18)")
    assert "conv1.weight" in wrong[0] and "blocks.0.0.weight" in wrong[0]
    narrow = problems(model="small_cnn", init_from="pre-small", options={"widths": [16, 32, 64, 128]})
    assert "shape mismatch" in narrow[0]
    assert "blocks.0.0.weight (32, 3, 3, 3) in the source vs (16, 3, 3, 3) here" in narrow[0]
    longer = problems(model="small_cnn", init_from="pre-small", options={"widths": [32, 64, 128]})
    assert "in the source's backbone, not in this one" in longer[0], "a longer source is no silent truncation"
    other = problems(model="scn", init_from="pre-patt", options=SMALL)  # PAtt-Lite's MobileNet into SCN's small CNN
    assert other[0].startswith("model.init_from: the backbone of run pre-patt (patt_lite) does not fit this model's "
                               "(small_cnn)")
    assert "no run 'nope'" in problems(model="small_cnn", init_from="nope")[0]
    assert "does not exist" in problems(model="small_cnn", init_from="/no/such.safetensors")[0]
    running = pretrained / "pre-running"
    shutil.copytree(pretrained / "pre-small", running)
    io.write_status(running, state="failed")
    assert "run pre-running is failed; start from a finished (done) run" in problems(model="small_cnn",
                                                                                     init_from="pre-running")[0]
    shutil.rmtree(running)
    with pytest.raises(ConfigError, match="model.init_from"):
        load_config(fer_config("resnet18", "pre-small", pretrained=True))
    cfg = load_config(fer_config("resnet18", "pre-small"))
    with pytest.raises(ConfigError, match="does not fit"):
        lifecycle.open_run(cfg, "never", pretrained)
    assert not (pretrained / "never").exists()
    with pytest.raises(WeightsMismatchError, match="conv1.weight"):  # and the trainer's own load says the same
        runs.init_backbone(runs.model_from_config(cfg, ["a", "b"]), "pre-small", root=pretrained)


def test_resume_does_not_initialise_again(pretrained: Path, tmp_path: Path):
    root = tmp_path / "runs"
    shutil.copytree(pretrained / "pre-small", root / "source")
    cfg = load_config({**fer_config("small_cnn", "source"), "train": {**TINY_TRAIN, "epochs": 2}})
    run_dir = lifecycle.open_run(cfg, "fer", root)

    def stop_after_one_epoch(event: dict) -> None:
        if event["event"] == "epoch":
            raise KeyboardInterrupt  # as Ctrl-C: the run is cancelled after its first epoch's checkpoint

    assert train(cfg, run_dir, progress=stop_after_one_epoch)["state"] == "cancelled"
    after_one = read_state_dict(runs.weights_path(run_dir, "last"))
    shutil.rmtree(root / "source")  # a resumed run reads only its own checkpoint
    assert train(load_config(run_dir / "config.yaml"), run_dir, resume=True)["state"] == "done"
    log = (run_dir / "log.txt").read_text()
    assert log.count("model.init_from source:") == 1 and "resumed after epoch 1" in log
    assert [m["epoch"] for m in io.read_metrics(run_dir)] == [1, 2]
    assert not torch.equal(after_one["blocks.0.0.weight"], read_state_dict(runs.weights_path(run_dir, "last"))[
        "blocks.0.0.weight"]), "it trained on from its checkpoint"


# --------------------------------------------------------------------------------------------- the app
def test_the_train_page_offers_finished_runs_to_start_from(pretrained: Path, monkeypatch):
    monkeypatch.setenv("FER_RUNS_DIR", str(pretrained))
    at = app("../pages/train.py")
    at.selectbox(key="train.recipe").select("smoke.yaml").run()
    box = at.selectbox(key="train.form.model.init_from")
    assert box.value == "(unset)", "empty by default: the backbone starts from scratch"
    assert {"pre-small", "pre-patt"} <= set(box.options)
    box.select("pre-small").run()
    ok(at)
    assert not at.error, [e.value for e in at.error]
    assert any("init_from: pre-small" in c.value for c in at.code), "the YAML says where the backbone starts"
    at.selectbox(key="train.form.model.name").select("resnet18").run()
    assert any("model.init_from" in e.value and "does not fit" in e.value for e in at.error)


def test_the_run_page_of_a_many_class_run_stays_usable(pretrained: Path, monkeypatch):
    monkeypatch.setenv("FER_RUNS_DIR", str(pretrained))
    at = app("../pages/run.py", run="pre-small")
    figures = charts_on(at)
    heatmap = next(f for f in figures if f["data"] and f["data"][0]["type"] == "heatmap")
    assert len(heatmap["data"][0]["x"]) == SUBJECTS and heatmap["layout"]["height"] <= 900
    assert not heatmap["data"][0].get("texttemplate"), "no per-cell text on 120 x 120 cells"
    bars = next(f for f in figures if f["layout"].get("title", {}).get("text", "").startswith("Per-class recall"))
    assert len(bars["data"][0]["y"]) == 30 and "lowest of 120" in bars["layout"]["title"]["text"]


def test_the_data_sets_page_shows_a_few_of_many_classes(runs_root: Path):
    at = app("../pages/datasets.py", dataset="synthfaces_pretrain")
    assert at.selectbox[0].value == "synthfaces_pretrain" and not at.error
    assert any("The first 12 of 300 classes" in c.value for c in at.caption)
    assert any("defines no challenge subsets" in i.value for i in at.info)


def test_class_charts_degrade_sensibly_with_many_classes():
    from app import charts

    names = [f"s{830 + k:04d}" for k in range(150)]
    counts = np.eye(150, dtype=int) * 3
    counts[0, 1] = 2
    fig = charts.pickable_confusion_matrix(counts, names)
    assert fig.layout.height <= 900 and fig.data[0].texttemplate is None
    assert len(fig.data[1].x) == 151, "markers on the cells that hold faces only, not on all 22,500"
    probs = {c: 1.0 / (k + 2) for k, c in enumerate(names)}
    bars = charts.probabilities(probs, truth="s0979")
    assert len(bars.data[0].y) == 31 and "s0979" in bars.data[0].y  # the 30 most probable and the true class
    few = charts.confusion_matrix(np.eye(7), names[:7])
    assert few.data[0].texttemplate == "%{text}" and few.layout.height == 120 + 42 * 7, "7 classes: as before"
