"""The ``models`` command: the registered models with their parameters, MACs and CPU latency."""

from __future__ import annotations

import argparse
import json

from fer_core.cli.common import UsageError, _table, torch_threads


# --------------------------------------------------------------------------------------------- commands
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


# --------------------------------------------------------------------------------------------- parser
def add_models(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` command's parser to ``sub``."""
    p = sub.add_parser("models", help="registered models: params, MACs, CPU latency")
    p.add_argument("names", nargs="*", help="models to show (default: all)")
    p.add_argument("--num-classes", type=int, default=7, help="head size to count with (default 7)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU timing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
