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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fer_core.config import ConfigError, apply_overrides, load_config


class UsageError(Exception):
    """A command-line mistake: reported on stderr with exit code 2."""


# --------------------------------------------------------------------------------------------- progress
class LineProgress:
    """Draws trainer progress events: a line per phase, epoch and evaluation, and, on a terminal, a progress bar
    inside each epoch (tqdm: images done, images per second, time left). Piped into a file, a log or the app, only
    the lines are written (no carriage returns)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.bar = None
        self.train_size, self.epochs, self.done = 0, "?", 0

    def _line(self, text: str) -> None:
        self._close_bar()
        self.stream.write(f"[{time.monotonic() - self.t0:6.1f}s] {text}\n")
        self.stream.flush()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _batch(self, event: dict[str, Any]) -> None:
        if not self.tty or not self.train_size:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=self.train_size, unit="img", unit_scale=True, file=self.stream, leave=False,
                            dynamic_ncols=True, desc=f"epoch {event['epoch'] + 1}/{self.epochs}")
            self.done = 0
        # images done so far, spread evenly over the epoch's batches (the last one may be smaller)
        done = round(self.train_size * event["batch"] / max(event["batches"], 1))
        self.bar.update(done - self.done)
        self.done = done
        if "loss" in event:
            self.bar.set_postfix(loss=f"{event['loss']:.3f}", refresh=False)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "batch":
            self._batch(event)
        elif kind == "phase":
            if event["phase"] == "train":
                self.train_size, self.epochs = int(event.get("train_size") or 0), event.get("epochs", "?")
            extra = {"data": "loading data", "train": f"training {event.get('train_size', '')} images, "
                     f"{event.get('epochs', '')} epochs", "eval": "evaluating best weights"}.get(event["phase"], "")
            self._line(f"{event['phase']}: {extra}")
        elif kind == "epoch":
            val = f" val_acc {event['val_acc']:.4f} val_f1 {event['val_macro_f1']:.4f}" if "val_acc" in event else ""
            self._line(f"epoch {event['epoch']}/{event['epochs']} loss {event['train_loss']:.4f} "
                       f"acc {event['train_acc']:.4f}{val} lr {event['lr']:.3g} ({event['seconds']:.1f}s)")
        elif kind == "eval":
            self._line(f"{event['split']}/{event['subset']}: accuracy {_fmt(event['accuracy'], 4)} "
                       f"macro_f1 {_fmt(event['macro_f1'], 4)} (n={event['n']})")
        elif kind == "done":
            self._line(f"{event['state']}")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):  # None or NaN
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


# --------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from fer_core import io, lifecycle
    from fer_core.train import train

    if args.backend == "slurm":
        from fer_core import slurm

        if args.resume:
            raise UsageError("--resume runs in this process; a SLURM run resumes itself when requeued, or submit a "
                             "new run")
        if not args.config:
            raise UsageError("train needs --config FILE")
        try:
            options = slurm.parse_options(args.slurm)
        except ValueError as err:
            raise UsageError(str(err)) from None
        run_id, job = lifecycle.submit_train(args.config, args.set, args.run_id, args.runs_dir, slurm=options)
        print(f"run {run_id}: submitted as SLURM job {job} (python -m fer_core runs; cancel: python -m fer_core "
              f"cancel {run_id})", flush=True)
        return 0
    if args.slurm:
        raise UsageError("--slurm options need --backend slurm")
    if args.resume:
        run_dir = io.resolve_run_dir(args.resume, args.runs_dir)
        cfg = load_config(args.config or run_dir / "config.yaml", args.set)
    else:
        if not args.config:
            raise UsageError("train needs --config FILE (or --resume RUN)")
        cfg = load_config(args.config, args.set)
        if args.run_id:
            try:
                io.run_path(args.run_id, args.runs_dir)
            except ValueError as err:
                raise UsageError(f"--run-id: {err}") from None
        try:
            run_dir = lifecycle.open_run(cfg, args.run_id, args.runs_dir, source=str(args.config))
        except lifecycle.RunFolderError as err:
            raise UsageError(str(err)) from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run {run_dir.name}: {run_dir}", flush=True)
    try:
        result = train(cfg, run_dir, progress=None if args.quiet else LineProgress(), resume=bool(args.resume))
    except (ConfigError, UsageError):
        raise
    except Exception as err:  # noqa: BLE001 - reported briefly; the traceback is in log.txt
        print(f"error: training failed: {type(err).__name__}: {err}\n(see {run_dir / 'log.txt'})", file=sys.stderr)
        return 1
    return 0 if result["state"] == "done" else 130


def cmd_runs(args: argparse.Namespace) -> int:
    from fer_core import io

    runs = io.list_runs(args.runs_dir, group=args.group)
    if any(r.get("slurm_job") for r in runs):
        from fer_core import slurm

        slurm.refresh(runs)  # SLURM runs: the job's queue state, and a vanished job's run marked failed
    if args.json:
        print(json.dumps({"runs": list(runs), "skipped": runs.skipped}, indent=2, default=str))
        return 0
    subsets = sorted({s for r in runs for s in r["subset_acc"]})
    header = ["run_id", "state", "model", "data", "epoch", "val_acc", "test_acc", *subsets]
    rows = [[r["run_id"], r["state"] + (f" (SLURM {r['slurm_job']} {r['queue']})" if r.get("queue") else ""),
             r["model"], r["dataset"], f"{r['epoch'] or 0}/{r['epochs'] or '?'}",
             _fmt(r["best_val_acc"]), _fmt(r["test_acc"]), *[_fmt(r["subset_acc"].get(s)) for s in subsets]]
            for r in runs]
    where = io.runs_dir() if args.runs_dir is None else args.runs_dir
    print(_table(rows, header) if rows else f"no runs{f' of group {args.group}' if args.group else ''} in {where}")
    for skip in runs.skipped:
        print(f"skipped {skip['path']}: {skip['reason']}", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.config import format_value
    from fer_core.lifecycle import run_sweep
    from fer_core.sweep import describe_point, parse_grid, parse_variant, plan_sweep

    if not args.grid and not args.variant:
        raise UsageError("sweep needs --grid key=v1,v2,... or --variant name:key=value,... (or both)")
    if args.parallel < 1:
        raise UsageError(f"--parallel must be >= 1 (got {args.parallel})")
    base = load_config(args.config, args.set)
    grid, variants = parse_grid(args.grid), [parse_variant(v) for v in args.variant]
    points = plan_sweep(base, grid, variants=variants, group=args.group)
    group = points[0][1].group
    root = io.runs_dir() if args.runs_dir is None else Path(args.runs_dir).expanduser().resolve()
    if args.backend == "slurm" and not args.dry_run:
        from fer_core import slurm
        from fer_core.lifecycle import submit_sweep

        try:
            options = slurm.parse_options(args.slurm)
        except ValueError as err:
            raise UsageError(str(err)) from None
        submitted = submit_sweep(base, grid, variants=variants, runs_root=root, group=group,
                                 parallel=args.parallel, slurm=options)
        print(f"sweep {group}: {len(submitted)} runs submitted as one SLURM job array, at most {args.parallel} at "
              f"once, into {root}")
        for (tags, _), (run_id, job) in zip(points, submitted, strict=True):
            print(f"  {run_id}  job {job}  {describe_point(tags)}")
        print(f"follow them with: python -m fer_core runs --group {group}")
        return 0
    if args.slurm:
        raise UsageError("--slurm options need --backend slurm")
    print(f"sweep {group}: {len(points)} runs, {args.parallel} at a time, into {root}")
    for i, (tags, cfg) in enumerate(points, start=1):
        print(f"  {i:>3}. {cfg.name}  {describe_point(tags)}")
    if args.dry_run:
        return 0
    t0 = time.monotonic()

    def progress(event: dict[str, Any]) -> None:
        n = f"[{time.monotonic() - t0:6.1f}s] run {event.get('index', 0) + 1}/{event.get('total', 0)}"
        if event["event"] == "start":
            print(f"{n} started {event['run_id']}", flush=True)
        elif event["event"] == "epoch":
            print(f"{n} epoch {event['epoch']}/{event['epochs']}", flush=True)
        elif event["event"] == "end":
            error = f": {event['error']}" if event.get("error") else ""
            print(f"{n} {event['state']}{error}", flush=True)

    try:
        run_ids = run_sweep(base, grid, variants=variants, runs_root=root, group=group, parallel=args.parallel,
                            progress=None if args.quiet else progress)
    except KeyboardInterrupt:
        print(f"interrupted: the sweep's running runs were cancelled (python -m fer_core runs --group {group})",
              file=sys.stderr)
        return 130
    runs = {r["run_id"]: r for r in io.list_runs(root, group=group)}
    rows_in = [runs[rid] for rid in run_ids if rid in runs]
    keys = list(dict.fromkeys(k for r in rows_in for k in r["tags"]))
    rows = [[r["run_id"], r["state"], *[format_value(r["tags"][k]) if k in r["tags"] else "-" for k in keys],
             _fmt(r["best_val_acc"]), _fmt(r["test_acc"])] for r in rows_in]
    print(f"\ngroup {group}:")
    print(_table(rows, ["run_id", "state", *keys, "val_acc", "test_acc"]))
    return 0 if all(r["state"] == "done" for r in rows_in) and len(rows_in) == len(points) else 1


def cmd_search(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.config import format_value
    from fer_core.search import OBJECTIVE, load_space, run_search, search_summary
    from fer_core.sweep import default_group

    if args.trials < 1 or args.parallel < 1:
        raise UsageError(f"--trials and --parallel must be >= 1 (got {args.trials}, {args.parallel})")
    base = load_config(args.config, args.set)
    space = load_space(args.space)
    group = args.group or base.group or default_group(base)
    root = io.runs_dir() if args.runs_dir is None else Path(args.runs_dir).expanduser().resolve()
    print(f"search {group}: {args.trials} trials in all, {args.parallel} at a time, maximising the {OBJECTIVE}, "
          f"into {root}")
    t0 = time.monotonic()

    def progress(event: dict[str, Any]) -> None:
        n = f"[{time.monotonic() - t0:6.1f}s] trial {event['trial']}"
        if event["event"] == "start":
            values = " ".join(f"{k}={format_value(v)}" for k, v in event["params"].items())
            print(f"{n} started {event['run_id']}  {values}", flush=True)
        elif event["event"] == "end":
            value = "-" if event["value"] is None else _fmt(event["value"])
            error = f" ({event['error']})" if event.get("error") else ""
            print(f"{n} {event['state']}: {value}{error}", flush=True)

    try:
        options = None
        if args.backend == "slurm":
            from fer_core import slurm

            try:
                options = slurm.parse_options(args.slurm)
            except ValueError as err:
                raise UsageError(str(err)) from None
        elif args.slurm:
            raise UsageError("--slurm options need --backend slurm")
        run_search(base, space, args.trials, group=group, runs_root=root, parallel=args.parallel, seed=args.seed,
                   progress=None if args.quiet else progress, backend=args.backend, slurm=options)
    except KeyboardInterrupt:
        print("interrupted: the running trials were cancelled; run the same command to go on", file=sys.stderr)
        return 130
    summary = search_summary(group, root)
    keys = list(space)
    rows = [[str(r["trial"]), r["run_id"] or "-", r["state"], *[format_value(r.get(k, "-")) for k in keys],
             str(r["epochs"]), "-" if r["value"] is None else _fmt(r["value"])] for r in summary["trials"]]
    print(f"\nsearch {group}:")
    print(_table(rows, ["trial", "run_id", "state", *keys, "epochs", "val_acc"]))
    if summary["best"]:
        print(f"best: trial {summary['best']['trial']} ({summary['best']['run_id']}), "
              f"val_acc {_fmt(summary['best']['value'])}")
    if summary["importance"]:
        print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importance"].items()))
    return 0 if summary["best"] else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.evaluate import evaluate_run

    run_dir = io.resolve_run_dir(args.run, args.runs_dir)
    results = evaluate_run(run_dir, args.split, args.subset or None, weights=args.weights, device=args.device)
    scaled = any("calibrated" in r for r in results.values())
    rows = [[key, _fmt(r["accuracy"]), _fmt(r["mean_class_accuracy"]), _fmt(r["macro_f1"]), _fmt(r.get("ece")),
             *([_fmt((r.get("calibrated") or {}).get("ece"))] if scaled else []), str(r["n"])]
            for key, r in results.items()]
    print(_table(rows, ["split/subset", "accuracy", "mean_class_acc", "macro_f1", "ece",
                        *(["ece_calibrated"] if scaled else []), "n"]))
    if not scaled:
        print(f"(no temperature for these weights: `python -m fer_core calibrate {run_dir.name}` fits one)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.evaluate import calibrate_run

    run_dir = io.resolve_run_dir(args.run, args.runs_dir)
    found, results = calibrate_run(run_dir, weights=args.weights, device=args.device)
    before, after = found["before"], found["after"]
    print(f"temperature T = {found['temperature']:.4f}, fitted on {found['split']} ({found['n']} faces, "
          f"{found['weights']} weights): NLL {_fmt(before['nll'], 4)} -> {_fmt(after['nll'], 4)}, "
          f"ECE {_fmt(before['ece'], 4)} -> {_fmt(after['ece'], 4)}"
          + (" (at the edge of the searched range)" if found["at_bound"] else ""))
    print(f"written: {io.calibration_path(run_dir)}")
    rows = []
    for key, r in results.items():
        c = r.get("calibrated") or {}
        rows.append([key, str(r["n"]), _fmt(r["accuracy"]),
                     *(f"{_fmt(r.get(m), 4)} -> {_fmt(c.get(m), 4)}" for m in ("ece", "ece_adaptive", "nll", "brier"))])
    print(_table(rows, ["split/subset", "n", "accuracy", "ece", "ece_adaptive", "nll", "brier"]))
    return 0


def cmd_factors(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.factors import FACTORS, check_factor, factors_paths, read_factors

    run_dir = io.resolve_run_dir(args.run, args.runs_dir)
    names = [check_factor(f).name for f in args.factor] or list(FACTORS)
    result = read_factors(run_dir, args.split)
    if result is None:
        raise ValueError(f"{factors_paths(run_dir, args.split)[0]} does not exist: factor accuracies are written by "
                         f"evaluation on SynthFACS; run `python -m fer_core evaluate {run_dir.name} --split "
                         f"{args.split}` (other data sets have none)")
    print(f"{run_dir.name} {args.split}: {result['n']} faces, accuracy {_fmt(result['accuracy'])}; "
          f"95% Wilson intervals")
    for name in names:
        part = result["factors"].get(name)
        if part is None:
            continue
        rows = [[b["bin"], str(b["n"]), _fmt(b["accuracy"]),
                 "-" if b["ci_low"] is None else f"{b['ci_low']:.3f}-{b['ci_high']:.3f}"] for b in part["bins"]]
        skipped = part["not_applicable"]["n"]
        print(f"\n{name}: {part['note']}" + (f" ({skipped} faces not applicable)" if skipped else ""))
        print(_table(rows, ["bin", "n", "accuracy", "95% CI"]))
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.probe import parse_steps, probe, probe_paths

    run_dir = io.resolve_run_dir(args.run, args.runs_dir)
    steps = parse_steps(args.factor, args.steps) if args.steps else None
    result = probe(run_dir, args.factor, n=args.n, steps=steps, split=args.split, seed=args.seed,
                   weights=args.weights, device=args.device)
    names = result["class_names"]
    rows = []
    for row in result["summary"]:
        top = sorted(row["share"].items(), key=lambda kv: -kv[1])[:3]
        rows.append([str(row["step"]), _fmt(row["accuracy"]), _fmt(row["true_prob"]),
                     f"{row['flipped']}/{result['n']}", ", ".join(f"{k} {v:.2f}" for k, v in top if v > 0)])
    print(f"{run_dir.name}: {args.factor} swept on {result['n']} {args.split} faces, everything else fixed; flips "
          f"against {args.factor}={result['reference']}; {len(names)} classes")
    print(_table(rows, [args.factor, "accuracy", "P(true)", "flipped", "most predicted (share)"]))
    print(f"{result['seconds']:.1f} s ({result['render_seconds']:.1f} s rendering); wrote "
          f"{probe_paths(run_dir, args.factor)[0]}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.lifecycle import cancel_run

    print(cancel_run(io.resolve_run_dir(args.run, args.runs_dir)))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fer_core.models import list_models, model_info
    from fer_core.models.profile import profile_models

    if args.num_classes < 1:
        raise UsageError(f"--num-classes must be >= 1 (got {args.num_classes})")
    names = args.names or list_models()
    for name in names:
        model_info(name)  # unknown names fail here, listing the valid ones
    profiles = {p.name: p for p in profile_models(names, num_classes=args.num_classes, latency=not args.no_latency)}
    infos = [{**model_info(n).to_dict(), **profiles[n].to_dict()} for n in names]
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    rows = [[i["name"], "x".join(map(str, i["input_size"])), f"{i['params']:,}", f"{i['params_with_bn_stats']:,}",
             f"{i['macs'] / 1e6:,.1f}", "-" if i["latency_ms"] is None else f"{i['latency_ms']:.1f}",
             i["target_layer"], i["pretrained"] or "-"] for i in infos]
    print(_table(rows, ["model", "input", "params", "params+BN stats", "MMACs", "CPU ms", "cam_layer", "pretrained"]))
    print(f"{args.num_classes} classes. MMACs: millions of multiply-accumulates for one image at its input size "
          "(torch.utils.flop_counter; FLOPs = 2 x MACs). params+BN stats counts BatchNorm running statistics too, "
          f"as Keras does. CPU ms: median of one-image forward passes with {torch_threads()} threads.")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cmd_explain_eval(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.explain import list_methods
    from fer_core.explain.evaluation import evaluate_explanations, synthfaces_eval_faces, to_markdown
    from fer_core.runs import load_run_model

    run_dir = io.resolve_run_dir(args.run, args.runs_dir)
    cfg = load_config(run_dir / "config.yaml")
    if cfg.data.name != "synthfaces":
        raise UsageError(f"explain-eval needs ground-truth masks, which only synthfaces has; run {run_dir.name} "
                         f"was trained on {cfg.data.name}")
    methods = args.methods.split(",") if args.methods else list_methods()
    unknown = [m for m in methods if m not in list_methods()]
    if unknown or args.n < 1:
        raise UsageError(f"unknown method(s) {unknown}; valid: {', '.join(list_methods())}" if unknown
                         else f"--n must be >= 1 (got {args.n})")
    options = {k: v for k, v in cfg.data.options.items() if k not in ("train_size", "val_size")}
    faces, subsets = synthfaces_eval_faces(args.n, **options)
    model = load_run_model(run_dir)
    started = time.perf_counter()
    df = evaluate_explanations(model, faces, methods, subsets=subsets, steps=args.steps)
    order = ["all", *subsets]
    command = (f"python -m fer_core explain-eval {run_dir.name} --n {args.n} --steps {args.steps}"
               + (f" --methods {args.methods}" if args.methods else ""))
    text = (f"Run `{run_dir.name}` ({cfg.model.name}, {cfg.name}); {len(faces)} SynthFACS test faces; "
            f"{time.perf_counter() - started:.0f} s in all. Command: `{command}`\n\n" + to_markdown(df, order))
    if args.out:
        io.atomic_write_text(args.out, text)
        print(args.out)
    else:
        print(text)
    return 0


def _sanity_subject(name: str, runs_dir: str | None, n: int) -> tuple[Any, str, list[tuple[str, Any]], str, str]:
    """``(model, description, faces, key, label)`` for explain-sanity: a run (its test faces when it was trained on
    SynthFACS, else the real faces) or a registered model (the real faces)."""
    from fer_core import io
    from fer_core.explain.sanity import real_faces
    from fer_core.models import create_model, list_models, model_info
    from fer_core.runs import load_run_model

    if name in list_models():
        model = create_model(name, num_classes=len(model_info(name).class_names))
        return model, f"{name} (registered, pretrained weights) on real faces", \
            real_faces(max(0, n - 2))[-n:], name, f"{name}, real faces"
    try:
        run_dir = io.resolve_run_dir(name, runs_dir)
    except FileNotFoundError as err:
        raise UsageError(f"{err}; or name a registered model: {', '.join(list_models())}") from None
    cfg = load_config(run_dir / "config.yaml")
    model = load_run_model(run_dir)
    if cfg.data.name == "synthfaces":
        from fer_core.explain.evaluation import synthfaces_eval_faces

        options = {k: v for k, v in cfg.data.options.items() if k not in ("train_size", "val_size")}
        items, _subsets = synthfaces_eval_faces(n, **options)
        faces = []
        for it in items:
            image = it["image"].permute(1, 2, 0).numpy()
            faces.append((f"test[{int(it['index'])}]", image[..., 0] if image.shape[2] == 1 else image))
        where = "SynthFACS test faces"
    else:
        faces, where = real_faces(max(0, n - 2))[-n:], "real faces"
    return model, f"run {run_dir.name} ({cfg.model.name}, {cfg.data.name}) on {where}", faces, run_dir.name, \
        f"{cfg.model.name} on {cfg.data.name} ({run_dir.name})"


def cmd_explain_sanity(args: argparse.Namespace) -> int:
    import cv2

    from fer_core import io
    from fer_core.explain import list_methods
    from fer_core.explain.sanity import MODES, contact_sheet, record_verdicts, sanity_check, to_markdown
    from fer_core.runs import load_run_model

    methods = args.methods.split(",") if args.methods else list_methods()
    unknown = [m for m in methods if m not in list_methods()]
    modes = args.modes.split(",")
    if unknown:
        raise UsageError(f"unknown method(s) {unknown}; valid: {', '.join(list_methods())}")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1 (got {args.n})")
    if "cascade" not in modes or set(modes) - set(MODES):
        raise UsageError(f"--modes {args.modes!r}: give cascade, optionally with independent ({', '.join(MODES)})")
    model, description, faces, key, label = _sanity_subject(args.subject, args.runs_dir, args.n)
    shuffled = None
    if args.shuffled:
        shuffled_dir = io.resolve_run_dir(args.shuffled, args.runs_dir)
        shuffled_cfg = load_config(shuffled_dir / "config.yaml")
        if not shuffled_cfg.data.shuffle_labels:
            raise UsageError(f"--shuffled {shuffled_dir.name} was not trained with data.shuffle_labels: true; train "
                             "the same config with --set data.shuffle_labels=true")
        # its last weights: the validation accuracy of a label-shuffled run is at chance, so "best" would only pick
        # the first epoch that happened to reach it, a barely trained model
        shuffled = load_run_model(shuffled_dir, weights="last")
        description += f"; data randomisation: run {shuffled_dir.name} (last weights)"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = (f"python -m fer_core explain-sanity {key} --n {args.n} --modes {','.join(modes)}"
               + (f" --methods {args.methods}" if args.methods else "")
               + (f" --shuffled {Path(args.shuffled).name}" if args.shuffled else "") + f" --out {args.out}")
    report = sanity_check(model, [f for _n, f in faces], methods, shuffled=shuffled, modes=modes, seed=args.seed,
                          progress=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)))
    report.settings.update(subject=key, description=description, command=command,
                           faces=[n for n, _f in faces], torch_threads=torch_threads())
    text = (f"{description}. {report.faces} faces, {report.seconds:.0f} s in all on {torch_threads()} torch "
            f"thread(s). Command: `{command}`\n\n" + to_markdown(report))
    io.atomic_write_text(out / "sanity.md", text)
    io.atomic_write_text(out / "sanity.json", json.dumps(report.to_dict(), indent=2) + "\n")
    report.records.to_csv(out / "sanity_faces.csv", index=False)
    written = [out / "sanity.md", out / "sanity.json", out / "sanity_faces.csv"]
    for i in range(min(args.sheets, len(faces))):
        sheet = contact_sheet(model, faces[i][1], methods, shuffled=shuffled, seed=args.seed)
        path = out / f"sanity_sheet_{i}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        written.append(path)
    if args.record:
        written.append(record_verdicts(report, key, description, command, args.record, label=label))
    for path in written:
        print(path)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from fer_core.data.browse import summary

    options = apply_overrides({}, args.set)
    info = summary(args.name, root=args.root, **options)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    columns = {**{s: r for s, r in info["splits"].items()}, **{f"{info['subset_split']}/{s}": r
                                                              for s, r in info["subsets"].items()}}
    rows = [[c, *(f"{r['counts'][c]:,}" for r in columns.values())] for c in info["classes"]]
    rows.append(["total", *(f"{r['n']:,}" for r in columns.values())])
    print(f"{info['name']}" + (f" from {info['root']}" if info["root"] else "") + f": {len(info['classes'])} classes")
    print(_table(rows, ["class", *columns]))
    for label, report in columns.items():
        notes = []
        if report.get("dropped"):
            notes.append("skipped by the published rule: " + ", ".join(f"{k} {v:,}" for k, v in
                                                                         report["dropped"].items()))
        if report.get("unmatched_total"):
            notes.append(f"list entries matching no image: {report['unmatched_total']:,} (e.g. "
                         f"{', '.join(report['unmatched'][:3])})")
        if report.get("duplicates"):
            notes.append(f"repeated list entries: {report['duplicates']:,}")
        if notes:
            print(f"{label}: " + "; ".join(notes))
    if not info["subsets"]:
        from fer_core.data import dataset_info

        ran = "occlusion_list" in (dataset_info(args.name).options or ())
        print("no challenge subsets" + (": give RAN's lists as occlusion_list / pose30_list / pose45_list, or put "
                                        "them in the data set's folder (or its subsets/ folder) under RAN's "
                                        "published names or as occlusion.txt, pose30.txt, pose45.txt" if ran else ""))
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    options = apply_overrides({}, args.set)
    if args.data_command == "sheet":
        from fer_core.data.sheet import contact_sheet

        contact_sheet(args.name, args.out, **options)
    else:
        from fer_core.data.export import export_folder

        export_folder(args.name, args.out, **options)
    print(args.out)
    return 0


def cmd_data_video(args: argparse.Namespace) -> int:
    """``data video synthfaces``: a clip with per-frame ground truth (fer_core.data.synthfaces.clip)."""
    from tqdm import tqdm

    if args.name != "synthfaces":
        raise UsageError(f"only 'synthfaces' renders video clips (got {args.name!r})")
    width, _, height = args.size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise UsageError(f"--size {args.size!r}: give WIDTHxHEIGHT in pixels, e.g. 640x480")
    from fer_core.data.synthfaces.clip import write_clip

    expressions = [e for e in args.expressions.split(",") if e.strip()] if args.expressions is not None else None
    with tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True, disable=None, desc="rendering") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        info = write_clip(args.out, labels=args.labels, progress=progress, faces=args.faces, seconds=args.seconds,
                          fps=args.fps, width=int(width), height=int(height), seed=args.seed,
                          expressions=expressions, label_set=args.label_set, face_size=args.face_size)
    print(f"wrote {info.path} ({info.frames} frames, {info.width}x{info.height}, {info.fps:g} fps, {info.faces} "
          f"face{'s' if info.faces > 1 else ''}) and {info.labels_path}")
    return 0


def _predictor(args: argparse.Namespace):
    from fer_core import io
    from fer_core.predict import Predictor

    if getattr(args, "onnx", None):  # before importing fer_core.models: this path works without torch
        if args.run:
            raise UsageError("--onnx and --run: give one (the exported file already holds the run's weights)")
        return Predictor.from_onnx(args.onnx, temperature="file" if args.calibrated else None)
    from fer_core.models import list_models

    if args.run:
        return Predictor.from_run(io.resolve_run_dir(args.run, args.runs_dir), weights=args.weights,
                                  device=args.device, calibrated=args.calibrated)
    if args.calibrated:
        raise UsageError("--calibrated needs --run: a temperature is fitted for a trained run (python -m fer_core "
                         "calibrate RUN); a registered model has none")
    if args.model not in list_models():
        raise UsageError(f"--model: unknown model {args.model!r}; valid: {', '.join(list_models())}")
    return Predictor.from_model(args.model, device=args.device)


def _pixel_limit(args: argparse.Namespace) -> dict[str, int]:
    """``--max-pixels`` for Predictor.predict/explain, when given (else their default, $FER_MAX_PIXELS or 40 MP)."""
    return {"max_pixels": args.max_pixels} if args.max_pixels else {}


def _no_face(image: str, err: Exception) -> int:
    print(f"error: {image}: {err}\n(on the command line: --whole-image)", file=sys.stderr)
    return 1


def cmd_predict(args: argparse.Namespace) -> int:
    from fer_core.face import NoFaceFound
    from fer_core.videoio import is_video

    if is_video(args.image):
        return _predict_video(args)
    if args.overlay or args.method or args.truth:
        raise UsageError("--overlay, --method and --truth are for a video (for a photo: python -m fer_core explain "
                         "IMAGE --method M --out overlay.png)")
    if os.path.isdir(args.image) or args.image.lower().endswith(".zip") or args.out:
        return _predict_many(args)
    if args.no_recursive:
        raise UsageError("--no-recursive is for a folder: give a folder instead of an image")
    predictor = _predictor(args)
    try:
        preds = predictor.predict(args.image, faces="all" if args.all_faces else "largest",
                                  whole_image_if_none=args.whole_image, **_pixel_limit(args))
    except NoFaceFound as err:
        return _no_face(args.image, err)
    if args.json:
        print(json.dumps({"image": str(args.image), "model": predictor.name,
                          "faces": [p.to_dict() for p in preds]}, indent=2))
        return 0
    for i, p in enumerate(preds, start=1):
        x, y, w, h = p.box
        how = f"{p.detector}, " + (f"aligned {p.face.angle:+.1f} deg" if p.aligned else "not aligned")
        print(f"face {i}: box x={x} y={y} w={w} h={h} ({how})")
        print(_table([[name, f"{prob:.4f}"] for name, prob in p.ranked()], ["class", "probability"]))
        if p.face.note:
            print(f"note: {p.face.note}")
    return 0


def _predict_many(args: argparse.Namespace) -> int:
    """``predict FOLDER`` (or a zip, or an image with ``--out``): a table of every face of every file, with a progress
    bar on stderr and a summary; 0 when at least one image was read, 1 when none could be."""
    from tqdm import tqdm

    from fer_core.batch_predict import describe, predict_folder, predict_path, summarize, write_predictions
    from fer_core.face import READABLE

    out = Path(args.out or "predictions.csv")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"--out {out}: write a .csv or a .parquet file")
    source = Path(args.image)
    if not source.exists():
        raise FileNotFoundError(f"no such folder or file: {source}")
    predictor = _predictor(args)
    options = {"faces": "largest" if args.largest else "all", "whole_image_if_none": args.whole_image,
               **_pixel_limit(args)}
    with tqdm(unit="file", file=sys.stderr, dynamic_ncols=True, disable=None, desc="predicting") as bar:
        def progress(done: int, total: int, name: str) -> None:
            bar.total = total
            bar.update(done - bar.n)

        if source.is_dir():
            df = predict_folder(predictor, source, recursive=not args.no_recursive, progress=progress, **options)
        else:
            df = predict_path(predictor, source, **options)
            progress(1, 1, source.name)
    write_predictions(df, out)
    summary = summarize(df)
    if args.json:
        print(json.dumps({"source": str(source), "model": predictor.name, "out": str(out), **summary}, indent=2))
    else:
        for name, why in list(summary["error_files"].items())[:20]:
            print(f"unreadable: {name}: {why}")
        if summary["errors"] > 20:
            print(f"... and {summary['errors'] - 20} more unreadable files (status column of {out})")
        if summary["errors"]:
            print(f"({READABLE})")
        print(f"{describe(summary)}\nwrote {out} ({len(df)} rows, model {predictor.name})")
    if not summary["images_read"]:
        what = "no files in it" if not summary["files"] else "none of its files is a readable image"
        print(f"error: {source}: {what} (see {out})", file=sys.stderr)
        return 1
    return 0


@contextlib.contextmanager
def _frame_bar(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar on stderr for fer_core.video's ``progress(done, total)`` (total 0 when the container has none)."""
    from tqdm import tqdm

    with tqdm(unit="frame", file=sys.stderr, dynamic_ncols=True, disable=None, desc=desc) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = max(total, done)
            bar.update(done - bar.n)

        yield progress


