"""Export a model to ONNX or TorchScript, self-contained, and check that the file computes what the model does.

Usage::

    from fer_core.export import export_model, export_run, export_registered, check_parity
    path = export_run("runs/my-run", "onnx")                    # runs/my-run/export/model.onnx
    path = export_registered("mini_xception_fer2013", "onnx", out="mini_xception.onnx")
    check_parity("runs/my-run", path)                           # {"max_abs_dp": ..., "argmax_agreement": ..., "n": ...}
    Predictor.from_onnx(path).predict("photo.jpg")             # onnxruntime, no torch needed

The exported graph (input ``pixels``, output ``logits``):

- takes float32 ``N x C x H x W`` **pixels in [0, 255]** at the model's input size and channel count (``N`` is
  dynamic) and normalises them inside: ``(pixels / 255 - mean) / std``. So the file is self-contained: a reader
  only converts the image to the model's channels and size (see :func:`fer_core.predict.pixels_for_model`), and
  never needs the mean and std. Pixels rather than uint8: resizing happens before the graph, in float, as
  :class:`fer_core.transforms.BatchTransform` does, so nothing is rounded twice.
- returns the **logits** (``N x num_classes``); the probabilities are ``softmax(logits / T)``, ``T`` from the
  metadata (a run's fitted temperature) when the reader wants calibrated ones. Models whose ``forward`` returns more
  than the logits (a tuple or :class:`fer_core.models.AttentionOutput`) export only the logits.

Metadata (ONNX ``metadata_props``; TorchScript ``_extra_files["fer_lab.json"]``), each value a JSON string:
``model`` (registry name), ``class_names``, ``input_size`` ``[C, H, W]``, ``channels``, ``mean``, ``std``,
``input`` (what the graph takes), ``run_id`` (null for a registered model), ``weights``, ``temperature`` (null
without one) and ``fer_lab_version``.

ONNX is written by the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, opset 17, a dynamic
batch axis): the dynamo exporter needs ``onnxscript``, which is not installed, and the models here are plain
feed-forward graphs that the tracing exporter handles. Parity (:func:`check_parity`) runs the same uint8 images
through the PyTorch model with its :class:`~fer_core.transforms.BatchTransform` and through the file with
onnxruntime (or TorchScript), and reports the largest probability difference and how often the top class agrees.

What exports (checked by tests/test_export.py on every registered model): every model to TorchScript, and every
model to ONNX except ``vgg_fer`` at input sizes whose last feature map is not a multiple of 3 (its
``AdaptiveAvgPool2d(3)``; the default 48 px exports), which raises :class:`ExportError` naming the model and the
exporter's reason. ``ran`` enlarges its region crops with antialiased bilinear interpolation, which the exporter
has no opset-17 form for; :func:`_antialiased_enlargement` supplies one (an enlargement is plain bilinear), and a
reduction is still refused.
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "pixels", "logits"
TORCHSCRIPT_META = "fer_lab.json"
INPUT_DOC = "float32 N x C x H x W pixels in [0, 255] at the model's channels and size; normalised inside"

Format = Literal["onnx", "torchscript"]


class ExportError(ValueError):
    """A model that cannot be exported: the message names the model and the reason."""


class NormalisedLogits(nn.Module):
    """``model`` behind its own normalisation: ``pixels`` in [0, 255] -> ``(pixels / 255 - mean) / std`` -> logits
    (the first element when ``forward`` returns a tuple or an :class:`~fer_core.models.AttentionOutput`)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.cfg
        self.model = model
        self.register_buffer("mean", torch.tensor(cfg.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model((pixels / 255.0 - self.mean) / self.std)
        if isinstance(out, tuple):  # AttentionOutput is a NamedTuple: logits first
            out = out[0]
        return out


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fer-lab")
    except Exception:  # noqa: BLE001 - not installed as a distribution (a plain checkout): no version to record
        return "unknown"


def model_metadata(model: nn.Module, *, run_id: str | None = None, weights: str | None = None,
                   temperature: float | None = None) -> dict[str, Any]:
    """The metadata an exported file carries (plain values; :func:`export_model` writes each as a JSON string)."""
    cfg = _cfg(model)
    return {"model": cfg.name, "class_names": list(cfg.class_names), "input_size": list(cfg.input_size),
            "channels": int(cfg.input_size[0]), "mean": list(cfg.mean), "std": list(cfg.std), "input": INPUT_DOC,
            "run_id": run_id, "weights": weights, "temperature": temperature, "fer_lab_version": _version()}


def _cfg(model: nn.Module):
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise ExportError(f"{type(model).__name__} has no .cfg (input size, normalisation, class names): build it "
                          "with fer_core.models.create_model or load a run with fer_core.runs.load_run_model")
    return cfg


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return fmt


def export_model(model: nn.Module, path: str | os.PathLike, fmt: Format = "onnx", *,
                 metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (with a ``.cfg``) to ``path`` as ONNX or TorchScript, normalisation inside, dynamic batch.

    Args:
        model: a model built by :func:`fer_core.models.create_model` or loaded from a run; it is not modified (the
            export runs on a CPU copy in eval mode).
        path: the file to write (its folder is created).
        fmt: ``"onnx"`` or ``"torchscript"``.
        metadata: the file's metadata (default :func:`model_metadata` of the model); values are stored as JSON.

    Raises:
        ExportError: the model cannot be exported (the message names it and the exporter's reason).
        ValueError: unknown format.
    """
    import copy

    _check_format(fmt)
    cfg = _cfg(model)
    meta = model_metadata(model) if metadata is None else metadata
    wrapped = NormalisedLogits(copy.deepcopy(model).cpu().float().eval()).eval()
    c, h, w = cfg.input_size
    example = torch.rand(2, c, h, w, generator=torch.Generator().manual_seed(0)) * 255
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values; parity checks the result
            if fmt == "onnx":
                _export_onnx(wrapped, example, path, meta)
            else:
                traced = torch.jit.trace(wrapped, example, check_trace=False)
                extra = {TORCHSCRIPT_META: json.dumps(meta)}
                torch.jit.save(traced, str(path), _extra_files=extra)
    except Exception as err:  # noqa: BLE001 - any exporter failure becomes one clear error naming the model
        path.unlink(missing_ok=True)
        hint = "; TorchScript may work (format torchscript)" if fmt == "onnx" else ""
        raise ExportError(f"model {cfg.name!r} cannot be exported to {fmt}: {type(err).__name__}: "
                          f"{str(err).strip().splitlines()[0] if str(err).strip() else err!r}{hint}") from err
    return path


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to nowhere: on failure the exporter prints the whole TorchScript graph there from C++
    (the error message it raises says what failed)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export_onnx(wrapped: nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    buffer = _io.BytesIO()
    with _quiet_stdout():
        _onnx_export(wrapped, example, buffer)
    proto = onnx.load_from_string(buffer.getvalue())
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    proto.doc_string = f"FER Lab {meta.get('model')}: {INPUT_DOC}; output logits N x {len(meta['class_names'])}"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _antialiased_enlargement(g, input, output_size, align_corners, scale_h=None, scale_w=None):  # noqa: A002
    """ONNX for ``aten::_upsample_bilinear2d_aa`` (``F.interpolate(..., mode="bilinear", antialias=True)``) when it
    enlarges: antialiasing changes nothing then, so it is a plain half-pixel bilinear ``Resize`` (opset 11 and up).
    RAN enlarges its region crops this way. A reduction is refused (ONNX's antialiased Resize needs opset 18)."""
    from torch.onnx import symbolic_helper as sh

    before = sh._get_tensor_sizes(input)
    after = g.original_node.output().type().sizes() if g.original_node.output().type().dim() else None
    if sh._maybe_get_const(align_corners, "b"):
        return sh._unimplemented("_upsample_bilinear2d_aa", "align_corners=True", input)
    if not before or not after or None in (*before[2:], *after[2:]) \
            or any(b > a for b, a in zip(before[2:], after[2:], strict=True)):
        return sh._unimplemented("_upsample_bilinear2d_aa", f"an antialiased reduction {before} -> {after} (needs "
                                 "opset 18)", input)
    size = sh._maybe_get_const(output_size, "is")
    size = g.op("Cast", size, to_i=7) if sh._is_value(size) else \
        g.op("Constant", value_t=torch.tensor(list(size), dtype=torch.int64))
    batch_channels = g.op("Slice", g.op("Shape", input), g.op("Constant", value_t=torch.tensor([0])),
                          g.op("Constant", value_t=torch.tensor([2])))
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", input, empty, empty, g.op("Concat", batch_channels, size, axis_i=0),
                coordinate_transformation_mode_s="half_pixel", mode_s="linear", nearest_mode_s="floor")


def _onnx_export(wrapped: nn.Module, example: torch.Tensor, buffer: _io.BytesIO) -> None:
    torch.onnx.register_custom_op_symbolic("aten::_upsample_bilinear2d_aa", _antialiased_enlargement, OPSET)
    try:
        _traced_onnx_export(wrapped, example, buffer)
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::_upsample_bilinear2d_aa", OPSET)


def _traced_onnx_export(wrapped: nn.Module, example: torch.Tensor, buffer: _io.BytesIO) -> None:
    torch.onnx.export(wrapped, (example,), buffer, dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                      do_constant_folding=True)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported file (ONNX or TorchScript, by its suffix), values decoded from JSON. Reading an
    ONNX file needs onnxruntime only (not torch)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".onnx":
        import onnxruntime as ort

        raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
        return {k: json.loads(v) for k, v in raw.items()}
    extra = {TORCHSCRIPT_META: ""}
    _load_torchscript(path, extra)
    if not extra[TORCHSCRIPT_META]:
        raise ValueError(f"{path} has no {TORCHSCRIPT_META} metadata: not written by fer_core.export")
    return json.loads(extra[TORCHSCRIPT_META])


def _load_torchscript(path: Path, extra: dict[str, Any] | None = None) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 calls TorchScript deprecated; it still loads
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra or {})


# --------------------------------------------------------------------------------------------- runs and names
def export_run(run: str | os.PathLike, fmt: Format = "onnx", out: str | os.PathLike | None = None,
               weights: str = "best") -> Path:
    """Export a run's ``checkpoints/<weights>`` (default file ``RUN/export/model_<weights>.onnx`` or ``.pt``), with
    the run's id, and its temperature when it has one fitted for those weights."""
    from fer_core import io
    from fer_core.runs import load_run_model, stored_temperature

    _check_format(fmt)
    run_dir = io.resolve_run_dir(run)
    model = load_run_model(run_dir, weights=weights)
    meta = model_metadata(model, run_id=run_dir.name, weights=weights,
                          temperature=stored_temperature(run_dir, weights))
    out = run_dir / "export" / f"model_{weights}{SUFFIX[fmt]}" if out is None else out
    return export_model(model, out, fmt, metadata=meta)


def export_registered(name: str, fmt: Format = "onnx", out: str | os.PathLike | None = None,
                      **create_kwargs: Any) -> Path:
    """Export a registered model (``fer_core.models.create_model``; pretrained variants with their weights, as
    :meth:`fer_core.predict.Predictor.from_model` builds them); default file ``<name>.onnx`` or ``.pt`` here."""
    _check_format(fmt)
    model = build_registered(name, **create_kwargs)
    return export_model(model, f"{name}{SUFFIX[fmt]}" if out is None else out, fmt)


def build_registered(name: str, **create_kwargs: Any) -> nn.Module:
    """``create_model(name)`` with the variant's own classes, its default weights, and torch's generator seeded 0
    for whatever those do not set (the global generator is left as it was): a variant without pretrained weights
    gets the same random weights every time, so :func:`check_parity` of a name compares against the model that
    :func:`export_registered` wrote."""
    from fer_core.models import create_model, model_info

    create_kwargs.setdefault("num_classes", len(model_info(name).class_names))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_model(name, **create_kwargs)


# --------------------------------------------------------------------------------------------- parity
def _runner(path: Path):
    """``f(pixels float32 N x C x H x W) -> logits`` for an exported file."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    module = _load_torchscript(path).eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def _softmax(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    z = logits.astype(np.float64) / (temperature or 1.0)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _subject(subject: Any, split: str, n: int | None) -> tuple[nn.Module, np.ndarray | None]:
    """The model and, for a run, ``n`` of its ``split`` images (uint8 N x C x H x W, spread evenly)."""
    if isinstance(subject, nn.Module):
        return subject, None
    from fer_core import io
    from fer_core.models import list_models

    if isinstance(subject, str) and subject in list_models():
        return build_registered(subject), None
    from fer_core.config import load_config
    from fer_core.runs import load_run_model, load_split

    run_dir = io.resolve_run_dir(subject)
    cfg = load_config(run_dir / "config.yaml")
    _, images, _ = load_split(cfg.data, split, placement="host")
    images = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    if n is not None and n < len(images):
        images = images[np.linspace(0, len(images) - 1, n).round().astype(int)]
    return load_run_model(run_dir), images


def check_parity(subject: Any, path: str | os.PathLike, split: str = "test", n: int | None = None, *,
                 images: np.ndarray | None = None, batch_size: int = 64) -> dict[str, Any]:
    """Probabilities of the PyTorch model against the exported file's, on the same uint8 images.

    Args:
        subject: a run (folder or id: its best weights, and its ``split`` images unless ``images`` is given), a
            registered model name (built as :func:`export_registered` builds it) or a model with a ``.cfg``.
        path: the exported file (``.onnx`` runs in onnxruntime, ``.pt`` in TorchScript).
        split: the run's split to compare on.
        n: at most this many images, spread evenly over the split (None: all).
        images: uint8 ``N x C x H x W`` (any size and 1 or 3 channels) instead of a run's split; needed for a model
            or a name.
        batch_size: images per forward pass.

    Returns:
        ``{"max_abs_dp": largest |p_torch - p_file| over images and classes, "argmax_agreement": share of images
        with the same top class, "n": images, "format": "onnx" | "torchscript"}`` (plain softmax: a temperature
        rescales both sides alike).
    """
    from fer_core.predict import pixels_for_model
    from fer_core.transforms import BatchTransform

    path = Path(path)
    model, split_images = _subject(subject, split, n)
    images = split_images if images is None else np.asarray(images)
    if images is None:
        raise ValueError("check_parity of a model or a registered name needs images= (uint8 N x C x H x W)")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 N x C x H x W with 1 or 3 channels (got {images.dtype} "
                         f"{images.shape})")
    cfg = _cfg(model)
    run_file = _runner(path)
    transform = BatchTransform(cfg)
    model = model.cpu().eval()
    torch_p, file_p = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        with torch.inference_mode():
            out = model(transform(torch.from_numpy(batch)))
            logits = (out[0] if isinstance(out, tuple) else out).float().numpy()
        torch_p.append(_softmax(logits, None))
        file_p.append(_softmax(run_file(pixels_for_model(batch, cfg.input_size)), None))
    pt, pf = np.concatenate(torch_p), np.concatenate(file_p)
    return {"max_abs_dp": float(np.abs(pt - pf).max()) if len(pt) else 0.0,
            "argmax_agreement": float((pt.argmax(1) == pf.argmax(1)).mean()) if len(pt) else 1.0, "n": len(pt),
            "format": "onnx" if path.suffix == ".onnx" else "torchscript"}
