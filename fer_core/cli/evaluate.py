"""Commands that measure a trained run: ``evaluate``, ``calibrate`` (temperature scaling), ``factors`` (SynthFACS
accuracy per factor bin) and ``probe`` (one SynthFACS factor swept on the same faces)."""

from __future__ import annotations

import argparse

from fer_core.cli.common import _fmt, _positive_int, _table, runs_dir_arg


# --------------------------------------------------------------------------------------------- commands
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


# --------------------------------------------------------------------------------------------- parser
def add_evaluate(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` command's parser to ``sub``."""
    p = sub.add_parser("evaluate", help="evaluate a run's weights and (re)write its eval/ files")
    p.add_argument("run", help="run folder or id")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--subset", action="append", default=[], help="subset (repeatable; default all + every subset)")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--device", default=None, help="default: the run's train.device")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_evaluate)


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    """Add the ``calibrate`` command's parser to ``sub``."""
    p = sub.add_parser("calibrate", help="temperature scaling: fit a run's temperature on its validation split and "
                                         "re-evaluate (before/after ECE, NLL, Brier)")
    p.add_argument("run", help="run folder or id")
    p.add_argument("--weights", default="best", choices=["best", "last"])
    p.add_argument("--device", default=None, help="default: the run's train.device")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_calibrate)


def add_factors(sub: argparse._SubParsersAction) -> None:
    """Add the ``factors`` command's parser to ``sub``."""
    p = sub.add_parser("factors", help="accuracy per bin of SynthFACS's factors (yaw, occluder, intensity, ...)")
    p.add_argument("run", help="a run evaluated on synthfaces (folder or id)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--factor", action="append", default=[], help="factor (repeatable; default every factor)")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_factors)


def add_probe(sub: argparse._SubParsersAction) -> None:
    """Add the ``probe`` command's parser to ``sub``."""
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
