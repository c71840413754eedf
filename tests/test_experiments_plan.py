"""The experiment plan of docs/EXPERIMENTS.md (scripts/experiments.py): every run's config is valid, and within an
experiment two arms differ only in what their own overrides set (the rest of the protocol is shared)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import experiments as plan  # noqa: E402
import pytest  # noqa: E402

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


def test_the_two_sizes_run_the_same_experiments_arms_and_claims():
    cpu, paper = plan.build(plan.CPU), plan.build(plan.PAPER)
    assert list(cpu) == list(paper) == list(plan.EXPERIMENTS)
    for name, exp in cpu.items():
        assert list(exp.arms) == list(paper[name].arms) and list(exp.conditions) == list(paper[name].conditions)
        assert paper[name].group == "paper-" + exp.group and paper[name].seeds == exp.seeds
    assert plan.EXPERIMENTS == cpu  # the default size is the CPU's


def test_the_cpu_plan_starts_only_the_pretraining_its_experiments_need(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    assert plan.main(["plan", "e2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["missing", "pretrain--identity--small_cnn"] and len(out) == 1 + 6 + 1
    assert plan.main(["plan", "e5", "--size", "paper"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["missing", "paper--pretrain--identity--patt_lite"]
    assert out[1].split() == ["missing", "paper-e5-patt-lite--pooled--s0"]
