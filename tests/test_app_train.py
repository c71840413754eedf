"""The Train page (AppTest) and the sweep launcher behind it, over real tiny runs trained in child processes.

Every run here is configs/smoke.yaml made smaller through the page's own form (32x32 faces, 64/32/96 samples, as
apphelpers.TINY), so all of them share one rendered copy of the data (conftest's session cache folder).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apphelpers import ROOT, TINY, app, charts_on, ok, wait_for, wait_until_stopped
from streamlit.testing.v1 import AppTest

from fer_core import io, lifecycle
from fer_core.config import ConfigError, load_config
from fer_core.data import list_datasets

TRAIN_PAGE = "../pages/train.py"  # relative to app/Home.py, as AppTest.switch_page wants it
FORM = "train.form."


def page(**query: str) -> AppTest:
    """The Train page, with query parameters ``query``."""
    return app(TRAIN_PAGE, **query)


def tiny_form(epochs: int = 2, batch_size: int = 32) -> AppTest:
    """The page with the smoke recipe made tiny through the form's inputs."""
    at = page()
    at.selectbox(key="train.recipe").select("smoke.yaml").run()
    at.number_input(key=FORM + "data.options.train_size").set_value(64)
    at.number_input(key=FORM + "data.options.val_size").set_value(32)
    at.number_input(key=FORM + "train.epochs").set_value(epochs)
    at.number_input(key=FORM + "train.batch_size").set_value(batch_size)
    ok(at.run())
    assert not at.error, [e.value for e in at.error]
    return at


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r} among {[b.label for b in at.button]}"
    return matches[0]


# --------------------------------------------------------------------------------------------- the form
def test_form_shows_the_recipe_values(runs_root: Path):
    at = page()
    recipes = at.selectbox(key="train.recipe").options
    assert {"smoke.yaml", "synth/scn.yaml", "recipes/scn_rafdb.yaml"} <= set(recipes)
    at.selectbox(key="train.recipe").select("synth/scn.yaml").run()
    ok(at)
    assert at.text_input(key=FORM + "name").value == "synth-scn"
    assert at.number_input(key=FORM + "train.epochs").value == 10
    assert at.number_input(key=FORM + "train.batch_size").value == 32
    assert at.selectbox(key=FORM + "model.name").value == "scn"
    assert at.text_input(key=FORM + "model.options.backbone").value == "small_cnn"
    assert at.text_input(key=FORM + "data.label_noise").value == "0.2"
    assert at.number_input(key=FORM + "data.options.image_size").value == 64
    assert at.selectbox(key=FORM + "train.method.name").value == "scn"
    assert at.number_input(key=FORM + "train.method.scn.relabel_epoch").value == 3
    assert at.text_input(key=FORM + "train.method.scn.beta").value == "0.7"
    assert at.selectbox(key=FORM + "train.optimizer.name").options == ["sgd", "adam", "adamw"]  # from the schema
    assert at.selectbox(key=FORM + "train.optimizer.name").value == "adam"
    assert at.text_input(key=FORM + "train.optimizer.lr").value == "0.001"
    assert at.checkbox(key=FORM + "train.optimizer.sam.enabled").value is False
    assert at.selectbox(key=FORM + "train.scheduler.name").value == "exponential"
    assert at.text_input(key=FORM + "train.scheduler.gamma").value == "0.9"
    assert at.selectbox(key=FORM + "train.device").options[0] == "cpu"
    assert not at.error
    assert any("relabel_epoch: 3" in c.value and "name: synth-scn" in c.value for c in at.code), "the YAML"

    # SAM on, a smaller rho: the YAML follows the form
    at.checkbox(key=FORM + "train.optimizer.sam.enabled").check()
    at.text_input(key=FORM + "train.optimizer.sam.rho").set_value("0.1")
    ok(at.run())
    yaml_text = next(c.value for c in at.code if "name: synth-scn" in c.value)
    sam = load_config(__import__("yaml").safe_load(yaml_text)).train.optimizer.sam
    assert sam.enabled and sam.rho == 0.1

    # pseudo labels need a finished teacher run: none yet, so the schema says it is required
    at.selectbox(key=FORM + "train.method.name").select("pseudo_label").run()
    ok(at)
    assert at.selectbox(key=FORM + "train.method.pseudo_label.teacher_run").options == []
    assert any("teacher_run" in e.value for e in at.error)
    assert any("A teacher is a finished run" in i.value for i in at.info)

    # a real-data recipe: the data set must be installed and needs its folder
    at.selectbox(key="train.recipe").select("recipes/scn_rafdb.yaml").run()
    ok(at)
    if "rafdb" in list_datasets():
        assert any("data.root" in e.value for e in at.error)
    else:
        assert any("rafdb" in w.value for w in at.warning)


