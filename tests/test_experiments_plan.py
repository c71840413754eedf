"""The experiment plan of docs/EXPERIMENTS.md (scripts/experiments.py): every run's config is valid, and within an
experiment two arms differ only in what their own overrides set (the rest of the protocol is shared)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import experiments as plan  # noqa: E402
import pytest  # noqa: E402

from fer_core import io  # noqa: E402
from fer_core.config import load_config  # noqa: E402

IGNORED = ("name", "group", "tags", "seed")


def _flat(data, prefix=""):
    out = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):  # an empty section adds no key
            out.update(_flat(value, f"{path}."))
        else:
            out[path] = value
    return out


def _keys(overrides):
    return {item.partition("=")[0] for item in overrides}


SIZES = pytest.mark.parametrize("size", list(plan.SIZES.values()), ids=list(plan.SIZES))


@SIZES
def test_every_planned_run_has_a_valid_config_and_a_unique_id(size):
    runs = [*size.pretraining, *[r for e in plan.build(size).values() for r in e.runs()]]
    assert len({r.run_id for r in runs}) == len(runs)
    for run in runs:
        cfg = load_config(run.config, list(run.overrides))
        if size is plan.PAPER:
            assert cfg.train.device == "cuda" and run.run_id.startswith("paper-"), run.run_id
        if run not in size.pretraining:  # every arm starts from a pretraining run, but e0's scratch arm
            expected = {None} if cfg.tags["variant"] == "scratch" else {r.run_id for r in size.pretraining}
            assert cfg.model.init_from in expected, run.run_id
            assert cfg.group and cfg.tags["variant"] and "seed" in cfg.tags


@SIZES
def test_arms_differ_only_in_their_own_overrides(size):
    for exp in plan.build(size).values():
        by = {}
        for run in exp.runs():
            parts = run.run_id.split("--")
            by[(parts[1] if len(parts) == 4 else "", parts[-2], parts[-1])] = _flat(
                load_config(run.config, list(run.overrides)).to_dict())
        for (cond, arm, seed), cfg in by.items():
            for other in exp.arms:
                theirs = by[(cond, other, seed)]
                allowed = _keys(exp.arms[arm]) | _keys(exp.arms[other])
                differing = {k for k in cfg.keys() | theirs.keys() if cfg.get(k) != theirs.get(k)
                             and k.split(".")[0] not in IGNORED}
                # a changed method or model brings its own defaults: everything under the key that was set
                stray = {k for k in differing if not any(k == a or k.startswith(a.rpartition(".")[0] + ".")
                                                          for a in allowed)}
                assert not stray, f"{exp.name} {cond}: {arm} vs {other} differ in {sorted(stray)}"


def test_every_claim_names_arms_and_conditions_of_its_experiment():
    for name, claims in plan.CLAIMS.items():
        exp = plan.EXPERIMENTS[name]
        for claim in claims:
            assert claim.a in exp.arms and claim.b in exp.arms and claim.condition in exp.conditions, claim


@SIZES
def test_arms_with_different_models_share_an_explicit_dropout(size):
    """Model defaults do not show in a config: the review found SCN (no dropout by default) against a baseline with
    0.2. Where arms build different models, the shared config must set the dropout they all use."""
    for exp in plan.build(size).values():
        models = {arm: load_config(exp.config, [*exp.base, *sets]).model for arm, sets in exp.arms.items()}
        if len({m.name for m in models.values()}) > 1:
            rates = {arm: m.options.get("drop_rate") for arm, m in models.items()}
            assert None not in rates.values() and len(set(rates.values())) == 1, (exp.name, rates)


def test_every_size_runs_the_same_experiments_arms_and_claims():
    cpu = plan.build(plan.CPU)
    for size in (plan.PAPER, plan.CPU_LONG):
        other = plan.build(size)
        assert list(cpu) == list(other) == list(plan.EXPERIMENTS)
        for name, exp in cpu.items():
            assert list(exp.arms) == list(other[name].arms) and list(exp.conditions) == list(other[name].conditions)
            assert other[name].group == size.prefix + exp.group and other[name].seeds == exp.seeds
    assert plan.EXPERIMENTS == cpu  # the default size is the CPU's


def test_the_long_cpu_size_doubles_every_schedule_and_changes_nothing_else():
    """The convergence rerun (findings item 10): twice the epochs, SCN's first relabelling at the same share."""
    cpu, long = plan.build(plan.CPU), plan.build(plan.CPU_LONG)
    for name, exp in cpu.items():
        for short_run, long_run in zip(exp.runs(), long[name].runs(), strict=True):
            a = _flat(load_config(short_run.config, list(short_run.overrides)).to_dict())
            b = _flat(load_config(long_run.config, list(long_run.overrides)).to_dict())
            assert b["train.epochs"] == 2 * a["train.epochs"], long_run.run_id
            if a.get("train.method.name") == "scn" and a["train.method.relabel_start"] == "epoch" and (
                    a["train.method.relabel_epoch"] < a["train.epochs"]):
                share = a["train.method.relabel_epoch"] / a["train.epochs"]
                assert abs(b["train.method.relabel_epoch"] / b["train.epochs"] - share) < 0.01
            changed = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k.split(".")[0] not in IGNORED}
            assert changed <= {"train.epochs", "train.stages", "train.method.relabel_epoch"}, (long_run.run_id, changed)
    assert long["e0"].runs()[0].run_id == "long-e0-pretraining--scratch--s0"


