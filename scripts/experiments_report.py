"""Write docs/EXPERIMENTS.md from the runs of ``scripts/experiments.py``: every number read from a run folder.

    python scripts/experiments_report.py --findings docs/experiments_findings.md --out docs/EXPERIMENTS.md

Reads ``$FER_RUNS_DIR`` (default ./runs). For each experiment: the protocol (the overrides every arm shares and the
one thing each arm changes), each arm's test accuracy per subset as the mean over seeds with a 95% confidence
interval (Student t), each claim's paired test on the same test faces (``fer_core.stats.paired_test``: exact
McNemar for one run per arm, a paired bootstrap over faces and seeds otherwise) with its verdict, the validation
curves (``docs/experiments/<group>.png``) and, for SCN, the evidence behind the verdict (importance weights of
noisy and clean faces, relabels that fixed or broke a label, epoch by epoch). Runs that are missing or unfinished
are named, never filled in. The hand-written reading of the results (``--findings``) is appended as it is.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import experiments as plan  # noqa: E402  (scripts/experiments.py: the runs and claims)

from fer_core import compare, io, stats  # noqa: E402

FIGURES = ROOT / "docs" / "experiments"
CONVERGENCE_EPOCHS, CONVERGENCE_GAIN = compare.CONVERGENCE_EPOCHS, compare.CONVERGENCE_GAIN
"""The convergence rule stated in docs/experiments_findings.md (item 5) before e4b ran (``fer_core.compare``): an arm
has converged when its validation curve (mean over seeds) gained under 1 point over its last five epochs. The report
applies it to every arm and marks the verdicts that rest on an arm that has not."""


def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ci_text(values: Sequence[float | None]) -> str:
    """``78.4 ± 1.2`` (mean and half-width of the 95% t-interval, in %); one seed gives the value alone."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    ci = stats.mean_ci(values)
    return f"{100 * ci.mean:.1f} ± {100 * ci.half_width:.1f}" if ci.defined else f"{100 * ci.mean:.1f}"


# --------------------------------------------------------------------------------------------- reading runs
class Arm:
    """The finished runs of one arm under one condition, with what the report needs of each."""

    def __init__(self, runs: list[plan.Run], root: Path):
        self.planned = runs
        self.dirs = [plan.folder_of(r.run_id, root) for r in runs]
        self.done = [d for d in self.dirs if d.is_dir() and io.run_state(d) == "done"]
        self.evals = {d.name: io.read_eval(d) for d in self.done}
        self.metrics = {d.name: io.read_metrics(d) for d in self.done}

    def accuracies(self, subset: str) -> list[float | None]:
        return [ev.get(f"test/{subset}", {}).get("accuracy") for ev in self.evals.values()]

    def predictions(self, subset: str) -> dict:
        return {d.name: io.read_predictions(d, "test", subset) for d in self.done}

    def last_gain(self) -> float | None:
        """What the seed-mean validation curve gained over its last ``CONVERGENCE_EPOCHS`` epochs (a fraction)."""
        return compare.curve_gain(list(self.metrics.values()))

    def converged(self) -> bool | None:
        gain = self.last_gain()
        return None if gain is None else gain < CONVERGENCE_GAIN

    def train_minutes(self) -> float | None:
        """The wall time of a run's epochs, the median over the arm's runs: one run paused or sharing the CPU with
        something else for a while does not set the arm's cost."""
        seconds = [sum(m.get("seconds", 0.0) for m in rows) for rows in self.metrics.values()]
        return statistics.median(seconds) / 60 if seconds else None


def arms_of(exp: plan.Experiment, root: Path) -> dict[tuple[str, str], Arm]:
    """``{(condition, arm): Arm}`` in plan order."""
    out: dict[tuple[str, str], list[plan.Run]] = {}
    for run in exp.runs():
        parts = run.run_id.split("--")
        cond = parts[1] if len(parts) == 4 else ""
        out.setdefault((cond, parts[-2]), []).append(run)
    return {key: Arm(runs, root) for key, runs in out.items()}