def _form_only(recipe_path: str, typed: dict | None = None) -> None:
    """An app that is only the config form (app.config_form), seeded from a recipe; what it returns goes into
    session_state["values"]. ``typed``: inputs set before the form draws, as if the user had typed them."""
    import streamlit as st

    from app import config_form
    from fer_core.config import load_config

    for key, value in (typed or {}).items():
        st.session_state.setdefault(key, value)
    choices = config_form.Choices(datasets={"synthfaces": {"needs_root": False, "description": "built in"}},
                                  models={"small_cnn": "a small CNN", "scn": "SCN"}, devices=["cpu"])
    st.session_state["values"] = config_form.show(load_config(recipe_path).to_dict(), choices, key="t.form")


@pytest.mark.parametrize("recipe", ["smoke.yaml", "synth/scn.yaml"])
def test_config_form_returns_plain_data_that_is_the_recipe_until_edited(recipe: str):
    path = str(ROOT / "configs" / recipe)
    at = ok(AppTest.from_function(_form_only, args=(path,), default_timeout=60).run())
    values = at.session_state["values"]
    assert isinstance(values, dict) and set(values) >= {"name", "seed", "data", "model", "train", "eval"}
    assert load_config(values).to_dict() == load_config(path).to_dict(), "the untouched form gives the recipe back"

    typed = {"t.form.train.optimizer.lr": "1e-3", "t.form.data.options.+": "{label_set: basic8}",
             "t.form.train.scheduler.milestones": "[3, 6]"}
    at = ok(AppTest.from_function(_form_only, args=(path, typed), default_timeout=60).run())
    cfg = load_config(at.session_state["values"])
    assert cfg.train.optimizer.lr == 0.001 and cfg.data.options["label_set"] == "basic8"  # YAML 1.2: 1e-3 a number
    assert cfg.train.scheduler.milestones == [3, 6]


def test_an_invalid_value_is_named_and_nothing_launches(runs_root: Path):
    at = tiny_form()
    at.text_input(key=FORM + "train.optimizer.lr").set_value("-0.1")
    at.number_input(key=FORM + "train.epochs").set_value(0)
    ok(at.run())
    errors = " ".join(e.value for e in at.error)
    assert "train.optimizer.lr: must be > 0 (got -0.1)" in errors
    assert "train.epochs: must be > 0 (got 0)" in errors
    at.text_input(key=FORM + "train.optimizer.lr").set_value("fast")
    ok(at.run())
    assert any("train.optimizer.lr: input should be a valid number" in e.value and "'fast'" in e.value
               for e in at.error)
    button(at, "Launch training").click().run()
    ok(at)
    assert any("Nothing was launched" in e.value for e in at.error)
    assert list(runs_root.iterdir()) == [], "no run folder for an invalid config"
    assert "run" not in at.query_params


# --------------------------------------------------------------------------------------------- a run
def test_launch_trains_in_a_child_and_the_page_follows_it(runs_root: Path):
    at = tiny_form()
    button(at, "Launch training").click().run()
    ok(at)
    run_id = at.query_params["run"]
    run_dir = runs_root / run_id
    assert run_dir.is_dir() and [p.name for p in runs_root.iterdir()] == [run_id]
    assert io.read_status(run_dir)["pid"] != os.getpid(), "the app must not train in its own process"
    cfg = io.read_config(run_dir)
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["options"]["train_size"] == 64
    assert any(run_id in m.value for m in at.markdown)
    assert wait_until_stopped(run_dir) == "done"

    at.run()  # what the fragment's timer does in a browser
    ok(at)
    assert any("Finished 2 epochs" in s.value and "test accuracy" in s.value for s in at.success)
    figure = charts_on(at)[0]
    assert {t["name"] for t in figure["data"]} == {"train", "val"} and len(figure["data"]) == 4
    assert all(len(t["x"]) == 2 for t in figure["data"])

    fresh = page(run=run_id)  # a reload finds the run from the URL and its folder alone
    assert any(run_id in m.value and "green-badge[done]" in m.value for m in fresh.markdown)
    assert any("Finished 2 epochs" in s.value for s in fresh.success)

    # the finished run can now teach: it is offered as a teacher for pseudo labels
    fresh.selectbox(key=FORM + "train.method.name").select("pseudo_label").run()
    ok(fresh)
    assert fresh.selectbox(key=FORM + "train.method.pseudo_label.teacher_run").options == [run_id]
    assert not any("teacher_run" in e.value for e in fresh.error)


