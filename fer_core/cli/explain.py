"""Explanation commands: ``explain`` (an overlay for the largest face in a photo), ``explain-eval`` (methods scored
against SynthFACS's ground-truth masks) and ``explain-sanity`` (model and data randomisation checks, Adebayo et al.
2018)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from fer_core.cli.common import UsageError, runs_dir_arg, torch_threads
from fer_core.cli.predict import _no_face, _pixel_limit, _predictor, model_args
from fer_core.config import load_config


# --------------------------------------------------------------------------------------------- commands
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


# --------------------------------------------------------------------------------------------- parser
def add_explain(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain`` command's parser to ``sub``."""
    p = sub.add_parser("explain", help="explanation overlay of the largest face in a photo")
    p.add_argument("image", help="image file")
    p.add_argument("--method", required=True, help="explanation method (fer_core.explain)")
    p.add_argument("--out", required=True, help="overlay image to write (PNG), the size of the face crop")
    p.add_argument("--target", help="class to explain (default: the predicted class)")
    model_args(p)
    p.set_defaults(func=cmd_explain)


def add_explain_eval(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain-eval`` command's parser to ``sub``."""
    p = sub.add_parser("explain-eval", help="score explanation methods against SynthFACS's ground-truth masks")
    p.add_argument("run", help="a finished run trained on synthfaces (folder or id)")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: all)")
    p.add_argument("--n", type=int, default=200, help="test faces, spread evenly over the split (default 200)")
    p.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    p.add_argument("--out", type=Path, default=None, help="write the markdown tables here (default: print)")
    runs_dir_arg(p)
    p.set_defaults(func=cmd_explain_eval)


def add_explain_sanity(sub: argparse._SubParsersAction) -> None:
    """Add the ``explain-sanity`` command's parser to ``sub``."""
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
