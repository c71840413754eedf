"""The ``data`` commands: ``data info`` (faces per split, class and subset), ``data sheet`` and ``data export``
(any data set), ``data video`` (a SynthFACS clip with per-frame ground truth)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fer_core.cli.common import UsageError, _positive_int, _table
from fer_core.config import apply_overrides


# --------------------------------------------------------------------------------------------- commands
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


# --------------------------------------------------------------------------------------------- parser
def add_data(sub: argparse._SubParsersAction) -> None:
    """Add the ``data`` command's parser to ``sub``."""
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