def test_cancel_then_resume_to_done(runs_root: Path):
    at = tiny_form(epochs=10, batch_size=8)
    button(at, "Launch training").click().run()
    ok(at)
    run_dir = runs_root / at.query_params["run"]
    assert at.get("progress"), "a queued or running run shows its progress"
    other = page()  # the page opened without ?run= lists what is training and can follow it
    assert any(f"Training now: **{run_dir.name}**" in m.value for m in other.markdown)
    button(other, "Follow").click().run()
    assert ok(other).query_params["run"] == run_dir.name and button(other, "Cancel")
    wait_for(lambda: (io.read_status(run_dir).get("epoch") or 0) >= 1, what="the first epoch")
    button(at, "Cancel").click().run()
    ok(at)
    assert wait_until_stopped(run_dir) == "cancelled"
    done_epochs = io.read_status(run_dir)["epoch"]
    assert 1 <= done_epochs < 10
    assert any("cancelled" in i.value for i in at.info)

    button(at, "Resume from the last checkpoint").click().run()
    ok(at)
    assert wait_until_stopped(run_dir) == "done"
    epochs = [m["epoch"] for m in io.read_metrics(run_dir)]
    assert epochs == list(range(1, 11)), "resumed after the last finished epoch, no epoch twice"
    at.run()
    assert any("Finished 10 epochs" in s.value for s in ok(at).success)


# --------------------------------------------------------------------------------------------- sweeps
def test_sweep_plan_of_two_values_launches_two_runs_in_one_group(runs_root: Path):
    at = tiny_form(epochs=300, batch_size=8)  # long enough to be cancelled while both run, even on a loaded machine
    at.text_input(key="train.sweep.key.0").set_value("seed")
    at.text_input(key="train.sweep.values.0").set_value("0:1")
    at.text_input(key="train.sweep.group").set_value("tiny-seeds")
    at.number_input(key="train.sweep.parallel").set_value(2)
    ok(at.run())
    plan = at.dataframe[0].value
    assert list(plan["run name"]) == ["smoke-seed0", "smoke-seed1"] and list(plan["seed"]) == ["0", "1"]
    assert list(runs_root.iterdir()) == [], "planning starts nothing"

    button(at, "Launch 2 runs").click().run()
    ok(at)
    assert at.query_params["group"] == "tiny-seeds"
    info = lifecycle.read_sweep("tiny-seeds", runs_root)
    assert info["pid"] != os.getpid() and [p["tags"] for p in info["planned"]] == [{"seed": 0}, {"seed": 1}]
    runs = wait_for(lambda: len(found := io.list_runs(runs_root, group="tiny-seeds")) == 2 and found,
                    what="both runs of the sweep to start")
    assert sorted(r["name"] for r in runs) == ["smoke-seed0", "smoke-seed1"]
    assert sorted(r["tags"]["seed"] for r in runs) == [0, 1]

    at.run()  # the group's runs appear, each with its progress and a link to its page
    ok(at)
    assert any("of 2 runs ended" in (p.proto.text or "") for p in at.get("progress"))
    assert {r["run_id"] for r in runs} <= {link.proto.label for link in at.get("page_link")}
    button(at, "Cancel the sweep").click().run()
    ok(at)
    assert not lifecycle.read_sweep("tiny-seeds", runs_root)["running"]
    assert [r["state"] for r in io.list_runs(runs_root, group="tiny-seeds")] == ["cancelled", "cancelled"]
    assert any("2 of 2 runs ended" in (p.proto.text or "") for p in at.get("progress"))
    assert not [b for b in at.button if b.label == "Cancel the sweep"]


def test_launch_sweep_validates_before_it_starts_anything(runs_root: Path):
    base = load_config(ROOT / "configs" / "smoke.yaml", TINY)
    with pytest.raises(ConfigError, match="train.optimizer.lr"):
        lifecycle.launch_sweep(base, ["train.optimizer.lr=0.1,-1"], group="bad", root=runs_root)
    with pytest.raises(ValueError, match="group name"):
        lifecycle.launch_sweep(base, ["seed=0,1"], group="../escape", root=runs_root)
    with pytest.raises(ValueError, match="parallel"):
        lifecycle.launch_sweep(base, ["seed=0,1"], parallel=0, root=runs_root)
    assert list(runs_root.iterdir()) == [], "an invalid sweep creates nothing"
    assert lifecycle.read_sweep("bad", runs_root) is None


def test_check_launch_catches_what_the_schema_cannot(runs_root: Path):
    smoke = load_config(ROOT / "configs" / "smoke.yaml")
    assert lifecycle.check_launch(smoke, runs_root) == []
    teacher = load_config(smoke, ["train.method.name=pseudo_label", "train.method.teacher_run=no-such-run"])
    assert any(p.startswith("train.method.teacher_run:") for p in lifecycle.check_launch(teacher, runs_root))
    bad_model = load_config(smoke, ["model.options.nonsense=1"])
    assert any(p.startswith("model.options:") and "nonsense" in p for p in lifecycle.check_launch(bad_model, runs_root))
    import torch

    if not torch.cuda.is_available():
        gpu = load_config(smoke, ["train.device=cuda"])
        assert any(p.startswith("train.device:") for p in lifecycle.check_launch(gpu, runs_root))
