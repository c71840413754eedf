"""The SynthFACS experiments of docs/EXPERIMENTS.md: plan, run (resumable, run by run), and their state.

    python scripts/experiments.py plan [EXPERIMENT ...]            # every run, its id and its state
    python scripts/experiments.py run [EXPERIMENT ...] [--parallel 2]
    python scripts/experiments_report.py --out docs/EXPERIMENTS.md  # then the report, from the run folders

Every run has a fixed id (``<group>--<condition>--<arm>--s<seed>``) in ``$FER_RUNS_DIR`` (default ``./runs``), so
``run`` can be stopped at any moment and started again: finished runs are skipped, interrupted or cancelled ones
resumed from their last checkpoint (``train --resume``), failed ones reported (``--retry-failed`` starts them
again). The arms of an experiment differ only in the overrides listed for them; everything else (data, backbone,
pretrained start, dropout, augmentation, optimiser, schedule, epochs, seeds) is the experiment's ``base``.
Pretraining runs (``PRETRAINING``) come first; an experiment's runs start from their weights
(``model.init_from``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "configs" / "experiments" / "pretrained.yaml"


@dataclass(frozen=True)
class Run:
    """One run of the plan: its id, its group and the ``--set`` overrides on top of ``config``."""

    run_id: str
    group: str
    overrides: tuple[str, ...]
    config: Path = BASE


@dataclass(frozen=True)
class Experiment:
    """A claim tested by arms that differ only in their own overrides, under each condition, over seeds.

    Attributes:
        name: the short name on the command line (``e1``).
        group: the run group (``config.group``), one per experiment.
        claim: the paper's claim, in a sentence (the report states it).
        base: overrides every run of the experiment shares.
        arms: arm name -> the overrides that make it that arm (the only difference between arms).
        conditions: condition name -> overrides (e.g. noise levels); every arm runs under every condition.
        seeds: the seeds every arm runs with.
        config: the base config file.
    """

    name: str
    group: str
    claim: str
    base: tuple[str, ...]
    arms: dict[str, tuple[str, ...]]
    conditions: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"": ()})
    seeds: tuple[int, ...] = (0, 1, 2)
    config: Path = BASE

    def runs(self) -> list[Run]:
        out = []
        for cond, cond_sets in self.conditions.items():
            for arm, arm_sets in self.arms.items():
                for seed in self.seeds:
                    parts = [self.group, *([cond] if cond else []), arm, f"s{seed}"]
                    tags = {"variant": arm, "seed": seed, **({"condition": cond} if cond else {})}
                    tag_text = "{" + ", ".join(f"{k}: {v}" for k, v in tags.items()) + "}"
                    sets = (*self.base, *cond_sets, *arm_sets, f"seed={seed}", f"group={self.group}",
                            f"tags={tag_text}", f"name={self.group}-{arm}")
                    out.append(Run("--".join(parts), self.group, sets, self.config))
        return out


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a comparison: arm ``b`` beats arm ``a`` (under ``condition``) on each of ``subsets``."""

    text: str
    a: str
    b: str
    condition: str = ""
    subsets: tuple[str, ...] = ("all",)


PRETRAIN_CNN = "pretrain--identity--small_cnn"
PRETRAIN_MOBILENET = "pretrain--identity--patt_lite"
PRETRAIN_EXPRESSION = "pretrain--expression--small_cnn"
PRETRAINING: list[Run] = [
    Run(PRETRAIN_CNN, "pretrain", (), ROOT / "configs" / "pretrain" / "identity_small_cnn.yaml"),
    Run(PRETRAIN_MOBILENET, "pretrain", (), ROOT / "configs" / "pretrain" / "identity_patt_lite.yaml"),
    Run(PRETRAIN_EXPRESSION, "pretrain", (), ROOT / "configs" / "pretrain" / "expression_small_cnn.yaml"),
]
"""Pretraining on SynthFACS subjects no FER split uses: identity (the offline MS-Celeb-1M / ImageNet), from which
every arm starts its backbone (``model.init_from``), and clean expressions (experiment e1c: SCN from a model that
already knows expressions, the condition its authors say its gains need)."""