def status(arms: dict[tuple[str, str], Arm]) -> str:
    missing = [r.run_id for arm in arms.values() for r, d in zip(arm.planned, arm.dirs, strict=True)
               if d not in arm.done]
    total = sum(len(a.planned) for a in arms.values())
    if not missing:
        return f"All {total} runs finished."
    shown = ", ".join(f"`{m}`" for m in missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return f"**{total - len(missing)} of {total} runs finished**; not finished: {shown}."


# --------------------------------------------------------------------------------------------- sections
def protocol(exp: plan.Experiment) -> str:
    shared = ", ".join(f"`{s}`" for s in exp.base) or "none"
    lines = [f"Shared by every arm (on top of `{exp.config.relative_to(ROOT)}`): {shared}. Seeds: "
             f"{', '.join(map(str, exp.seeds))}."]
    for arm, sets in exp.arms.items():
        lines.append(f"- arm **{arm}**: " + (", ".join(f"`{s}`" for s in sets) if sets else "nothing changed"))
    if list(exp.conditions) != [""]:
        for cond, sets in exp.conditions.items():
            lines.append(f"- condition **{cond}**: " + ", ".join(f"`{s}`" for s in sets))
    return "\n".join(lines) + "\n"


def arm_table(exp: plan.Experiment, arms: dict[tuple[str, str], Arm], subsets: Sequence[str],
              note: bool = True) -> str:
    """Each arm's test accuracy per subset over its seeds, its late validation gain and its training time; ``note``:
    the explanation of the columns under the table."""
    rows = []
    for (cond, name), arm in arms.items():
        minutes = arm.train_minutes()
        rows.append([*([cond] if cond else []), name, str(len(arm.done)),
                     *[ci_text(arm.accuracies(s)) for s in subsets], gain_text(arm),
                     "-" if minutes is None else f"{minutes:.1f}"])
    head = [*(["condition"] if list(exp.conditions) != [""] else []), "arm", "seeds", *subsets,
            f"val gain, last {CONVERGENCE_EPOCHS} epochs", "train min/run"]
    if not note:
        return table(head, rows)
    return table(head, rows) + ("\nTest accuracy in %, mean over seeds ± half-width of its 95% confidence interval "
                                f"(Student t); val gain: what the seed-mean validation accuracy gained over the last "
                                f"{CONVERGENCE_EPOCHS} epochs, in points (converged when under "
                                f"{100 * CONVERGENCE_GAIN:.0f}); train min/run: wall time of a run's epochs on its "
                                "device, the median over the arm's runs.\n")


def gain_text(arm: Arm) -> str:
    gain = arm.last_gain()
    if gain is None:
        return "-"
    return f"{100 * gain:+.1f}" + ("" if arm.converged() else " (still rising)")


def claim_rows(claim: plan.Claim, arms: dict[tuple[str, str], Arm]) -> list[list[str]]:
    a, b = arms.get((claim.condition, claim.a)), arms.get((claim.condition, claim.b))
    rows = []
    for subset in claim.subsets:
        if not a or not b or not a.done or not b.done:
            rows.append([claim.text, subset, "-", "-", "-", "-", "-", "not run yet"])
            continue
        try:
            test = stats.paired_test_from_predictions(a.predictions(subset), b.predictions(subset))
        except ValueError as err:
            rows.append([claim.text, subset, "-", "-", "-", "-", "-", f"not comparable: {err}"])
            continue
        partial = "" if len(a.done) == len(a.planned) and len(b.done) == len(b.planned) else (
            f" (provisional: {len(a.done)} of {len(a.planned)} and {len(b.done)} of {len(b.planned)} seeds)")
        rising = [f"{side} {100 * arm.last_gain():+.1f}" for side, arm in (("A", a), ("B", b))
                  if arm.converged() is False]
        unconverged = f" (not converged: {', '.join(rising)} points over the last {CONVERGENCE_EPOCHS} epochs)" if (
            rising) else ""
        rows.append([claim.text, subset, ci_text(a.accuracies(subset)), ci_text(b.accuracies(subset)),
                     f"{100 * test.difference:+.1f} [{100 * test.low:+.1f}, {100 * test.high:+.1f}]",
                     f"{test.p_value:.3g}", f"{test.test}, {test.n_faces} faces",
                     f"**{test.verdict}**{partial}{unconverged}"])
    return rows


CLAIM_HEADER = ["claim", "subset", "A", "B", "B - A [95% CI]", "p", "paired test", "verdict"]


def curves(exp: plan.Experiment, arms: dict[tuple[str, str], Arm],
           beside: tuple[str, dict[tuple[str, str], Arm]] | None = None) -> str:
    """Validation accuracy per epoch, mean over seeds with its range, one panel per condition; the PNG's link.
    ``beside`` (a schedule's short name and its arms) draws that schedule's arms dashed in the same colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    conditions = list(exp.conditions)
    schedules = [("", arms, "-"), *([(beside[0], beside[1], "--")] if beside else [])]
    if not any(arm.done for _, group, _ in schedules for arm in group.values()):
        return ""
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.2 * len(conditions), 3.2), squeeze=False)
    for ax, cond in zip(axes[0], conditions, strict=True):
        for (label, group, style), (i, name) in itertools.product(schedules, enumerate(exp.arms)):
            arm = group.get((cond, name))
            if not arm or not arm.done:
                continue
            series = [[m.get("val_acc") for m in rows if m.get("val_acc") is not None] for rows in arm.metrics.values()]
            n = min(len(s) for s in series)
            if not n:
                continue
            values = 100 * np.array([s[:n] for s in series])
            epochs = np.arange(1, n + 1)
            colour = colours[i % len(colours)]
            ax.plot(epochs, values.mean(0), style, color=colour,
                    label=f"{name}{', ' + label if label else ''} ({len(series)})")
            ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.2 if style == "-" else 0.1,
                            linewidth=0)
        ax.set_title(cond or exp.group, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if not ax.lines:  # a condition none of whose runs has finished: say so rather than draw empty 0-1 axes
            ax.text(0.5, 0.5, "no finished run here\n(see the tables)", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0][0].set_ylabel("validation accuracy (%)")
    entries: dict[str, object] = {}  # every panel's curves in one legend (a schedule may have run in one panel only)
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    axes[0][-1].legend(list(entries.values()), list(entries), fontsize=8, loc="lower right")
    fig.tight_layout()
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{exp.group}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    dashed = f" Dashed: {beside[0]}." if beside and any(a.done for a in beside[1].values()) else ""
    return (f"\n![Validation accuracy per epoch, {exp.group}](experiments/{path.name})\n\n*Validation accuracy per "
            f"epoch: mean over seeds (line) and their range (band); the number of seeds in brackets.{dashed}*\n")


def scn_label_drift(run_dir: Path) -> tuple[float, float, str, float, float] | None:
    """From a SCN run's last ``scn/epoch_NNN.csv``: the mean importance weight of the faces whose training label is
    wrong then and of those whose label is right, and the class with most training labels then, with its share of
    the clean labels and of the last epoch's labels."""
    import pandas as pd

    files = sorted((run_dir / "scn").glob("epoch_*.csv"))
    if not files:
        return None
    last = pd.read_csv(files[-1])
    wrong = last["label"] != last["clean_label"]
    top = int(last["label"].value_counts().idxmax())
    classes = io.read_eval(run_dir).get("test/all", {}).get("class_names") or []
    return (float(last.loc[wrong, "weight"].mean()) if wrong.any() else float("nan"),
            float(last.loc[~wrong, "weight"].mean()), classes[top] if top < len(classes) else str(top),
            float((last["clean_label"] == top).mean()), float((last["label"] == top).mean()))


def scn_evidence(arms: dict[tuple[str, str], Arm]) -> str:
    """Importance weights of noisy vs clean training faces and relabels that fixed or broke a label."""
    rows, per_epoch = [], []
    for (cond, name), arm in arms.items():
        if not arm.done or not any("scn_relabelled" in m for rows_ in arm.metrics.values() for m in rows_):
            continue
        fixed = [sum(m.get("scn_relabel_fixed", 0) for m in r) for r in arm.metrics.values()]
        broke = [sum(m.get("scn_relabel_broke", 0) for m in r) for r in arm.metrics.values()]
        relabelled = [sum(m.get("scn_relabelled", 0) for m in r) for r in arm.metrics.values()]
        last = [r[-1] for r in arm.metrics.values() if r]
        noisy = [m["scn_weight_noisy"] for m in last if "scn_weight_noisy" in m]
        clean = [m["scn_weight_clean"] for m in last if "scn_weight_clean" in m]
        weight = f"{sum(noisy) / len(noisy):.3f} / {sum(clean) / len(clean):.3f}" if noisy and clean else "-"
        n = len(arm.done)
        wrong = [(r[0].get("scn_label_noise"), r[-1].get("scn_label_noise")) for r in arm.metrics.values() if r]
        wrong = [w for w in wrong if None not in w]
        wrong_text = (f"{pct(sum(w[0] for w in wrong) / len(wrong))} → {pct(sum(w[1] for w in wrong) / len(wrong))}"
                      if wrong else "-")
        drift = [d for d in (scn_label_drift(folder) for folder in arm.done) if d]
        if drift:
            tops = {d[2] for d in drift}
            weights_now = (f"{sum(d[0] for d in drift) / len(drift):.3f} / {sum(d[1] for d in drift) / len(drift):.3f}")
            top_text = (f"{'/'.join(sorted(tops))}: {pct(sum(d[3] for d in drift) / len(drift))} → "
                        f"{pct(sum(d[4] for d in drift) / len(drift))}")
        else:
            weights_now = top_text = "-"
        rows.append([cond or "-", name, f"{sum(relabelled) / n:.0f}", f"{sum(fixed) / n:.0f}", f"{sum(broke) / n:.0f}",
                     wrong_text, weight, weights_now, top_text])
        first = next(iter(arm.metrics.values()))
        per_epoch.append([f"{cond or '-'} / {name}", " ".join(
            f"{m.get('scn_relabel_fixed', 0)}/{m.get('scn_relabel_broke', 0)}" for m in first)])
    if not rows:
        return ""
    out = ["The mechanism, read from the SCN runs' own metrics (`metrics.jsonl`, mean over seeds): relabels per run, "
           "how many gave a noisy face its clean label back (fixed) and how many replaced a correct label (broke), "
           "the share of training labels that are wrong (injected noise plus broken, minus fixed) in the first and "
           "the last epoch, the mean importance weight in the last epoch of the faces whose label was made noisy "
           "against the others, and of the faces whose training label is wrong then (injected or broken by a "
           "relabel) against those whose label is right (SCN's premise: noisy faces get lower weights; from the "
           "last `scn/epoch_NNN.csv`), and where the relabels took the labels: the class that has most training "
           "labels in the last epoch, its share of the clean labels and of the last epoch's.\n",
           table(["condition", "arm", "relabels", "fixed", "broke", "training labels wrong, % (first → last epoch)",
                  "last-epoch weight: injected noisy / not", "last-epoch weight: label wrong / right",
                  "largest class of the labels: clean share → last epoch, %"], rows),
           "\nEpoch by epoch (seed 0): fixed/broke per epoch.\n",
           table(["condition / arm", "fixed/broke per epoch"], per_epoch)]
    return "\n".join(out)


SIZE_NOTE = {
    "cpu": "The networks are small and the data synthetic (CPU budget: the small CNN on 64 px faces, 4,000 training "
           "faces, 20 epochs; `--size paper` runs the same experiments at the papers' sizes on a GPU): these numbers "
           "say whether an effect shows up under equal conditions, not what the methods reach on real data.",
    "cpu-long": "The CPU experiments at twice the epochs (40; PAtt-Lite's frozen stage 20), from the same pretraining "
                "runs, because the 20-epoch arms failed the convergence rule (docs/EXPERIMENTS.md, findings item "
                "10); the networks are small and the data synthetic: these numbers say whether an effect shows up "
                "under equal conditions, not what the methods reach on real data.",
    "paper": "At the papers' sizes (configs/experiments/paper.yaml: ResNet-18 at 224, RAF-DB's split sizes, SCN's "
             "reference recipe for 70 epochs) on synthetic faces: these numbers say whether an effect shows up under "
             "equal conditions, not what the methods reach on real data.",
}


LOST = {
    "cpu": "\n\nThe 20-epoch runs were lost with the machine that trained them, before runs were recorded "
           "(`results/`, README): the sections stand as they were written from those runs (2026-12-05). The blocks "
           "of 40-epoch arms and the 40-epoch verdict columns of e1 and e1b are rewritten from their records "
           "(`--only e1 e1b`).",
    "cpu-long": "\n\nThe runs of e0, e2, e3, e5, e1c and e1 without noise were lost with the machine that trained "
                "them, before runs were recorded (`results/`, README): those sections, the pretraining table and "
                "the clean-condition verdict of e1 stand as they were written from those runs (2026-12-05). The "
                "sections of e1 and e1b are rewritten (`--only e1 e1b`) from the records of e1's noisy conditions "
                "and of e1b, whose runs all start from the identity pretraining trained again on another machine "
                "from the same config (test accuracy 91.8% against the 92.2% of the pretraining table below); e1's "
                "table rows of the clean condition are kept as they were reported, while its status line and "
                "figure show the runs here only.",
}
"""What each report holds that its runs can no longer show (both reports were updated with ``--only``)."""


SIZE_SHORT = {"cpu": "the CPU size, 20 epochs", "cpu-long": "the CPU size at twice the epochs",
              "paper": "the papers' sizes"}


GENERATED_BY = {"cpu": "--findings docs/experiments_findings.md --out docs/EXPERIMENTS.md",
                "cpu-long": "--size cpu-long --out docs/EXPERIMENTS_long.md",
                "paper": "--size paper --out docs/EXPERIMENTS_paper.md"}
"""Each size's report and the arguments that write it (the hand-written findings read the CPU report)."""


def size_flag(size: plan.Size) -> str:
    return "" if size is plan.CPU else f" --size {size.name}"


def pretraining_section(root: Path, size: plan.Size = plan.CPU) -> str:
    from fer_core.config import load_config

    rows = []
    for run in size.pretraining:
        folder = plan.folder_of(run.run_id, root)
        cfg = load_config(run.config, list(run.overrides))
        done = folder.is_dir() and io.run_state(folder) == "done"
        ev = io.read_eval(folder).get("test/all", {}) if done else {}
        seconds = sum(m.get("seconds", 0.0) for m in io.read_metrics(folder)) if done else None
        opts = cfg.data.options
        rows.append([f"`{run.run_id}`", cfg.model.name, f"{opts.get('task')}, {opts.get('subjects')} subjects, "
                     f"{opts.get('train_size')} faces, {opts.get('image_size')} px", str(cfg.train.total_epochs),
                     pct(ev.get("accuracy")) if done else "not run yet",
                     "-" if seconds is None else f"{seconds / 60:.1f}",
                     f"`python -m fer_core train --config {run.config.relative_to(ROOT)} --run-id {run.run_id}"
                     + "".join(f" --set {o}" for o in run.overrides) + "`"])
    return ("## 0. Pretraining\n\nEvery arm starts its backbone from a pretraining run on SynthFACS subjects that "
            "no FER split contains (identity classification, the offline analogue of SCN's and RAN's MS-Celeb-1M and "
            "PAtt-Lite's ImageNet start; `data.name: synthfaces_pretrain`, docs/SYNTHFACS.md), loaded strictly "
            "(`model.init_from`, the load report in each run's log.txt).\n\n"
            + table(["run", "model", "data", "epochs", "identity test acc", "train min", "command"], rows))


def experiment_section(number: int, exp: plan.Experiment, root: Path, size: plan.Size = plan.CPU,
                       beside: tuple[plan.Size, plan.Experiment] | None = None,
                       draw: bool = True) -> tuple[str, list[list[str]]]:
    """One experiment's section and its claim rows. ``beside`` (another size and its version of this experiment):
    that schedule's arm table under this one's, and its curves dashed in the same figure (``draw``: write the
    figure; without, the section links the figure that is there)."""
    arms = arms_of(exp, root)
    claims = plan.CLAIMS.get(exp.name, [])
    subsets = list(dict.fromkeys(["all", *[s for c in claims for s in c.subsets]]))
    rows = [row for claim in claims for row in claim_rows(claim, arms)]
    other = None
    if beside is not None:
        other_size, other_exp = beside
        other = (other_size.name, arms_of(other_exp, root))
        other_table = (f"\nThe same arms at {SIZE_SHORT[other_size.name]} (`python scripts/experiments.py run "
                       f"{exp.name}{size_flag(other_size)}`). {status(other[1])}\n\n"
                       + arm_table(other_exp, other[1], subsets, note=False))
    out = [f"## {number}. {exp.group}\n", f"**Claim.** {exp.claim}\n",
           f"Command: `python scripts/experiments.py run {exp.name}{size_flag(size)}`. {status(arms)}\n", protocol(exp),
           arm_table(exp, arms, subsets), other_table if other else "",
           "\nEach claim: B against A on the same test faces.\n", table(CLAIM_HEADER, rows),
           curves(exp, arms, other) if draw else ""]
    if exp.name in ("e1", "e1b", "e1c"):  # SCN: the mechanism behind the verdicts
        out.append(scn_evidence(arms))
    return "\n".join(o for o in out if o), rows


def e1b_claims(root: Path, experiments: dict[str, plan.Experiment]) -> list[list[str]]:
    """e1b's arms against e1's baseline and SCN under the same 30% uniform noise (the same test faces)."""
    e1 = arms_of(experiments["e1"], root)
    e1b = arms_of(experiments["e1b"], root)
    pooled = {("", "baseline"): e1.get(("uniform30", "baseline")), ("", "scn"): e1.get(("uniform30", "scn")),
              **{k: v for k, v in e1b.items()}}
    pooled = {k: v for k, v in pooled.items() if v is not None}
    claims = [plan.Claim("SCN as the authors' code beats the baseline (30% uniform)", "baseline", "scn_code"),
              plan.Claim("SCN as the authors' code beats the paper's rule (30% uniform)", "scn", "scn_code"),
              plan.Claim("SCN without relabelling beats the baseline (30% uniform)", "baseline", "scn_no_relabel"),
              plan.Claim("relabelling helps SCN (paper's rule vs none, 30% uniform)", "scn_no_relabel", "scn"),
              plan.Claim("SCN relabelling from the plateau beats the baseline (30% uniform)", "baseline",
                         "scn_plateau")]
    return [row for claim in claims for row in claim_rows(claim, pooled)]


def full_section(number: int, exp: plan.Experiment, experiments: dict[str, plan.Experiment], root: Path,
                 size: plan.Size, beside: tuple[plan.Size, plan.Experiment] | None,
                 draw: bool = True) -> tuple[str, list[list[str]]]:
    """:func:`experiment_section` as the report prints it: e1b's with its claims against e1's arms, which are then
    its claim rows."""
    text, rows = experiment_section(number, exp, root, size, beside, draw)
    if exp.name == "e1b":
        rows = e1b_claims(root, experiments)
        text += "\nAgainst experiment 1's arms under the same noise, on the same test faces:\n\n" + table(
            CLAIM_HEADER, rows)
    return text, rows


def claims_of(exp: plan.Experiment, experiments: dict[str, plan.Experiment], root: Path) -> list[list[str]]:
    """The claim rows of one experiment (``CLAIM_HEADER``), without its section; e1b's against e1's arms."""
    if exp.name == "e1b":
        return e1b_claims(root, experiments)
    arms = arms_of(exp, root)
    return [row for claim in plan.CLAIMS.get(exp.name, []) for row in claim_rows(claim, arms)]


def intro(size: plan.Size) -> list[str]:
    """The report's title and its first paragraph (the protocol; no number read from a run)."""
    return ["# The papers' effects on SynthFACS, under a fair protocol\n",
            f"Generated by `python scripts/experiments_report.py {GENERATED_BY[size.name]}` from the run folders "
             "that `python scripts/experiments.py run"
             f"{size_flag(size)}` fills, or their records in `results/` (resumable "
             "run by run; `plan` lists them with their state). The protocol: every arm starts from the same "
             "pretrained backbone; the arms of an experiment differ only in the overrides listed for them (dropout, "
             "augmentation, optimiser, schedule, epochs and data are shared); three seeds per arm; test accuracy "
             "as the mean over seeds with a 95% confidence interval; every claim tested on the same 3,068 test "
             "faces (or the subset named) with a paired test (`fer_core.stats`: a paired bootstrap over faces and "
             "seeds, 10,000 resamples; exact McNemar when each arm has one run). Verdict: **reproduced** when p < "
             "0.05 and the 95% CI of B - A lies above 0; **not reproduced** when that CI lies at or below 0 or the "
             "test supports A > B; **inconclusive** otherwise. " + SIZE_NOTE[size.name]
            + LOST.get(size.name, "") + "\n"]


def any_done(exp: plan.Experiment, root: Path) -> bool:
    """Whether a run of ``exp`` is done here (its folder or its record)."""
    return any(arm.done for arm in arms_of(exp, root).values())


BESIDE_START = "\nThe same arms at "


def _tables(lines: list[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of each markdown table in ``lines`` (header at start, rows up to end)."""
    out, i = [], 0
    for is_table, group in itertools.groupby(lines, key=lambda line: line.startswith("|")):
        n = len(list(group))
        if is_table:
            out.append((i, i + n))
        i += n
    return out


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


KEY_COLUMNS = ("condition", "arm", "claim", "subset", "condition / arm")
"""The columns that name a row of a report table (the rest are numbers read from runs)."""


def keep_rows(old: str, new: str) -> str:
    """``new`` (a section written from the runs here) with ``old``'s rows (the same section as reported before) for
    what those runs no longer show: a row of ``new`` with nothing finished (an arm with 0 seeds, a claim not run yet)
    takes ``old``'s row of the same arm or claim (its ``KEY_COLUMNS``), and a row of ``old``'s table that ``new``'s
    lacks (an arm with no run here, in SCN's mechanism tables) is put back at its place. Tables are matched by
    header and order."""
    old_lines, new_lines = old.split("\n"), new.split("\n")
    def keyed(lines: list[str]) -> list[tuple[tuple[str, int], int, int]]:
        """Each table as ``((header, how many tables before it have that header), start, end)``."""
        spans = _tables(lines)
        return [((lines[a], sum(lines[x] == lines[a] for x, _ in spans[:i])), a, b) for i, (a, b) in enumerate(spans)]

    old_tables = {key: old_lines[a + 2:b] for key, a, b in keyed(old_lines)}
    for key, a, b in reversed(keyed(new_lines)):
        before = old_tables.get(key)
        if before is None:
            continue
        header = _cells(new_lines[a])
        width = next((i for i, c in enumerate(header) if c not in KEY_COLUMNS), len(header))
        seeds = header.index("seeds") if "seeds" in header else None
        rows = new_lines[a + 2:b]
        keys = [tuple(_cells(r)[:width]) for r in rows]
        kept = {tuple(_cells(r)[:width]): r for r in before}
        for k, row in enumerate(rows):
            cells = _cells(row)
            empty = cells[-1] == "not run yet" or (seeds is not None and cells[seeds] == "0")
            if empty and keys[k] in kept:
                rows[k] = kept[keys[k]]
        for index, row in enumerate(before):
            if tuple(_cells(row)[:width]) not in keys:
                rows.insert(min(index, len(rows)), row)
        new_lines[a + 2:b] = rows
    return "\n".join(new_lines)


def update(text: str, names: Sequence[str], experiments: dict[str, plan.Experiment], root: Path, size: plan.Size,
           beside: plan.Size | None, others: dict[str, plan.Experiment] | None, findings: str | None) -> str:
    """``text`` (a report this script wrote) with only the experiments ``names`` rewritten from their runs: an
    experiment's section when a run of it at ``size`` is here (folder or record; its table rows of runs no longer
    here, :func:`keep_rows`, as they were), else only the block of its
    ``beside`` arms in it when one of theirs is; in the verdict table, its rows' cells of each size whose runs are
    here (a claim whose arms are not both here keeps its verdict); the findings when given. Everything else is kept
    as it was: the sections and verdicts of experiments whose runs this machine no longer has (``results/`` holds
    the records that prevent that) stay as they were reported.
    """
    head, _, verdict_part = text.partition("\n## Verdicts\n")
    if not verdict_part:
        raise SystemExit("--only: the report to update has no '## Verdicts' section; write it whole first")
    chunks = head.split("\n## ")
    lines = verdict_part.split("\n")
    table_at = list(range(*_tables(lines)[0])) if _tables(lines) else []  # the verdict table; findings follow
    for name in names:
        exp = experiments[name]
        at = [i for i, c in enumerate(chunks) if c.split("\n", 1)[0].endswith(f". {exp.group}")]
        if len(at) != 1:
            raise SystemExit(f"--only {name}: the report has no section for {exp.group}; write it whole first")
        number = int(chunks[at[0]].split(".", 1)[0])
        other = (beside, others[name]) if others is not None and beside.plans(name) else None
        main_here = any_done(exp, root)
        other_here = other is not None and any_done(other[1], root)
        section, rows = full_section(number, exp, experiments, root, size, other, draw=main_here)
        if main_here:  # rows of runs no longer here keep what the report had
            chunks[at[0]] = keep_rows(chunks[at[0]], section.removeprefix("## ").rstrip("\n") + "\n")
        elif other_here:  # the block of the other size's arms: from its first line to the end of its table
            new_block = section[section.index(BESIDE_START):].split("\n\n", 2)
            old = chunks[at[0]]
            start = old.index(BESIDE_START)
            old_block = old[start:].split("\n\n", 2)
            chunks[at[0]] = keep_rows(old, old[:start] + "\n\n".join([*new_block[:2], *old_block[2:]]))
        other_rows = claims_of(other[1], others, root) if other_here else None
        mine = [i for i in table_at if lines[i].startswith(f"| {exp.group} |")]
        if len(mine) != len(rows):
            raise SystemExit(f"--only {name}: {len(mine)} verdict rows in the report against {len(rows)} claims")
        for k, i in enumerate(mine):
            cells = _cells(lines[i])
            if main_here and rows[k][7] != "not run yet":  # a verdict the runs here cannot give is kept
                cells[3:5] = [rows[k][4], rows[k][7]]
            if other_rows is not None and len(cells) > 5 and other_rows[k][7] != "not run yet":
                cells[5:7] = [other_rows[k][4], other_rows[k][7]]
            lines[i] = "| " + " | ".join(cells) + " |"
    verdicts = lines[:table_at[-1] + 1] if table_at else lines
    tail = "\n".join(lines[table_at[-1] + 1:]) if table_at else ""
    if findings is not None:
        tail = "\n" + findings
    chunks[0] = "\n".join(intro(size))  # the protocol and the notes, which read no run
    return "\n## ".join(chunks) + "\n## Verdicts\n" + "\n".join(verdicts) + "\n" + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write here (default: print)")
    parser.add_argument("--findings", type=Path, default=None, help="a hand-written reading to append")
    parser.add_argument("--size", choices=list(plan.SIZES), default="cpu",
                        help="which runs of scripts/experiments.py to report (paper: the paper-* runs)")
    parser.add_argument("--beside", choices=[*plan.SIZES, "none"], default=None,
                        help="put this size's verdicts beside each claim's in the verdict table (default: cpu-long "
                             "for the cpu size, none otherwise)")
    parser.add_argument("--only", nargs="+", default=None, metavar="EXPERIMENT",
                        help="rewrite only these experiments in the existing --out report (their sections and "
                             "verdicts, each part from the size whose runs or records are here) and keep the rest as "
                             "it is: for a machine that no longer has the other experiments' runs")
    args = parser.parse_args(argv)
    root = plan.runs_dir()
    size = plan.SIZES[args.size]
    experiments = {name: exp for name, exp in plan.build(size).items() if size.plans(name)}
    beside_name = args.beside or ("cpu-long" if size is plan.CPU else "none")
    beside = None if beside_name in ("none", size.name) else plan.SIZES[beside_name]
    if args.only is not None:
        unknown = [n for n in args.only if n not in experiments]
        if unknown or not args.out or not args.out.exists():
            raise SystemExit(f"--only needs an existing --out report and experiments of the {size.name} plan "
                             f"({', '.join(experiments)})" + (f"; not: {', '.join(unknown)}" if unknown else ""))
        others = None if beside is None else {name: plan.build(beside)[name] for name in experiments}
        findings = args.findings.read_text() if args.findings and args.findings.exists() else None
        args.out.write_text(update(args.out.read_text(), args.only, experiments, root, size, beside, others,
                                   findings))
        print(args.out)
        return 0
    parts = [*intro(size),
             pretraining_section(root, size)]
    verdicts: list[list[str]] = []
    others = None if beside is None else {name: plan.build(beside)[name] for name in experiments}
    for number, exp in enumerate(experiments.values(), start=1):
        text, rows = full_section(number, exp, experiments, root, size, (beside, others[exp.name]) if (
            others is not None and beside.plans(exp.name)) else None)
        parts.append(text)
        verdicts += [[exp.group, *row[:2], row[4], row[7]] for row in rows]
    header = ["experiment", "claim", "subset", "B - A [95% CI]", "verdict"]
    beside_note = ""
    if others is not None:
        rows = [row if beside.plans(exp.name) else [*row[:4], "-", *row[5:7], f"not in the {beside.name} plan"]
                for exp in others.values() for row in claims_of(exp, others, root)]
        if len(rows) != len(verdicts):
            raise SystemExit(f"--beside {beside.name}: {len(rows)} claim rows against {len(verdicts)}")
        verdicts = [[*v, row[4], row[7]] for v, row in zip(verdicts, rows, strict=True)]
        header += [f"{beside.name}: B - A", f"{beside.name}: verdict"]
        beside_note = (f"The last two columns: the same claim from the runs of `python scripts/experiments.py run "
                       f"--size {beside.name}` ({SIZE_SHORT[beside.name]}), on the same test faces; "
                       "\"not run yet\" where they have not run, \"provisional\" where some seeds have.\n\n")
    parts.append("## Verdicts\n\n" + beside_note + table(header, verdicts))
    if args.findings and args.findings.exists():
        parts.append(args.findings.read_text())
    text = "\n".join(parts)
    if args.out:
        args.out.write_text(text)
        print(args.out)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