def test_the_cpu_plan_starts_only_the_pretraining_its_experiments_need(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    assert plan.main(["plan", "e2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["missing", "pretrain--identity--small_cnn"] and len(out) == 1 + 6 + 1
    assert plan.main(["plan", "e5", "--size", "paper"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["missing", "paper--pretrain--identity--patt_lite"]
    assert out[1].split() == ["missing", "paper-e5-patt-lite--pooled--s0"]
    assert plan.main(["plan", "--size", "cpu-long", "e5", "e2"]) == 0  # options before the experiments too
    out = capsys.readouterr().out.splitlines()
    assert out[2].split() == ["missing", "long-e5-patt-lite--pooled--s0"] and out[-1].endswith("0 of them copies")


def test_runs_that_train_the_same_config_are_trained_once_and_copied_with_their_own_labels(tmp_path):
    """e0's pretrained arm, e1's clean baseline and e2's cross-entropy arm differ only in name, group and tags."""
    todo, copies = plan.unique([r for e in plan.EXPERIMENTS.values() for r in e.runs()])
    assert sorted(run.run_id for run, _ in copies) == sorted(
        [f"e1-scn-noise--clean--baseline--s{s}" for s in range(3)] + [f"e2-ldl--ce--s{s}" for s in range(3)])
    assert all(source.run_id == "e0-pretraining--pretrained--s" + run.run_id[-1] for run, source in copies)
    assert len({plan.training_key(r) for r in todo}) == len(todo)  # nothing else trains twice

    run, source = copies[0]
    folder = tmp_path / source.run_id
    folder.mkdir()
    cfg = load_config(source.config, list(source.overrides))
    (folder / "config.yaml").write_text(cfg.to_yaml())
    io.write_status(folder, state="done", epoch=20, epochs=20, test_acc=0.85)
    (folder / "log.txt").write_text("trained\n")
    assert plan.state_of(run, tmp_path) == "missing"
    assert plan.reuse(source, run, tmp_path) == "done"
    copy = load_config(tmp_path / run.run_id / "config.yaml")
    assert copy.group == "e1-scn-noise" and copy.tags["condition"] == "clean"
    assert copy.to_dict()["train"] == cfg.to_dict()["train"] and copy.seed == cfg.seed
    assert f"is a copy of {source.run_id}" in (tmp_path / run.run_id / "log.txt").read_text()
    assert load_config(folder / "config.yaml").group == "e0-pretraining"  # the source is left as it was
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_long_size_runs_the_experiments_it_plans_in_the_stated_order(tmp_path, monkeypatch, capsys):
    """`run --size cpu-long` with no experiment named takes the rerun stated in findings item 10: every experiment but
    e4 (e4b is its converged rerun) and the learning-rate choice e4b-lr, the claims within a few points first."""
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    assert [e.name for e in plan.selected([], plan.CPU_LONG)] == ["e0", "e2", "e3", "e5", "e1c", "e1", "e1b"]
    assert [e.name for e in plan.selected([], plan.CPU)] == list(plan.EXPERIMENTS)
    assert plan.CPU_LONG.plans("e1b") and not plan.CPU_LONG.plans("e4") and plan.CPU.plans("e4")
    assert plan.main(["plan", "--size", "cpu-long"]) == 0
    ids = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert ids[3] == "long-e0-pretraining--scratch--s0" and not any("e4" in i for i in ids)


def test_a_copy_is_made_as_soon_as_its_source_is_done_not_after_every_run(tmp_path, monkeypatch):
    """e2's cross-entropy arm is e0's pretrained arm: its claims can be read while later runs still train. The
    training subprocess is replaced by one that writes what a finished run leaves (config and done status), so that
    the test sees the order in which the runner trains and copies."""
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    seen: list[tuple[str, list[str]]] = []

    def finish(run, root, threads, retry_failed, records=True):
        seen.append((run.run_id, sorted(p.name for p in root.iterdir() if p.name.startswith("e2-ldl--ce"))))
        folder = root / run.run_id
        folder.mkdir()
        (folder / "config.yaml").write_text(load_config(run.config, list(run.overrides)).to_yaml())
        io.write_status(folder, state="done", epoch=1, epochs=1)
        return "done"

    monkeypatch.setattr(plan, "execute", finish)
    assert plan.main(["run", "e0", "e2"]) == 0
    copies_before = dict(seen)
    assert copies_before["e2-ldl--ldl--s0"] == [f"e2-ldl--ce--s{s}" for s in range(3)]
    assert copies_before["e0-pretraining--pretrained--s1"] == ["e2-ldl--ce--s0"]
    assert all(plan.state_of(r, tmp_path) == "done" for r in plan.EXPERIMENTS["e2"].runs())


def _finished(folder: Path, epochs: int = 3, scn: bool = False) -> None:
    """What a finished run leaves: config, status, metrics, log, evaluations, weights, events (and SCN's tables)."""
    (folder / "eval").mkdir(parents=True)
    (folder / "checkpoints").mkdir()
    (folder / "tensorboard").mkdir()
    (folder / "config.yaml").write_text("name: x\n")
    io.write_status(folder, state="done", epoch=epochs, epochs=epochs)
    for epoch in range(1, epochs + 1):
        io.append_jsonl(folder / "metrics.jsonl", {"epoch": epoch, "val_acc": 0.5})
    (folder / "log.txt").write_text("trained\n")
    (folder / "eval" / "test_all.json").write_text('{"split": "test", "subset": "all", "accuracy": 0.5}')
    (folder / "eval" / "test_all_predictions.csv").write_text("index,label,pred,correct,prob_a,prob_b\n"
                                                              "0,1,1,True,0.25,0.75\n")
    (folder / "eval" / "factors").mkdir()
    (folder / "eval" / "factors" / "test_values.csv").write_text("index,yaw\n0,12.5\n")
    (folder / "checkpoints" / "best.safetensors").write_bytes(b"0" * 1000)
    (folder / "tensorboard" / "events.out").write_bytes(b"0" * 100)
    if scn:
        (folder / "scn").mkdir()
        for epoch in range(1, epochs + 1):
            (folder / "scn" / f"epoch_{epoch:03d}.csv").write_text(f"index,weight\n0,0.{epoch}\n")


def test_a_finished_run_is_recorded_without_its_weights_and_read_from_its_record(tmp_path, monkeypatch, capsys):
    """A run folder is lost with its machine; its record (results/, committed) keeps what the reports read, and the
    runner counts a recorded run as done, but for a pretraining run, whose weights the runs after it load."""
    runs, records = tmp_path / "runs", tmp_path / "records"
    monkeypatch.setenv("FER_RUNS_DIR", str(runs))
    monkeypatch.setenv("FER_RECORDS_DIR", str(records))
    scn_run = plan.build(plan.CPU_LONG)["e1"].runs()[4]  # long-e1-scn-noise--clean--scn--s1
    _finished(runs / scn_run.run_id, scn=True)
    unfinished = runs / "long-e1-scn-noise--clean--scn--s2"
    unfinished.mkdir(parents=True)
    io.write_status(unfinished, state="cancelled", epoch=1, epochs=3)
    assert plan.record(unfinished.name, runs) is None and not (records / unfinished.name).exists()
    kept = plan.record(scn_run.run_id, runs)
    assert kept == records / scn_run.run_id
    names = sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file())
    assert names == ["config.yaml", "eval/test_all.json", "eval/test_all_predictions.csv", "log.txt",
                     "metrics.jsonl", "scn/epoch_003.csv", "status.json"]
    assert (kept / "eval" / "test_all_predictions.csv").read_text().splitlines() == ["index,label,pred,correct",
                                                                                     "0,1,1,True"]
    shutil.rmtree(runs / scn_run.run_id)  # the machine is replaced
    assert plan.state_of(scn_run, runs) == "done" and plan.folder_of(scn_run.run_id, runs) == kept
    assert io.read_metrics(plan.folder_of(scn_run.run_id, runs))[-1]["epoch"] == 3
    assert plan.main(["plan", "e1", "--size", "cpu-long", "--only", "*--clean--scn--*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["missing", "pretrain--identity--small_cnn"]
    assert out[2] == f"done         {scn_run.run_id} (its record)" and len(out) == 5
    pretraining = plan.CPU.pretraining[0]
    _finished(runs / pretraining.run_id)
    plan.record(pretraining.run_id, runs)
    shutil.rmtree(runs / pretraining.run_id)
    assert plan.state_of(pretraining, runs) == "done" and plan.state_of(pretraining, runs, records=False) == "missing"


def test_only_picks_runs_by_id_and_the_record_action_records_every_finished_one(tmp_path, monkeypatch, capsys):
    runs, records = tmp_path / "runs", tmp_path / "records"
    monkeypatch.setenv("FER_RUNS_DIR", str(runs))
    monkeypatch.setenv("FER_RECORDS_DIR", str(records))
    assert plan.main(["plan", "e1", "e1b", "--only", "*--uniform30--scn--*", "--only", "e1b-*--scn_code--s0"]) == 0
    ids = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert ids == ["pretrain--identity--small_cnn", *[f"e1-scn-noise--uniform30--scn--s{s}" for s in range(3)],
                   "e1b-scn-parts--scn_code--s0"]
    with pytest.raises(SystemExit, match="matches no run"):
        plan.main(["plan", "e2", "--only", "*--uniform30--*"])
    for run_id in ("e2-ldl--ldl--s0", "e2-ldl--ldl--s2"):
        _finished(runs / run_id)
    assert plan.main(["record", "e2"]) == 0
    assert "2 of 7 runs recorded" in capsys.readouterr().out
    assert sorted(p.name for p in records.iterdir()) == ["e2-ldl--ldl--s0", "e2-ldl--ldl--s2"]
