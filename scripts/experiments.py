"""The SynthFACS experiments of docs/EXPERIMENTS.md: plan, run (resumable, run by run), and their state.

    python scripts/experiments.py plan [EXPERIMENT ...]            # every run, its id and its state
    python scripts/experiments.py run [EXPERIMENT ...] [--parallel 2]
    python scripts/experiments.py run --size paper [EXPERIMENT ...]   # the papers' sizes, on a GPU
    python scripts/experiments.py run --size cpu-long [EXPERIMENT ...]  # the CPU size at twice the epochs
    python scripts/experiments_report.py --out docs/EXPERIMENTS.md  # then the report, from the run folders

Every run has a fixed id (``<group>--<condition>--<arm>--s<seed>``) in ``$FER_RUNS_DIR`` (default ``./runs``), so
``run`` can be stopped at any moment and started again: finished runs are skipped, interrupted or cancelled ones
resumed from their last checkpoint (``train --resume``), failed ones reported (``--retry-failed`` starts them
again). The arms of an experiment differ only in the overrides listed for them; everything else (data, backbone,
pretrained start, dropout, augmentation, optimiser, schedule, epochs, seeds) is the experiment's ``base``.
Pretraining runs (``Size.pretraining``) come first; an experiment's runs start from their weights
(``model.init_from``). A planned run whose resolved config equals an earlier one's but for name, group and tags
(e1's clean baseline and e2's cross-entropy arm are e0's pretrained arm) is not trained again: once that run is
done its folder is copied under the later id, with its own labels and a line in its log saying so. ``--size`` picks
how big everything is (:data:`CPU`, :data:`CPU_LONG` at twice the epochs, or :data:`PAPER`): the experiments, arms
and claims are the same at every size.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import shutil
import subprocess
import sys
import threading
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


PRETRAIN_DIR = ROOT / "configs" / "pretrain"


@dataclass(frozen=True)
class Size:
    """How big the experiments are: the same experiments, arms and claims at another size.

    Attributes:
        name: ``cpu`` (this project's 2-core CPU, a few hours in all) or ``paper`` (the papers' sizes, for a GPU).
        config: the base config every run starts from.
        backbone: the network of the baseline arms, inside SCN and RAN too.
        pretraining: the identity run of ``backbone``, PAtt-Lite's identity run and the clean-expression run.
        relabel_epoch: SCN's first relabelling epoch (0-based).
        prefix: put before every group and pretraining id (runs of two sizes never share an id).
        few_faces: the overrides of the costliest experiments (RAN's six passes, PAtt-Lite at 224) at this size.
        overrides: added to every run of this size, pretraining included (e.g. the device).
        sam_rerun: e4b's schedule, set by the rule stated in docs/experiments_findings.md before the rerun (the SGD
            learning rate chosen on the SGD arm alone; epochs until both arms converge).
        scale: how many times the config's schedule every experiment trains (``train.epochs`` and PAtt-Lite's
            frozen stage; SCN's first relabelling is ``relabel_epoch``, set per size).
        planned: the experiments this size runs, in the order ``run`` takes them when none is named (empty: all).
    """

    name: str
    config: Path
    backbone: str
    pretraining: tuple[Run, Run, Run]
    relabel_epoch: int
    prefix: str = ""
    few_faces: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    sam_rerun: tuple[str, ...] = ()
    scale: int = 1
    planned: tuple[str, ...] = ()

    def plans(self, experiment: str) -> bool:
        """Whether ``experiment`` is one this size runs."""
        return not self.planned or experiment in self.planned


CPU = Size(
    "cpu", BASE, "small_cnn",
    (Run("pretrain--identity--small_cnn", "pretrain", (), PRETRAIN_DIR / "identity_small_cnn.yaml"),
     Run("pretrain--identity--patt_lite", "pretrain", (), PRETRAIN_DIR / "identity_patt_lite.yaml"),
     Run("pretrain--expression--small_cnn", "pretrain", (), PRETRAIN_DIR / "expression_small_cnn.yaml")),
    relabel_epoch=3, few_faces=("data.options.train_size=2000",),
    sam_rerun=("train.optimizer.lr=0.1", "train.epochs=40"))
"""The small CNN on 64 px faces, 4,000 training faces (2,000 for RAN and PAtt-Lite), 20 epochs: the whole set in a
few hours on this 2-core CPU. SCN relabels from the 4th of 20 epochs (the paper: the 10th of 70, about the same
share)."""

_GPU = ("train.device=cuda", "train.precision=bf16")
PAPER = Size(
    "paper", ROOT / "configs" / "experiments" / "paper.yaml", "resnet18",
    (Run("paper--pretrain--identity--resnet18", "pretrain", _GPU, PRETRAIN_DIR / "identity_resnet18_224.yaml"),
     Run("paper--pretrain--identity--patt_lite", "pretrain", (*_GPU, "data.options.subjects=200",
                                                              "data.options.train_size=12800"),
         PRETRAIN_DIR / "identity_patt_lite.yaml"),
     Run("paper--pretrain--expression--resnet18", "pretrain", _GPU, PRETRAIN_DIR / "expression_resnet18_224.yaml")),
    relabel_epoch=9, prefix="paper-", overrides=_GPU, sam_rerun=("train.optimizer.lr=0.1",))
"""The papers' sizes, for a GPU: ResNet-18 at 224 (SCN's and RAN's backbone), RAF-DB's split sizes, SCN's reference
recipe for 70 epochs (configs/experiments/paper.yaml), relabelling from the 10th epoch, every face in every
experiment."""

CPU_LONG = dataclasses.replace(
    CPU, name="cpu-long", prefix="long-", scale=2, relabel_epoch=6,
    sam_rerun=("train.optimizer.lr=0.1", "train.epochs=80"), planned=("e0", "e2", "e3", "e5", "e1c", "e1", "e1b"))
"""The CPU size at twice the epochs (40; PAtt-Lite's frozen stage 20; SCN relabelling from the 7th epoch, the same
share; e4b 80), from the same pretraining runs: the convergence rule of docs/experiments_findings.md (item 5), under
1 point of validation gain over the last five epochs, applied to every experiment after the 20-epoch runs failed
it (item 10). Run ids start with ``long-``. It plans every experiment but e4 (e4b is e4's converged rerun) and
the learning-rate choice e4b-lr, in the order stated before it ran: the claims within a few points first."""

SIZES = {s.name: s for s in (CPU, PAPER, CPU_LONG)}

NOISE = {"clean": ("data.label_noise=0",),
         "uniform30": ("data.label_noise=0.3", "data.label_noise_mode=uniform"),
         "ambiguous30": ("data.label_noise=0.3", "data.label_noise_mode=ambiguous")}


def build(size: Size) -> dict[str, Experiment]:
    """The experiments at one size, by name, in the order ``run`` takes them."""
    cnn, mobilenet, expression = (r.run_id for r in size.pretraining)
    scn = ("model.name=scn", f"model.options.backbone={size.backbone}", "train.method.name=scn")
    relabel = f"train.method.relabel_epoch={size.relabel_epoch}"
    from fer_core.config import load_config

    epochs = (f"train.epochs={size.scale * load_config(size.config).train.epochs}",) if size.scale != 1 else ()
    patt_epochs = 10 * size.scale
    experiments = [
        Experiment(
            "e0", "e0-pretraining",
            "Starting from a pretrained backbone beats training the same network from scratch (why every founding "
            "paper starts from MS-Celeb-1M or ImageNet weights); here the identity pretraining on other subjects.",
            base=(),
            arms={"scratch": (), "pretrained": (f"model.init_from={cnn}",)}),
        Experiment(
            "e1", "e1-scn-noise",
            "SCN (Wang et al., CVPR 2020) loses less accuracy than its baseline as label noise grows: noisy samples "
            "get low importance weights and some are relabelled to their true class.",
            base=(f"model.init_from={cnn}",),
            arms={"baseline": (), "scn": (*scn, relabel)},
            conditions=NOISE),
        Experiment(
            "e1b", "e1b-scn-parts",
            "Which part of SCN does what under 30% uniform noise: the authors' code (every sample relabelled, loss "
            "CE + RR), SCN without relabelling, and relabelling started once validation accuracy stops improving "
            "(patience 2), beside e1's paper-rule SCN and baseline on the same faces.",
            base=(f"model.init_from={cnn}", *NOISE["uniform30"]),
            arms={"scn_code": (*scn, relabel, "train.method.relabel_scope=all", "train.method.loss=code"),
                  "scn_no_relabel": (*scn, "train.method.relabel_epoch=100000"),
                  "scn_plateau": (*scn, "train.method.relabel_start=plateau", "train.method.relabel_patience=2")}),
        Experiment(
            "e1c", "e1c-scn-expression-start",
            "SCN beats its baseline under 30% uniform noise when both start from a model already trained on clean "
            "expressions of other subjects (SCN's authors: its gains need a good starting model).",
            base=(f"model.init_from={expression}", *NOISE["uniform30"]),
            arms={"baseline": (), "scn": (*scn, relabel)}),
        Experiment(
            "e2", "e2-ldl",
            "Label distribution learning (EfficientFace, LFER-LDL) beats cross-entropy on the hard labels, most on "
            "ambiguous faces.",
            base=(f"model.init_from={cnn}",),
            arms={"ce": (), "ldl": ("train.method.name=ldl",)}),
        Experiment(
            "e3", "e3-ran",
            "Region Attention Networks (Wang et al., TIP 2020) beat the plain network on occluded and turned faces: "
            "the face and five crops through the shared network, self- and relation attention, feature fusion, the "
            "region-biased loss.",
            base=(f"model.init_from={cnn}", *size.few_faces),
            arms={"baseline": (),
                  "ran": ("model.name=ran", f"model.options.backbone={size.backbone}", "train.region_bias.weight=1",
                          "train.region_bias.margin=0.1")}),
        Experiment(
            "e4", "e4-sam",
            "Sharpness-aware minimisation around SGD (Foret et al., ICLR 2021; the ECA-ResNet + SAM report) "
            "generalises better than the same SGD.",
            base=(f"model.init_from={cnn}", "train.optimizer.name=sgd", "train.optimizer.lr=0.01",
                  "train.optimizer.momentum=0.9", "train.optimizer.weight_decay=0.0005"),
            arms={"sgd": (), "sam": ("train.optimizer.sam.enabled=true", "train.optimizer.sam.rho=0.05")}),
        Experiment(
            "e4b-lr", "e4b-sgd-lr",
            "Step one of e4b's rule (stated before the rerun): the SGD arm alone, one seed, at learning rates 0.03 "
            "and 0.1 (0.01 is e4's SGD arm, seed 0); the rate with the best validation accuracy at epoch 20 is "
            "e4b's. No claim is tested here.",
            base=(f"model.init_from={cnn}", "train.optimizer.name=sgd", "train.optimizer.momentum=0.9",
                  "train.optimizer.weight_decay=0.0005"),
            arms={"lr0.03": ("train.optimizer.lr=0.03",), "lr0.1": ("train.optimizer.lr=0.1",)},
            seeds=(0,)),
        Experiment(
            "e4b", "e4b-sam-converged",
            "e4 again with a schedule that converges, as stated before the rerun: SGD's learning rate chosen from "
            "0.01, 0.03 and 0.1 by the SGD arm's validation accuracy at epoch 20 (seed 0: 60.1, 78.5, 80.8), and "
            "40 epochs because the chosen SGD run still gained 21 points over its last five of 20.",
            base=(f"model.init_from={cnn}", "train.optimizer.name=sgd", "train.optimizer.momentum=0.9",
                  "train.optimizer.weight_decay=0.0005", *size.sam_rerun),
            arms={"sgd": (), "sam": ("train.optimizer.sam.enabled=true", "train.optimizer.sam.rho=0.05")}),
        Experiment(
            "e5", "e5-patt-lite",
            "PAtt-Lite's attention classifier (Ngwe et al., IEEE Access 2024), here over its 2x2 patch tokens as the "
            "paper describes, beats the same network with the tokens only pooled, most on occluded and turned faces.",
            base=(f"model.init_from={mobilenet}", "model.name=patt_lite_patch", "model.input_size=224",
                  "model.options={}", "data.options.image_size=112", *size.few_faces,
                  f"train.epochs={patt_epochs}", "train.optimizer.name=adam", "train.optimizer.lr=0.001",
                  "train.optimizer.weight_decay=0", f"train.stages=[{{name: frozen_backbone, epochs: {patt_epochs}, "
                  "freeze: backbone, freeze_bn: true}]"),
            arms={"pooled": ("model.options.attention=none",), "patch_attention": ()}),
    ]
    return {e.name: dataclasses.replace(e, group=size.prefix + e.group, config=size.config,
                                        base=(*size.overrides, *epochs, *e.base)) for e in experiments}


EXPERIMENTS = build(CPU)
"""The experiments at the CPU size, by name, in the order ``run`` takes them."""
PRETRAINING: list[Run] = list(CPU.pretraining)
"""Pretraining on SynthFACS subjects no FER split uses: identity (the offline MS-Celeb-1M / ImageNet), from which
every arm starts its backbone (``model.init_from``), and clean expressions (experiment e1c: SCN from a model that
already knows expressions, the condition its authors say its gains need)."""

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
    "e4b": [Claim("SAM beats SGD (converged schedule)", "sgd", "sam", subsets=("all", "occlusion", "pose30"))],
    "e5": [Claim("PAtt-Lite's patch attention beats pooling the patches", "pooled", "patch_attention",
                 subsets=("all", "occlusion", "pose30", "pose45"))],
}
"""What each experiment tests, arm against arm, for the report (scripts/experiments_report.py)."""


# --------------------------------------------------------------------------------------------- running
def runs_dir() -> Path:
    return Path(os.environ.get("FER_RUNS_DIR") or ROOT / "runs").expanduser().resolve()


def records_dir() -> Path:
    """Where finished runs are recorded in the repository (``$FER_RECORDS_DIR``, default ``results/``): a run folder
    is lost with the machine that trained it, its record is committed."""
    return Path(os.environ.get("FER_RECORDS_DIR") or ROOT / "results").expanduser().resolve()


RECORDED = ("config.yaml", "status.json", "metrics.jsonl", "log.txt", "calibration.json")
"""The files a record keeps of a finished run folder as they are. With them: the evaluations (``eval/*.json``) and
their per-face predictions without the class probabilities (index, label, prediction, correct, confidence: what the
paired tests read), and the last of SCN's per-epoch tables (``scn/epoch_NNN.csv``, read for the label drift). Not
the weights, TensorBoard events, the other SCN tables or the per-factor tables: a record is what the reports read,
small enough to commit (about 0.3 MB a run)."""


def record(run_id: str, root: Path, records: Path | None = None) -> Path | None:
    """Copy what the reports read of the finished run ``root/run_id`` (``RECORDED``) to ``records/run_id``, built
    under a hidden name and renamed into place; returns the record, or None when the run is not done. An existing
    record is replaced (a rerun of the same id is the newer result)."""
    from fer_core import io

    src = root / run_id
    if not src.is_dir() or io.run_state(src) != "done":
        return None
    records = records or records_dir()
    dst, tmp = records / run_id, records / f".{run_id}.record.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in RECORDED:
        if (src / name).is_file():
            shutil.copy2(src / name, tmp / name)
    if (src / "eval").is_dir():
        import pandas as pd

        (tmp / "eval").mkdir()
        for path in sorted((src / "eval").glob("*.json")):
            shutil.copy2(path, tmp / "eval" / path.name)
        for path in sorted((src / "eval").glob("*_predictions.csv")):
            table = pd.read_csv(path)
            table.drop(columns=[c for c in table.columns if c.startswith("prob_")]).to_csv(
                tmp / "eval" / path.name, index=False)
    scn = sorted((src / "scn").glob("epoch_*.csv"))
    if scn:
        (tmp / "scn").mkdir()
        shutil.copy2(scn[-1], tmp / "scn" / scn[-1].name)
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    return dst


def folder_of(run_id: str, root: Path) -> Path:
    """The run's folder: ``root/run_id`` when it is there, else its record (``records_dir()``) when there is one,
    else ``root/run_id`` (missing)."""
    folder = root / run_id
    if folder.is_dir():
        return folder
    recorded = records_dir() / run_id
    return recorded if recorded.is_dir() else folder


def state_of(run: Run, root: Path, records: bool = True) -> str:
    """``missing``, or the run's state as ``fer_core.io.run_state`` reads it; with ``records``, from its record when
    only that is here (``done``). A pretraining run is read without: the runs that start from it need its weights,
    which a record does not keep."""
    from fer_core import io

    folder = folder_of(run.run_id, root) if records else root / run.run_id
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


def execute(run: Run, root: Path, threads: int, retry_failed: bool, records: bool = True) -> str:
    """Bring one run to ``done`` if it can be, and record it (:func:`record`); returns its final state. ``records``:
    a recorded run counts as done (not for a pretraining run, whose weights are needed)."""
    state = state_of(run, root, records)
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
    record(run.run_id, root)
    return state_of(run, root, records)


_LABELS = ("group=", "name=", "tags=")


def training_key(run: Run) -> str:
    """What a run trains: its resolved config without its labels (name, group, tags). Two planned runs with one key
    train the same thing (e0's pretrained arm, e1's clean baseline and e2's cross-entropy arm)."""
    from fer_core.config import load_config

    data = load_config(run.config, list(run.overrides)).to_dict()
    return repr(sorted((k, v) for k, v in data.items() if k not in ("name", "group", "tags")))


def reuse(source: Run, run: Run, root: Path) -> str:
    """Give ``run`` the finished folder of ``source``, which trained the same config (``training_key``): a copy
    whose config.yaml carries ``run``'s labels and whose log says what it was copied from. Built under a hidden name
    and renamed into place, so a killed copy leaves no half run. Returns ``run``'s state."""
    from fer_core import io
    from fer_core.config import load_config

    src, dst = folder_of(source.run_id, root), root / run.run_id
    tmp = root / f".{run.run_id}.reuse.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    labels = [o for o in run.overrides if o.startswith(_LABELS)]
    io.atomic_write_text(tmp / "config.yaml", load_config(src / "config.yaml", labels).to_yaml())
    with open(tmp / "log.txt", "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO scripts/experiments.py: {run.run_id} is a copy of "
                  f"{source.run_id} (the same config but for name, group and tags), not trained again\n")
    os.rename(tmp, dst)
    record(run.run_id, root)
    return state_of(run, root)


def unique(runs: list[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """The runs to train, and ``(run, source)`` for each planned run that trains what an earlier one does."""
    first: dict[str, Run] = {}
    todo, copies = [], []
    for run in runs:
        source = first.setdefault(training_key(run), run)
        if source is run:
            todo.append(run)
        else:
            copies.append((run, source))
    return todo, copies


def selected(names: list[str], size: Size = CPU) -> list[Experiment]:
    experiments = build(size)
    unknown = [n for n in names if n not in experiments]
    if unknown:
        raise SystemExit(f"unknown experiment(s) {', '.join(unknown)}; valid: {', '.join(experiments)}")
    return [experiments[n] for n in names or size.planned or experiments]


def only(runs: list[Run], globs: list[str]) -> list[Run]:
    """The runs whose id matches one of ``globs`` (``fnmatch``), in plan order."""
    return [r for r in runs if any(fnmatch.fnmatchcase(r.run_id, g) for g in globs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["plan", "run", "record"],
                        help="plan: every run and its state; run: train what is not done; record: copy every finished "
                             "run into the records (results/, committed; `run` does it after each run)")
    parser.add_argument("experiments", nargs="*", help=f"default: all ({', '.join(EXPERIMENTS)}); with --size "
                        f"cpu-long, the ones it plans ({', '.join(CPU_LONG.planned)})")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (each gets cores / parallel threads)")
    parser.add_argument("--retry-failed", action="store_true", help="start failed runs again")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="only the runs of the chosen experiments whose id matches GLOB (shell-style, e.g. "
                             "'*--uniform30--*'); repeat for more; the pretraining they start from comes too")
    parser.add_argument("--size", choices=list(SIZES), default="cpu",
                        help="cpu: this 2-core CPU, a few hours in all (default); paper: the papers' sizes on a GPU "
                             "(ResNet-18 at 224, RAF-DB's split sizes, 70 epochs; run ids start with paper-)")
    args = parser.parse_intermixed_args(argv)  # options may come before or after the experiments
    root = runs_dir()
    size = SIZES[args.size]
    chosen = selected(args.experiments, size)
    todo, copies = unique([r for e in chosen for r in e.runs()])
    if args.only:
        todo, copies = only(todo, args.only), [(r, s) for r, s in copies if only([r], args.only)]
        if not todo and not copies:
            raise SystemExit(f"--only {' '.join(args.only)} matches no run of {', '.join(e.name for e in chosen)}; "
                             "`plan` lists the run ids")
    needed = [p for p in size.pretraining if any(f"model.init_from={p.run_id}" in r.overrides for r in todo)]
    plan = [*needed, *todo, *(run for run, _ in copies)]
    if args.action == "record":
        made = [r.run_id for r in plan if record(r.run_id, root)]
        print(f"{len(made)} of {len(plan)} runs recorded in {records_dir()}" + "".join(f"\n  {m}" for m in made))
        return 0
    if args.action == "plan":
        for run in needed:
            print(f"{state_of(run, root, records=False):12} {run.run_id}")
        for run in todo:
            state = state_of(run, root)
            recorded = " (its record)" if state != "missing" and not (root / run.run_id).is_dir() else ""
            print(f"{state:12} {run.run_id}{recorded}")
        for run, source in copies:
            print(f"{state_of(run, root):12} {run.run_id} (the config of {source.run_id}: copied from it, "
                  "not trained)")
        print(f"{len(plan)} runs in {root}, {len(copies)} of them copies")
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // max(1, args.parallel))
    t0 = time.monotonic()
    for run in needed:  # the chosen experiments start from these (their weights: a record is not enough)
        state = execute(run, root, cores, args.retry_failed, records=False)
        print(f"[{time.monotonic() - t0:7.0f}s] {run.run_id}: {state}", flush=True)
    pending, lock = list(copies), threading.Lock()

    def copy_ready(final: bool = False) -> None:
        """Copy each run whose source is done (as soon as it is, so its claims can be read while others train)."""
        with lock:
            for run, source in list(pending):
                state = state_of(run, root)
                if state == "missing" and state_of(source, root) == "done":
                    state = reuse(source, run, root)
                elif state == "missing" and not final:
                    continue
                pending.remove((run, source))
                print(f"[{time.monotonic() - t0:7.0f}s] {run.run_id}: {state} (a copy of {source.run_id})", flush=True)

    def train(run: Run) -> None:
        state = execute(run, root, threads, args.retry_failed)
        print(f"[{time.monotonic() - t0:7.0f}s] {run.run_id}: {state}", flush=True)
        copy_ready()

    copy_ready()
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        list(pool.map(train, todo))
    copy_ready(final=True)
    states = [state_of(r, root) for r in plan]
    print(f"{states.count('done')} of {len(plan)} runs done in {root}")
    return 0 if all(s == "done" for s in states) else 1


if __name__ == "__main__":
    raise SystemExit(main())