SCN = ("model.name=scn", "model.options.backbone=small_cnn", "train.method.name=scn")
RELABEL = "train.method.relabel_epoch=3"
"""SCN on the same small CNN as the baseline: importance branch, logit-weighted CE, rank regularisation and
relabelling with the paper's values (beta 0.7, margin_1 0.15, margin_2 0.2, gamma 0.5, low-importance group),
relabelling from the 4th of 20 epochs (the paper: from the 10th of 70, after about the same share)."""
NOISE = {"clean": ("data.label_noise=0",),
         "uniform30": ("data.label_noise=0.3", "data.label_noise_mode=uniform"),
         "ambiguous30": ("data.label_noise=0.3", "data.label_noise_mode=ambiguous")}

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in [
    Experiment(
        "e0", "e0-pretraining",
        "Starting from a pretrained backbone beats training the same network from scratch (why every founding "
        "paper starts from MS-Celeb-1M or ImageNet weights); here the identity pretraining on other subjects.",
        base=(),
        arms={"scratch": (), "pretrained": (f"model.init_from={PRETRAIN_CNN}",)}),
    Experiment(
        "e1", "e1-scn-noise",
        "SCN (Wang et al., CVPR 2020) loses less accuracy than its baseline as label noise grows: noisy samples get "
        "low importance weights and some are relabelled to their true class.",
        base=(f"model.init_from={PRETRAIN_CNN}",),
        arms={"baseline": (), "scn": (*SCN, RELABEL)},
        conditions=NOISE),
    Experiment(
        "e1b", "e1b-scn-parts",
        "Which part of SCN does what under 30% uniform noise: the authors' code (every sample relabelled, loss "
        "CE + RR), SCN without relabelling, and relabelling started once validation accuracy stops improving "
        "(patience 2), beside e1's paper-rule SCN and baseline on the same faces.",
        base=(f"model.init_from={PRETRAIN_CNN}", *NOISE["uniform30"]),
        arms={"scn_code": (*SCN, RELABEL, "train.method.relabel_scope=all", "train.method.loss=code"),
              "scn_no_relabel": (*SCN, "train.method.relabel_epoch=100000"),
              "scn_plateau": (*SCN, "train.method.relabel_start=plateau", "train.method.relabel_patience=2")}),
    Experiment(
        "e1c", "e1c-scn-expression-start",
        "SCN beats its baseline under 30% uniform noise when both start from a model already trained on clean "
        "expressions of other subjects (SCN's authors: its gains need a good starting model).",
        base=(f"model.init_from={PRETRAIN_EXPRESSION}", *NOISE["uniform30"]),
        arms={"baseline": (), "scn": (*SCN, RELABEL)}),
    Experiment(
        "e2", "e2-ldl",
        "Label distribution learning (EfficientFace, LFER-LDL) beats cross-entropy on the hard labels, most on "
        "ambiguous faces.",
        base=(f"model.init_from={PRETRAIN_CNN}",),
        arms={"ce": (), "ldl": ("train.method.name=ldl",)}),
    Experiment(
        "e3", "e3-ran",
        "Region Attention Networks (Wang et al., TIP 2020) beat the plain network on occluded and turned faces: "
        "the face and five crops through the shared network, self- and relation attention, feature fusion, the "
        "region-biased loss.",
        base=(f"model.init_from={PRETRAIN_CNN}", "data.options.train_size=2000"),
        arms={"baseline": (),
              "ran": ("model.name=ran", "model.options.backbone=small_cnn", "train.region_bias.weight=1",
                      "train.region_bias.margin=0.1")}),
    Experiment(
        "e4", "e4-sam",
        "Sharpness-aware minimisation around SGD (Foret et al., ICLR 2021; the ECA-ResNet + SAM report) generalises "
        "better than the same SGD.",
        base=(f"model.init_from={PRETRAIN_CNN}", "train.optimizer.name=sgd", "train.optimizer.lr=0.01",
              "train.optimizer.momentum=0.9", "train.optimizer.weight_decay=0.0005"),
        arms={"sgd": (), "sam": ("train.optimizer.sam.enabled=true", "train.optimizer.sam.rho=0.05")}),
    Experiment(
        "e5", "e5-patt-lite",
        "PAtt-Lite's attention classifier (Ngwe et al., IEEE Access 2024), here over its 2x2 patch tokens as the "
        "paper describes, beats the same network with the tokens only pooled, most on occluded and turned faces.",
        base=(f"model.init_from={PRETRAIN_MOBILENET}", "model.name=patt_lite_patch", "model.input_size=224",
              "model.options={}", "data.options.image_size=112", "data.options.train_size=2000",
              "train.epochs=10", "train.optimizer.name=adam", "train.optimizer.lr=0.001",
              "train.optimizer.weight_decay=0", "train.stages=[{name: frozen_backbone, epochs: 10, "
              "freeze: backbone, freeze_bn: true}]"),
        arms={"pooled": ("model.options.attention=none",), "patch_attention": ()}),
]}
"""The experiments, by name, in the order ``run`` takes them."""

