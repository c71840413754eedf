"""Commands that run a model on new files: ``predict`` (a photo, a folder or zip of photos, or a video) and
``export`` (an ONNX or TorchScript file). ``predict --onnx`` runs an exported file without importing torch, so every
import of torch here stays inside a function. :func:`model_args` and :func:`_predictor` (which model, from a name, a
run or an ONNX file) serve ``explain`` as well."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from fer_core.cli.common import UsageError, _positive_int, _table, runs_dir_arg


# --------------------------------------------------------------------------------------------- commands
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


# --------------------------------------------------------------------------------------------- parser
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


def add_predict(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` command's parser to ``sub``."""
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


def add_export(sub: argparse._SubParsersAction) -> None:
    """Add the ``export`` command's parser to ``sub``."""
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
