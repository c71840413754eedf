"""docs/EXPERIMENTS.md's generator (scripts/experiments_report.py) on run folders written in the formats a run
writes (status.json, metrics.jsonl, eval/<split>_<subset>.json and _predictions.csv): unfinished runs are named and
never filled in, a claim with fewer seeds than planned is marked provisional, and a clear effect gets its verdict."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import experiments as plan  # noqa: E402
import experiments_report as report  # noqa: E402

from fer_core import io  # noqa: E402

FACES = 400


def _fake_run(root: Path, run_id: str, correct: np.ndarray, state: str = "done",
              curve: tuple[float, ...] | None = None) -> None:
    """A run folder as training and evaluation leave it, with the given correctness on the test faces (and the given
    validation curve; by default two epochs ending at the test accuracy)."""
    folder = root / run_id
    (folder / "eval").mkdir(parents=True)
    io.atomic_write_json(folder / "status.json", {"state": state, "epoch": 2, "epochs": 2})
    for epoch, acc in enumerate(curve or (0.5, float(correct.mean())), start=1):
        io.append_jsonl(folder / "metrics.jsonl", {"epoch": epoch, "val_acc": acc, "seconds": 30.0})
    labels = np.arange(FACES) % 7
    preds = np.where(correct, labels, (labels + 1) % 7)
    table = pd.DataFrame({"index": np.arange(FACES), "label": labels, "pred": preds, "correct": correct,
                          "confidence": 0.5})
    for subset in ("all", "ambiguous", "occlusion", "pose30", "pose45"):
        metrics_path, predictions_path = io.eval_paths(folder, "test", subset)
        table.to_csv(predictions_path, index=False)
        io.atomic_write_json(metrics_path, {"split": "test", "subset": subset, "accuracy": float(correct.mean())})


def _clear_effect(root: Path, rng: np.random.Generator, a: str, b: str) -> None:
    """Three seeds of two arms on the same faces, arm ``b`` right wherever ``a`` is and on about half the rest."""
    for seed in range(3):
        base = rng.random(FACES) < 0.6
        _fake_run(root, f"{a}--s{seed}", base)
        _fake_run(root, f"{b}--s{seed}", base | (rng.random(FACES) < 0.5))


@pytest.fixture
def runs_root(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("FER_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(report, "FIGURES", tmp_path / "figures")
    return tmp_path


def _e2_rows(root: Path) -> list[list[str]]:
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], root)
    return rows


def test_nothing_run_names_every_missing_run_and_gives_no_verdict(runs_root: Path):
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root)
    assert "0 of 6 runs finished" in text and "`e2-ldl--ce--s0`" in text
    assert rows and all(row[-1] == "not run yet" for row in rows)


def test_a_clear_effect_over_every_seed_is_reproduced_and_the_figure_is_drawn(runs_root: Path):
    rng = np.random.default_rng(0)
    _clear_effect(runs_root, rng, "e2-ldl--ce", "e2-ldl--ldl")
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root)
    assert "All 6 runs finished." in text
    assert [row[-1] for row in rows] == ["**reproduced**"] * 2
    assert (runs_root / "figures" / "e2-ldl.png").stat().st_size > 0


def test_fewer_seeds_than_planned_is_provisional_and_an_unfinished_run_is_not_counted(runs_root: Path):
    rng = np.random.default_rng(1)
    same = rng.random(FACES) < 0.7
    _fake_run(runs_root, "e2-ldl--ce--s0", same)
    _fake_run(runs_root, "e2-ldl--ldl--s0", same)  # no difference: its interval [0, 0] is not above 0
    _fake_run(runs_root, "e2-ldl--ldl--s1", ~same, state="cancelled")  # would flip the verdict if it were read
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root)
    assert "2 of 6 runs finished" in text and "`e2-ldl--ldl--s1`" in text
    verdict = rows[0][-1]
    assert verdict.startswith("**not reproduced**") and "provisional: 1 of 3 and 1 of 3 seeds" in verdict
    assert "McNemar" in rows[0][6] or "mcnemar" in rows[0][6].lower()
    assert json.loads((runs_root / "e2-ldl--ldl--s1" / "status.json").read_text())["state"] == "cancelled"


def test_an_arm_still_rising_at_the_end_marks_its_verdicts_and_a_flat_one_does_not(runs_root: Path):
    """The convergence rule (under 1 point over the last 5 epochs, seed-mean curve) stated before e4b ran."""
    rng = np.random.default_rng(2)
    flat = (0.5, 0.7, 0.80, 0.805, 0.80, 0.81, 0.805, 0.808)  # +0.8 points over its last 5 epochs
    rising = (0.5, 0.6, 0.65, 0.70, 0.72, 0.75, 0.77, 0.78)  # +13 points
    for seed in range(3):
        base = rng.random(FACES) < 0.6
        _fake_run(runs_root, f"e2-ldl--ce--s{seed}", base, curve=flat)
        _fake_run(runs_root, f"e2-ldl--ldl--s{seed}", base | (rng.random(FACES) < 0.5), curve=rising)
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root)
    assert all(row[-1] == "**reproduced** (not converged: B +13.0 points over the last 5 epochs)" for row in rows)
    assert "| ce | 3 |" in text and "+0.8 |" in text and "+13.0 (still rising)" in text
    arms = report.arms_of(plan.EXPERIMENTS["e2"], runs_root)
    assert arms[("", "ce")].converged() is True and arms[("", "ldl")].converged() is False


def test_the_verdict_table_puts_the_long_schedule_beside_each_claim(runs_root: Path, tmp_path: Path):
    """The 40-epoch rerun (--size cpu-long) gets its own columns in the same rows, claim by claim."""
    rng = np.random.default_rng(3)
    _clear_effect(runs_root, rng, "e2-ldl--ce", "e2-ldl--ldl")
    same = rng.random(FACES) < 0.7
    _fake_run(runs_root, "long-e2-ldl--ce--s0", same)
    _fake_run(runs_root, "long-e2-ldl--ldl--s0", same)
    out = tmp_path / "report.md"
    assert report.main(["--out", str(out)]) == 0
    text = out.read_text().split("## Verdicts")[1]
    assert "| experiment | claim | subset | B - A [95% CI] | verdict | cpu-long: B - A | cpu-long: verdict |" in text
    rows = [line for line in text.splitlines() if line.startswith("| e2-ldl |")]
    assert len(rows) == 2 and all("| **reproduced** |" in r for r in rows)
    assert all("**not reproduced** (provisional: 1 of 3 and 1 of 3 seeds)" in r for r in rows)
    assert "| e0-pretraining |" in text and text.count("not run yet") >= 2  # claims whose runs do not exist
    e4 = [line for line in text.splitlines() if line.startswith("| e4-sam |")]  # not rerun: e4b is its rerun
    assert e4 and all(line.endswith("| not in the cpu-long plan |") for line in e4)
    sections = out.read_text().split("## Verdicts")[0]
    e4_section = sections.split("e4-sam\n")[1].split("\n## ")[0]
    assert "twice the epochs" not in e4_section and "twice the epochs" in sections.split("e2-ldl\n")[1]
    assert report.main(["--out", str(out), "--beside", "none"]) == 0
    assert "cpu-long: verdict" not in out.read_text()


def test_each_section_shows_the_long_schedule_arms_and_draws_their_curves_dashed(runs_root: Path):
    """With --beside, an experiment's section carries the other schedule's arm table under its own, and one figure
    holds both schedules' curves (the long one dashed), so the two can be read side by side."""
    rng = np.random.default_rng(4)
    _clear_effect(runs_root, rng, "e2-ldl--ce", "e2-ldl--ldl")
    _fake_run(runs_root, "long-e2-ldl--ce--s0", rng.random(FACES) < 0.7, curve=(0.5, 0.6, 0.7, 0.72))
    beside = (plan.CPU_LONG, plan.build(plan.CPU_LONG)["e2"])
    text, rows = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root, plan.CPU, beside)
    long_part = text.split("The same arms at the CPU size at twice the epochs")[1].split("Each claim")[0]
    assert "`python scripts/experiments.py run e2 --size cpu-long`" in long_part
    assert "1 of 6 runs finished" in long_part and "`long-e2-ldl--ldl--s0`" in long_part
    assert "| ce | 1 |" in long_part and "| ldl | 0 |" in long_part
    assert "Dashed: cpu-long." in text
    assert [row[-1] for row in rows] == ["**reproduced**"] * 2  # the section's own claims read its own runs only
    alone = report.experiment_section(3, plan.EXPERIMENTS["e2"], runs_root)[0]
    assert "twice the epochs" not in alone and "Dashed" not in alone