CLAIMS: dict[str, list[Claim]] = {
    "e0": [Claim("the identity-pretrained start beats training from scratch", "scratch", "pretrained",
                 subsets=("all", "occlusion", "pose30"))],
    "e1": [Claim("SCN beats the baseline without noise", "baseline", "scn", "clean"),
           Claim("SCN beats the baseline under 30% uniform noise", "baseline", "scn", "uniform30"),
           Claim("SCN beats the baseline under 30% ambiguous noise", "baseline", "scn", "ambiguous30")],
    "e1c": [Claim("SCN beats the baseline, both from the expression-pretrained start (30% uniform)", "baseline",
                  "scn")],
    "e2": [Claim("LDL beats cross-entropy", "ce", "ldl", subsets=("all", "ambiguous"))],
    "e3": [Claim("RAN beats the plain network on occluded and turned faces", "baseline", "ran",
                 subsets=("all", "occlusion", "pose30", "pose45"))],
    "e4": [Claim("SAM beats SGD", "sgd", "sam", subsets=("all", "occlusion", "pose30"))],
    "e5": [Claim("PAtt-Lite's patch attention beats pooling the patches", "pooled", "patch_attention",
                 subsets=("all", "occlusion", "pose30", "pose45"))],
}
"""What each experiment tests, arm against arm, for the report (scripts/experiments_report.py)."""


# --------------------------------------------------------------------------------------------- running
def runs_dir() -> Path:
    return Path(os.environ.get("FER_RUNS_DIR") or ROOT / "runs").expanduser().resolve()


def state_of(run: Run, root: Path) -> str:
    """``missing``, or the run's state as ``fer_core.io.run_state`` reads it."""
    from fer_core import io

    folder = root / run.run_id
    if not folder.is_dir():
        return "missing"
    return io.run_state(folder)


def command(run: Run, root: Path) -> list[str]:
    """The ``train`` command that starts the run, or resumes it when it has a checkpoint."""
    from fer_core import runs

    folder = root / run.run_id
    base = [sys.executable, "-m", "fer_core", "train", "--quiet", "--runs-dir", str(root)]
    if folder.is_dir() and runs.resumable(folder):
        return [*base, "--resume", str(folder)]
    args = [*base, "--config", str(run.config), "--run-id", run.run_id]
    for item in run.overrides:
        args += ["--set", item]
    return args


def execute(run: Run, root: Path, threads: int, retry_failed: bool) -> str:
    """Bring one run to ``done`` if it can be; returns its final state."""
    state = state_of(run, root)
    if state == "done":
        return state
    if state == "failed" and not retry_failed:
        return state
    if state in ("queued", "running"):
        return state  # another process owns it
    folder = root / run.run_id
    from fer_core import runs

    if folder.is_dir() and not runs.resumable(folder):  # stopped before its first epoch: nothing to keep
        shutil.rmtree(folder)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    log = root / ".experiments" / f"{run.run_id}.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        subprocess.run(command(run, root), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    return state_of(run, root)


def selected(names: list[str]) -> list[Experiment]:
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(EXPERIMENTS)}")
    return [EXPERIMENTS[n] for n in names] if names else list(EXPERIMENTS.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["plan", "run"])
    parser.add_argument("experiments", nargs="*", help=f"default: all ({', '.join(EXPERIMENTS)})")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (each gets cores / parallel threads)")
    parser.add_argument("--retry-failed", action="store_true", help="start failed runs again")
    args = parser.parse_args(argv)
    root = runs_dir()
    chosen = selected(args.experiments)
    todo = [r for e in chosen for r in e.runs()]
    needed = [p for p in PRETRAINING if any(f"model.init_from={p.run_id}" in r.overrides for r in todo)]
    plan = [*needed, *todo]
    if args.action == "plan":
        for run in plan:
            print(f"{state_of(run, root):12} {run.run_id}")
        print(f"{len(plan)} runs in {root}")
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, args.parallel))
    t0 = time.monotonic()
    for run in needed:  # the chosen experiments start from these
        state = execute(run, root, cores, args.retry_failed)
        print(f"[{time.monotonic() - t0:7.0f}s] {run.run_id}: {state}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for run, state in zip(todo, pool.map(lambda r: execute(r, root, threads, args.retry_failed), todo),
                              strict=True):
            print(f"[{time.monotonic() - t0:7.0f}s] {run.run_id}: {state}", flush=True)
    states = [state_of(r, root) for r in plan]
    print(f"{states.count('done')} of {len(plan)} runs done in {root}")
    return 0 if all(s == "done" for s in states) else 1


if __name__ == "__main__":
    raise SystemExit(main())
