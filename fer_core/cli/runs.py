"""Commands that start, list and stop runs: ``train``, ``runs``, ``sweep``, ``search`` and ``cancel``, with the
progress lines of a training run (:class:`LineProgress`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fer_core.cli.common import UsageError, _fmt, _table, runs_dir_arg
from fer_core.config import ConfigError, load_config


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


def cmd_cancel(args: argparse.Namespace) -> int:
    from fer_core import io
    from fer_core.lifecycle import cancel_run

    print(cancel_run(io.resolve_run_dir(args.run, args.runs_dir)))
    return 0


# --------------------------------------------------------------------------------------------- parser
def add_train(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` command's parser to ``sub``."""
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


def add_runs(sub: argparse._SubParsersAction) -> None:
    """Add the ``runs`` command's parser to ``sub``."""
    p = sub.add_parser("runs", help="list runs, newest first")
    p.add_argument("--group", help="only the runs of this sweep or ablation group")
    p.add_argument("--json", action="store_true")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_runs)


def add_sweep(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` command's parser to ``sub``."""
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


def add_search(sub: argparse._SubParsersAction) -> None:
    """Add the ``search`` command's parser to ``sub``."""
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


def add_cancel(sub: argparse._SubParsersAction) -> None:
    """Add the ``cancel`` command's parser to ``sub``."""
    p = sub.add_parser("cancel", help="stop a queued or running run")
    p.add_argument("run", help="run folder or id")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_cancel)