def test_the_long_report_has_only_the_experiments_its_size_plans(runs_root: Path, tmp_path: Path):
    out = tmp_path / "long.md"
    assert report.main(["--size", "cpu-long", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## 1. long-e0-pretraining" in text and "long-e1b-scn-parts" in text
    assert "long-e4-sam" not in text and "long-e4b" not in text  # e4b is e4's rerun; e4b-lr chose its rate
    assert "`python scripts/experiments_report.py --size cpu-long --out docs/EXPERIMENTS_long.md`" in text


def test_an_arms_training_time_is_the_median_run_so_one_paused_run_does_not_set_it(runs_root: Path):
    exp = plan.EXPERIMENTS["e2"]
    correct = np.ones(FACES, bool)
    for seed in range(3):
        _fake_run(runs_root, f"e2-ldl--ldl--s{seed}", correct)
    # seed 0 was paused for 35 minutes inside its second epoch
    rows = io.read_metrics(runs_root / "e2-ldl--ldl--s0")
    rows[1]["seconds"] = 30.0 + 35 * 60
    (runs_root / "e2-ldl--ldl--s0" / "metrics.jsonl").unlink()
    for row in rows:
        io.append_jsonl(runs_root / "e2-ldl--ldl--s0" / "metrics.jsonl", row)
    arm = report.arms_of(exp, runs_root)[("", "ldl")]
    assert len(arm.done) == 3
    assert arm.train_minutes() == pytest.approx(1.0)  # two epochs of 30 s, as the two unpaused seeds took


def test_a_report_updated_for_one_experiment_keeps_every_other_part_as_it_was(runs_root: Path, tmp_path: Path,
                                                                             monkeypatch):
    """``--only e2`` on a machine that lost e0's runs: e2's section and verdicts are rewritten from its runs, e0's
    section, its figure and its verdict rows stay as the earlier report had them, byte for byte."""
    rng = np.random.default_rng(5)
    _clear_effect(runs_root, rng, "e0-pretraining--scratch", "e0-pretraining--pretrained")
    out = tmp_path / "report.md"
    assert report.main(["--out", str(out)]) == 0
    before = out.read_text()
    figure = report.FIGURES / "e0-pretraining.png"
    drawn = figure.read_bytes()
    for folder in runs_root.glob("e0-pretraining--*"):  # the machine is replaced: e0's runs are gone
        shutil.rmtree(folder)
    for seed in range(3):  # e2 runs now (its ce arm is e0's pretrained arm, copied)
        base = rng.random(FACES) < 0.6
        _fake_run(runs_root, f"e2-ldl--ce--s{seed}", base)
        _fake_run(runs_root, f"e2-ldl--ldl--s{seed}", base | (rng.random(FACES) < 0.5))
    assert report.main(["--out", str(out), "--only", "e2"]) == 0
    after = out.read_text()
    e0 = before.split("\n## 1. e0-pretraining")[1].split("\n## 2. ")[0]
    assert e0 == after.split("\n## 1. e0-pretraining")[1].split("\n## 2. ")[0]
    assert figure.read_bytes() == drawn
    e2_before = before.split("e2-ldl\n")[1].split("\n## ")[0]
    e2_after = after.split("e2-ldl\n")[1].split("\n## ")[0]
    assert "0 of 6 runs finished" in e2_before and "All 6 runs finished." in e2_after
    rows = [line for line in after.split("## Verdicts")[1].splitlines() if line.startswith("| e")]
    assert [r for r in rows if r.startswith("| e0-")] == [
        r for r in before.split("## Verdicts")[1].splitlines() if r.startswith("| e0-")]
    assert all("| **reproduced** |" in r for r in rows if r.startswith("| e2-ldl |"))
    # everything outside e2's section and rows is as it was
    strip = [line for line in after.splitlines() if "e2-ldl" not in line]
    assert len(after.splitlines()) > len(before.splitlines()) - 5
    assert [line for line in before.splitlines() if "e0-" in line] == [line for line in strip if "e0-" in line]
    for folder in runs_root.glob("e2-ldl--ldl--*"):  # one arm lost too: the claim keeps the verdict it had
        shutil.rmtree(folder)
    assert report.main(["--out", str(out), "--only", "e2"]) == 0
    again = out.read_text()
    section = again.split("e2-ldl\n")[1].split("\n## ")[0]
    assert "3 of 6 runs finished" in section  # the status line counts the runs here
    own = section.split(report.BESIDE_START)[0]
    assert "| ldl | 3 |" in own and "| ldl | 0 |" not in own  # the lost arm's row as it was reported
    assert "not run yet" not in section and section.count("**reproduced**") == 2
    assert [r for r in again.splitlines() if r.startswith("| e2-ldl |")] == [
        r for r in after.splitlines() if r.startswith("| e2-ldl |")]
    with pytest.raises(SystemExit, match="existing --out"):
        report.main(["--out", str(tmp_path / "absent.md"), "--only", "e2"])


def test_an_update_with_only_the_long_runs_rewrites_only_their_block_and_columns(runs_root: Path, tmp_path: Path):
    """The 20-epoch runs are gone, the 40-epoch ones are here: the section keeps its own arms and figure, its block of
    40-epoch arms and the 40-epoch verdict columns are rewritten."""
    rng = np.random.default_rng(6)
    _clear_effect(runs_root, rng, "e2-ldl--ce", "e2-ldl--ldl")
    out = tmp_path / "report.md"
    assert report.main(["--out", str(out)]) == 0
    before = out.read_text()
    figure = (report.FIGURES / "e2-ldl.png").read_bytes()
    for folder in runs_root.glob("e2-ldl--*"):
        shutil.rmtree(folder)
    for seed in range(3):
        same = rng.random(FACES) < 0.7
        _fake_run(runs_root, f"long-e2-ldl--ce--s{seed}", same)
        _fake_run(runs_root, f"long-e2-ldl--ldl--s{seed}", same & (rng.random(FACES) < 0.5))
    assert report.main(["--out", str(out), "--only", "e2"]) == 0
    after = out.read_text()
    own = before.split("e2-ldl\n")[1].split(report.BESIDE_START)[0]
    assert own == after.split("e2-ldl\n")[1].split(report.BESIDE_START)[0]  # its own arms, as they were
    block = after.split("e2-ldl\n")[1].split(report.BESIDE_START)[1].split("\nEach claim")[0]
    assert "All 6 runs finished." in block and "| ldl | 3 |" in block
    assert "Each claim: B against A" in after.split("e2-ldl\n")[1]
    assert (report.FIGURES / "e2-ldl.png").read_bytes() == figure
    rows = [line for line in after.split("## Verdicts")[1].splitlines() if line.startswith("| e2-ldl |")]
    assert len(rows) == 2 and all("| **reproduced** |" in r and r.endswith("| **not reproduced** |") for r in rows)

    for folder in runs_root.glob("long-e2-ldl--ldl--*"):  # a 40-epoch arm lost: its row and verdicts as reported
        shutil.rmtree(folder)
    assert report.main(["--out", str(out), "--only", "e2"]) == 0
    again = out.read_text()
    block = again.split("e2-ldl\n")[1].split(report.BESIDE_START)[1].split("\nEach claim")[0]
    assert "3 of 6 runs finished" in block and "| ldl | 3 |" in block and "| ldl | 0 |" not in block
    assert [r for r in again.splitlines() if r.startswith("| e2-ldl |")] == rows


def test_an_update_on_the_runs_a_report_was_written_from_changes_nothing(runs_root: Path, tmp_path: Path):
    rng = np.random.default_rng(7)
    _clear_effect(runs_root, rng, "e2-ldl--ce", "e2-ldl--ldl")
    _fake_run(runs_root, "long-e2-ldl--ce--s0", rng.random(FACES) < 0.7)
    for args in ([], ["--findings", str(ROOT / "docs" / "experiments_findings.md")], ["--size", "cpu-long"]):
        out = tmp_path / "report.md"
        assert report.main(["--out", str(out), *args]) == 0
        whole = out.read_text()
        assert report.main(["--out", str(out), *args, "--only", "e2", "e0"]) == 0
        assert out.read_text() == whole, args
