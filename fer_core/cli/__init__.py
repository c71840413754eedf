"""``python -m fer_core ...``: the library's operations from a shell.

Commands::

    train --config configs/X.yaml [--set k=v ...] [--run-id ID] [--resume runs/ID] [--runs-dir DIR]
          [--backend slurm --slurm partition=gpu,gpus=1,time=2:00:00]   a SLURM job instead of this process
    runs [--group NAME] [--json]      table of runs, newest first
    sweep --config X (--grid k=v1,v2 ... | --variant name:k=v,k=v ...) [--set k=v] [--group G] [--parallel N]
          [--dry-run] [--runs-dir DIR] [--backend slurm --slurm k=v,...]   a grid sweep or an ablation: one run per
          point, then a table of the group (with SLURM: one job array, at most --parallel at once)
    search --config X --space space.yaml --trials N [--set k=v] [--group G] [--parallel N] [--seed S]
          [--runs-dir DIR] [--backend slurm --slurm k=v,...]   an Optuna search (TPE, median pruning): every
          trial a run of the group (with SLURM: a job each)
    evaluate RUN [--split test] [--subset S ...] [--weights best|last]   accuracy, F1, calibration (ECE, NLL,
          Brier; after temperature scaling too when the run has a temperature)
    calibrate RUN [--weights best|last] [--device D]   fit the run's temperature on its validation split
          (calibration.json) and re-evaluate its eval/ files: a before/after table per split and subset
    evaluate RUN [--split test] [--subset S ...] [--weights best|last]   on SynthFACS also accuracy per factor bin
    factors RUN [--split test] [--factor F ...]   SynthFACS accuracy per bin of yaw, occluder, intensity, light...
    probe RUN --factor F [--n 200] [--steps=a,b,c | --steps=start:stop:step] [--seed S]   one factor swept on the
          same test faces, all else fixed: accuracy, P(true class), flips and predicted shares per step
    cancel RUN                        stop a queued or running run
    models [NAME ...] [--num-classes 7] [--no-latency] [--json]   params, MACs, CPU latency
    data info NAME [--root DIR] [--set option=value ...] [--json]   faces per split, class and subset; skipped rows
    data sheet NAME --out sheet.png [--set option=value ...]
    data export NAME --out DIR [--set option=value ...]
    predict IMAGE [--model NAME | --run RUN [--calibrated] | --onnx FILE [--calibrated]] [--all-faces] [--whole-image]
          [--max-pixels N] [--json]   (with --onnx: onnxruntime runs an exported file; torch is not needed)
    predict FOLDER_OR_ZIP [--out predictions.csv|.parquet] [--largest] [--no-recursive] [model options]   every face
          of every file as a table (unreadable files: a row with the reason), a progress bar and a summary
    export RUN_OR_MODEL [--format onnx|torchscript] [--out FILE] [--weights best|last] [--no-check] [--n N]
          a self-contained ONNX or TorchScript file (normalisation inside, metadata), then its parity with PyTorch
    explain IMAGE --method M --out overlay.png [--model NAME | --run RUN [--calibrated]] [--target CLASS]
          [--whole-image]
    explain-eval RUN [--methods a,b] [--n 200] [--out FILE]   explanation methods vs SynthFACS masks
    explain-sanity RUN_OR_MODEL --out DIR [--methods a,b] [--n 20] [--shuffled RUN] [--modes cascade,independent]
          [--record docs/explain_sanity.json]   model and data randomisation checks (Adebayo et al. 2018)

Exit codes: 0 success, 1 the operation failed (message on stderr, details in the run's log.txt; also an unwritable
runs folder or a full disk), 2 bad command line or config (message names the key; no traceback). ``train`` checks a
new run's config before creating its folder (:func:`fer_core.lifecycle.check_launch`: data folder, device, model and
data set options, the model a method needs), and the folder appears with ``config.yaml`` and ``status.json``
already in it.

Layout: one module per family of commands, each holding the commands (``cmd_*``) and, below them, the parsers of
their arguments (``add_*``): :mod:`~fer_core.cli.runs` (train, runs, sweep, search, cancel),
:mod:`~fer_core.cli.evaluate` (evaluate, calibrate, factors, probe), :mod:`~fer_core.cli.models`,
:mod:`~fer_core.cli.data`, :mod:`~fer_core.cli.predict` (predict, export), :mod:`~fer_core.cli.explain` (explain,
explain-eval, explain-sanity); the helpers they share are in :mod:`~fer_core.cli.common`. Every import of torch or of
an operation stays inside the command that needs it, so ``--help`` is fast and ``predict --onnx`` runs without torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fer_core.cli import data, evaluate, explain, models, predict, runs
from fer_core.cli.common import UsageError
from fer_core.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer_core", description="FER Lab: train, evaluate, inspect.")
    sub = parser.add_subparsers(dest="command", required=True)
    # the order of `--help`; each command's parser is defined beside the command, in its family's module
    for add in (runs.add_train, runs.add_runs, runs.add_sweep, runs.add_search, evaluate.add_evaluate,
                evaluate.add_calibrate, evaluate.add_factors, evaluate.add_probe, runs.add_cancel, models.add_models,
                data.add_data, predict.add_predict, explain.add_explain, predict.add_export, explain.add_explain_eval,
                explain.add_explain_sanity):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return code
    except BrokenPipeError:  # `python -m fer_core runs --json | head`: the reader has all it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not complain again
        return 141  # as a process killed by SIGPIPE
    except (ConfigError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, ImportError) as err:  # OSError: also unwritable folders, full disks
        print(f"error: {err}", file=sys.stderr)
        return 1