def _predict_video(args: argparse.Namespace) -> int:
    """``predict clip.mp4 --out frames.csv [--overlay out.webm --method gradcam]``: every face of every frame,
    tracked and smoothed (fer_core.video), with a progress bar on stderr and a summary per face."""
    from fer_core import video

    out = Path(args.out or "frames.csv")
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise UsageError(f"--out {out}: write a .csv or a .parquet file")
    if args.method and not args.overlay:
        raise UsageError("--method draws an explanation into the overlay video: give --overlay out.webm too")
    if args.overlay and Path(args.overlay).suffix.lower() not in video.WRITERS:
        raise UsageError(f"--overlay {args.overlay}: write a {', '.join(video.WRITERS)} file (.webm plays in browsers)")
    if args.no_recursive:
        raise UsageError("--no-recursive is for a folder, not a video")
    predictor = _predictor(args)
    if args.method and predictor.model is None:
        raise UsageError("--method needs the PyTorch model (--run or --model): an ONNX file has no gradients")
    labels = None
    if args.truth:  # read before the video: a bad label file fails at once
        from fer_core.data.synthfaces.clip import read_labels

        labels = read_labels(args.truth)
    options = {"faces": "largest" if args.largest else "all", "detect_every": args.detect_every,
               "detect_side": args.detect_side or None, "smooth_s": args.smooth, "align": args.align}
    if args.max_pixels:
        options["max_pixels"] = args.max_pixels
    with _frame_bar("predicting") as progress:
        df = video.predict_video(predictor, args.image, progress=progress, **options)
    video.write_predictions(df, out)
    summary = video.summarize_video(df)
    if labels is not None:
        matched = video.match_truth(df, labels)
        truth_out = out.with_name(f"{out.stem}.truth{out.suffix}")
        video.write_predictions(matched, truth_out)
        summary["truth"] = {**matched.attrs["agreement"], "out": str(truth_out)}
    if args.overlay:
        with _frame_bar("overlay") as progress:
            video.write_overlay(args.image, df, args.overlay, predictor=predictor, method=args.method,
                                progress=progress, **({"max_pixels": args.max_pixels} if args.max_pixels else {}))
    if args.json:
        print(json.dumps({"video": df.attrs["video"], "model": predictor.name, "out": str(out),
                          "overlay": args.overlay, **summary}, indent=2))
    else:
        print(video.describe_video(summary))
        if labels is not None:
            print(f"against {args.truth}: {video.describe_agreement(summary['truth'])} (per face-frame: "
                  f"{summary['truth']['out']})")
        print(f"wrote {out} ({len(df)} rows, model {predictor.name})"
              + (f" and {args.overlay}" if args.overlay else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.export import check_parity, export_registered, export_run
    from fer_core.models import list_models

    if args.subject in list_models():
        path = export_registered(args.subject, args.format, out=args.out)
    else:
        try:
            run_dir = io.resolve_run_dir(args.subject, args.runs_dir)
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(f"{args.subject!r} is neither a run nor a registered model ({', '.join(list_models())})"
                             f": {err}") from None
        path = export_run(run_dir, args.format, out=args.out, weights=args.weights)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if args.no_check:
        return 0
    if args.subject in list_models():
        from fer_core.data import build_dataset, materialize

        # a registered model has no test split: a few hundred SynthFACS test faces (resized to its input)
        faces = build_dataset("synthfaces", split="test", image_size=64, train_size=8, val_size=8, test_size=args.n)
        parity = check_parity(args.subject, path, images=materialize(faces)[0].numpy())
        where = f"{parity['n']} SynthFACS test faces"
    else:
        parity = check_parity(run_dir, path, n=args.n)
        where = f"{parity['n']} faces of the run's test split"
    ok = parity["max_abs_dp"] <= 1e-4 and parity["argmax_agreement"] >= 0.999
    print(f"parity with PyTorch on {where}: max |dp| {parity['max_abs_dp']:.2e}, same top class "
          f"{parity['argmax_agreement']:.2%} ({'ok' if ok else 'NOT within max |dp| <= 1e-4 and 99.9% agreement'})")
    return 0 if ok else 1


def cmd_explain(args: argparse.Namespace) -> int:
    from PIL import Image

    import fer_core.explain as explain_module
    from fer_core.face import NoFaceFound

    methods = getattr(explain_module, "list_methods", None)
    if methods is not None and args.method not in methods():
        raise UsageError(f"--method: unknown explanation method {args.method!r}; valid: {', '.join(methods())}")
    predictor = _predictor(args)
    if args.target is not None:
        try:
            predictor.class_index(args.target)
        except ValueError as err:
            raise UsageError(f"--target: {err}") from None
    try:
        result = predictor.explain(args.image, args.method, target=args.target, whole_image_if_none=args.whole_image,
                                   **_pixel_limit(args))
    except NoFaceFound as err:
        return _no_face(args.image, err)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(result.overlay()).save(out)
    p = result.prediction
    target = args.target if args.target is not None else p.top
    print(f"top class: {p.top} ({p.score:.4f}); face box x={p.box[0]} y={p.box[1]} w={p.box[2]} h={p.box[3]} "
          f"({p.detector})")
    print(f"{args.method} for {target}: {result.seconds:.2f} s -> {out}")
    return 0


# --------------------------------------------------------------------------------------------- parser
def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number (got {text!r})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fer_core", description="FER Lab: train, evaluate, inspect.")
    sub = parser.add_subparsers(dest="command", required=True)

    def runs_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--runs-dir", default=None, help="runs folder (default $FER_RUNS_DIR or ./runs)")

    p = sub.add_parser("train", help="train a model from a config")
    p.add_argument("--config", help="YAML config (with --resume: default the run's own config.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--run-id", help="run folder name (default: time-name-random)")
    p.add_argument("--resume", metavar="RUN", help="continue a run (folder or id) from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--backend", choices=["local", "slurm"], default="local",
                   help="local: train in this process (default); slurm: submit a SLURM job and return")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE,...",
                   help="SLURM options over ~/.config/fer_lab/slurm.yaml: partition, time, gpus, cpus, mem, nodes, "
                        "tasks, account, qos, constraint, exclude")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--group", help="only the runs of this sweep or ablation group")
    p.add_argument("--json", action="store_true")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("sweep", help="run a grid sweep or an ablation: one run per point, tied by a group")
    p.add_argument("--config", required=True, help="base YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="values to sweep (repeatable: the product); YAML scalars or start:stop:step (stop included)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="a named ablation variant (repeatable), e.g. full: or no_regions:model.options.regions=false")
    p.add_argument("--group", help="group id tying the runs together (default <name>-sweep-<time>)")
    p.add_argument("--parallel", type=int, default=1, help="runs at once, each a child process (default 1)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--backend", choices=["local", "slurm"], default="local",
                   help="local: child processes here (default); slurm: one job array (--parallel: at most at once)")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE,...",
                   help="SLURM options, as for train --backend slurm")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("search", help="an Optuna hyper-parameter search: every trial a run of one group")
    p.add_argument("--config", required=True, help="base YAML config")
    p.add_argument("--space", required=True, help="YAML: config key -> {type: float|int|categorical, ...}")
    p.add_argument("--trials", type=int, required=True, help="trials in all (a resumed search counts earlier ones)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a base config key")
    p.add_argument("--group", help="the search's group (default <name>-sweep-<time>); the same group goes on")
    p.add_argument("--parallel", type=int, default=1, help="trials at once, each a child process (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the TPE sampler's seed")
    p.add_argument("--backend", choices=["local", "slurm"], default="local",
                   help="local: trials as child processes here (default); slurm: each trial a SLURM job")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE,...",
                   help="SLURM options, as for train --backend slurm")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="evaluate a run's weights and (re)write its eval/ files")
    p.add_argument("run", help="run folder or id")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--subset", action="append", default=[], help="subset (repeatable; default all + every subset)")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--device", default=None, help="default: the run's train.device")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("calibrate", help="temperature scaling: fit a run's temperature on its validation split and "
                                         "re-evaluate (before/after ECE, NLL, Brier)")
    p.add_argument("run", help="run folder or id")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--device", default=None, help="default: the run's train.device")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("factors", help="accuracy per bin of SynthFACS's factors (yaw, occluder, intensity, ...)")
    p.add_argument("run", help="a run evaluated on synthfaces (folder or id)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--factor", action="append", default=[], help="factor (repeatable; default every factor)")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_factors)

    p = sub.add_parser("probe", help="re-render the same SynthFACS test faces with one factor swept, all else fixed")
    p.add_argument("run", help="a run trained on synthfaces (folder or id)")
    p.add_argument("--factor", required=True, help="yaw, pitch, roll, occluder, intensity, light, ambient, blur, "
                   "noise or jpeg")
    p.add_argument("--n", type=_positive_int, default=200, help="faces (default 200)")
    p.add_argument("--steps", default=None, help="values to sweep: 'a,b,c' or 'start:stop:step' (stop included); "
                   "occluder kinds by name (default: the factor's own, e.g. yaw -60:60:10); write --steps=-60:60:10 "
                   "with '=' when the first value is negative")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=0, help="which faces (default 0)")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("cancel", help="stop a queued or running run")
    p.add_argument("run", help="run folder or id")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("models", help="registered models: params, MACs, CPU latency")
    p.add_argument("names", nargs="*", help="models to show (default: all)")
    p.add_argument("--num-classes", type=int, default=7, help="head size to count with (default 7)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU timing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("data", help="look at data sets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("info", help="faces per split, class and challenge subset, and the rows a loader skipped")
    d.add_argument("name", help="data set name, e.g. rafdb")
    d.add_argument("--root", help="the data set's folder (default: $FER_DATA/<name>)")
    d.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="data set option")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.set_defaults(func=cmd_data_info)
    for name, help_text in (("sheet", "contact sheet PNG of a data set"), ("export", "export images to folders")):
        d = dsub.add_parser(name, help=help_text)
        d.add_argument("name", help="data set name, e.g. synthfaces")
        d.add_argument("--out", required=True, type=Path)
        d.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", help="data set option")
        d.set_defaults(func=cmd_data)
    d = dsub.add_parser("video", help="a SynthFACS video clip (faces acting expressions, moving) with per-frame "
                                      "ground truth: expression, soft label, box, head pose")
    d.add_argument("name", help="data set name: synthfaces (the only one that renders clips)")
    d.add_argument("--out", required=True, type=Path, help=".mp4 (mp4v), .avi (MJPG) or .webm (VP9: plays in web "
                                                           "browsers, mp4v does not)")
    d.add_argument("--labels", type=Path, default=None, help="ground-truth CSV (default <out>.labels.csv)")
    d.add_argument("--faces", type=int, default=1, help="1, or 2 side by side (default 1)")
    d.add_argument("--seconds", type=float, default=8.0, help="length (default 8)")
    d.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    d.add_argument("--size", default="640x480", metavar="WxH", help="frame size (default 640x480)")
    d.add_argument("--seed", type=int, default=0, help="subjects, expressions, motion and canvas (default 0)")
    d.add_argument("--expressions", default=None, metavar="A,B,...",
                   help="the episodes' classes in order, cycled (default: every non-neutral class, seeded order)")
    d.add_argument("--label-set", default="basic7", choices=["basic7", "basic8"])
    d.add_argument("--face-size", type=_positive_int, default=None, metavar="PX",
                   help="side of a face's square at its nominal size, the head 80%% of it (default 0.45 x height)")
    d.set_defaults(func=cmd_data_video)

    def model_args(p: argparse.ArgumentParser) -> None:
        which = p.add_mutually_exclusive_group()
        which.add_argument("--model", default="mini_xception_fer2013",
                           help="registered model (default: the pretrained FER2013 mini-Xception)")
        which.add_argument("--run", help="a trained run (folder or id) instead of --model")
        p.add_argument("--weights", default="best", choices=["best", "last"], help="with --run: which weights")
        p.add_argument("--calibrated", action="store_true",
                       help="with --run: probabilities after temperature scaling (python -m fer_core calibrate RUN)")
        p.add_argument("--device", default="cpu")
        p.add_argument("--whole-image", action="store_true",
                       help="when no face is found, use the centre square of the image (for face crops)")
        p.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                       help="refuse larger images before decoding them (default $FER_MAX_PIXELS or 40,000,000)")
        runs_dir_arg(p)

    p = sub.add_parser("predict", help="expression probabilities of the faces in a photo, a folder of photos or a "
                                       "video")
    p.add_argument("image", help="image file (JPEG, PNG, WebP, GIF, BMP, TIFF...); or a folder or a zip file: a "
                                 "table of every face of every file (--out); or a video: a table of every face of "
                                 "every frame (--out, default frames.csv)")
    p.add_argument("--all-faces", action="store_true", help="every face found, largest first (default: largest)")
    p.add_argument("--json", action="store_true", help="JSON on stdout (a folder: the summary)")
    p.add_argument("--out", default=None, metavar="FILE.csv|FILE.parquet",
                   help="a folder or zip: the table to write (default predictions.csv); one row per face, and one "
                        "per file without a face or unreadable, with the reason")
    p.add_argument("--largest", action="store_true", help="a folder or zip: the largest face of each image only "
                                                          "(default: every face)")
    p.add_argument("--no-recursive", action="store_true", help="a folder: not its sub-folders")
    p.add_argument("--onnx", default=None, metavar="FILE",
                   help="an exported ONNX file (python -m fer_core export) run by onnxruntime instead of --model; "
                        "with --calibrated, the temperature stored in it")
    v = p.add_argument_group("video (a file ending .mp4, .webm, .avi, .mov, .mkv...)")
    v.add_argument("--overlay", default=None, metavar="FILE.webm|FILE.mp4|FILE.avi",
                   help="also write the video with each face's box, id and smoothed class drawn (.webm plays in "
                        "browsers)")
    v.add_argument("--method", default=None,
                   help="with --overlay: blend this explanation (e.g. gradcam) into each face")
    v.add_argument("--smooth", type=float, default=0.3, metavar="SECONDS",
                   help="time constant of the smoothed probabilities (default 0.3; 0: none)")
    v.add_argument("--detect-every", type=_positive_int, default=1, metavar="N",
                   help="look for faces every N frames; in between faces keep their boxes (default 1)")
    v.add_argument("--detect-side", type=int, default=320, metavar="PIXELS",
                   help="detect on a copy of the frame this long (default 320; 0: full size)")
    v.add_argument("--align", action="store_true", help="level the eyes of each crop (off: it flickers on video)")
    v.add_argument("--truth", default=None, metavar="LABELS.csv",
                   help="the clip's per-frame true classes (data video synthfaces writes <clip>.labels.csv): print "
                        "how often the model agrees, and write each tracked face's truth per frame to "
                        "<out>.truth.csv (faces matched by box overlap)")
    model_args(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="explanation overlay of the largest face in a photo")
    p.add_argument("image", help="image file")
    p.add_argument("--method", required=True, help="explanation method (fer_core.explain)")
    p.add_argument("--out", required=True, help="overlay image to write (PNG), the size of the face crop")
    p.add_argument("--target", help="class to explain (default: the predicted class)")
    model_args(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="an ONNX or TorchScript file of a run or a registered model, with its parity")
    p.add_argument("subject", metavar="RUN_OR_MODEL", help="a run (folder or id) or a registered model name")
    p.add_argument("--format", default="onnx", choices=["onnx", "torchscript"])
    p.add_argument("--out", default=None, help="file to write (default RUN/export/model_<weights>.onnx|.pt, or "
                                              "<model>.onnx|.pt here)")
    p.add_argument("--weights", default="best", choices=["best", "last"], help="a run's weights")
    p.add_argument("--no-check", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--n", type=_positive_int, default=500, help="faces for the parity check (default 500)")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("explain-eval", help="score explanation methods against SynthFACS's ground-truth masks")
    p.add_argument("run", help="a finished run trained on synthfaces (folder or id)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--n", type=int, default=200, help="test faces, spread evenly over the split (default 200)")
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown tables here (default: print)")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_explain_eval)

    p = sub.add_parser("explain-sanity", help="do the explanation methods explain the model? (Adebayo et al. 2018)")
    p.add_argument("subject", metavar="RUN_OR_MODEL",
                   help="a run (folder or id; SynthFACS runs use their test faces) or a registered model such as "
                        "mini_xception_fer2013 (real faces from scikit-image and matplotlib)")
    p.add_argument("--out", required=True, help="folder for sanity.md, sanity.json, sanity_faces.csv and the sheets")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--n", type=int, default=20, help="faces (default 20)")
    p.add_argument("--shuffled", default=None, metavar="RUN",
                   help="the same config trained with data.shuffle_labels=true (data randomisation; its last "
                        "weights)")
    p.add_argument("--modes", default="cascade,independent", help="model randomisations (default: both)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialisation (default 0)")
    p.add_argument("--sheets", type=int, default=2, help="contact sheets of the first faces to draw (default 2)")
    p.add_argument("--record", default=None, metavar="JSON",
                   help="also add the verdicts to this results file (the app reads docs/explain_sanity.json)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_explain_sanity)
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
