"""A counterfactual probe: the same SynthFACS test faces re-rendered with one factor swept and everything else fixed.

Real data sets cannot show what a model does with *this* face turned 10° further, with or without sunglasses, or
with the same expression at half the intensity. SynthFACS can: a face is a pure function of its parameters
(:class:`~fer_core.data.synthfaces.render.FaceSpec`), so the probe takes ``n`` faces of a run's test split, replaces
one field of each face's spec (``dataclasses.replace``), renders it again with SynthFACS's own renderer and scores
the run's model on it (the run's evaluation transform, :func:`fer_core.evaluate.predict_logits`)::

    result = probe("runs/<id>", "yaw", n=200)       # also writes runs/<id>/probe/yaw.json and yaw.csv
    summary_frame(result)                           # one row per step: accuracy, P(true class), flips, shares

``python -m fer_core probe RUN --factor yaw [--n 200] [--steps=-60:60:10]`` does the same and prints the table
(``--steps=`` with ``=`` when the first value is negative, or argparse reads it as an option).

**What each factor sweeps** (:data:`SWEEPS`; steps can be given, the defaults are below):

* ``yaw`` -60..60° in 10° steps, ``pitch`` -20..20° and ``roll`` -15..15° in 5° steps: the head pose
  (reference 0°, the frontal face).
* ``occluder``: ``none`` and each occluder kind, at the place the face's own occluder seed puts it (reference
  ``none``, the face without occluder).
* ``intensity`` 0.2..1.0 in 0.1 steps (reference 1.0): the overall expression intensity. The face is the generator's
  own sample drawn again at that intensity with every other random draw unchanged
  (:meth:`~fer_core.data.synthfaces.dataset.SynthFaces.meta_at_intensity`): the expression prototype, each action
  unit's jitter, the optional action units, a blend and its weight and the small action-unit noise stay those of the
  face, and the rules that depend on intensity (a broad smile parts the lips) apply as they would have. That is the
  generator's own counterfactual, which a plain scaling of the action-unit vector is not (it would scale the noise
  and break those rules). Neutral faces move no action unit whatever the intensity, so this probe uses only faces
  with an expression.
* ``light`` 0..50° in 10° steps (reference 0°): the key light's angle off the camera axis, in the face's own
  direction (azimuth); ``ambient`` 0.3..0.8 (reference 0.55, the renderer's default); ``blur`` sigma 0..2 px at 112
  px (reference 0); ``noise`` 0..16 grey levels (reference 0); ``jpeg`` quality none, 90, 70, 50, 30, 10 (reference
  none). The camera's random draws are the face's own (its noise pattern only grows with ``noise``).

At the face's own value the spec equals the data set's, so the picture is the data set's, pixel for pixel
(tests/test_probe.py checks this).

**What is measured per step**, over the faces: accuracy against the clean label, the mean probability of the true
class, the share of faces predicted as each class, and how many faces *flip*: their prediction differs from their
prediction at the reference step (the first step where the steps do not contain the reference).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_core import io
from fer_core.data.synthfaces.dataset import SampleMeta, SynthFaces
from fer_core.data.synthfaces.render import OCCLUDERS, FaceSpec, render

SYNTHFACS_DATASETS = ("synthfaces", "synthfaces_pretrain")
"""The data sets whose faces the probe can render again (SynthFACS and the data sets built on its sampler)."""
FOLDER = "probe"
"""Sub-folder of a run with the probe files: ``probe/<factor>.json`` and ``probe/<factor>.csv``."""
DEFAULT_N = 200


def _nuisance(spec: FaceSpec, **changes: Any) -> FaceSpec:
    return dataclasses.replace(spec, nuisance=dataclasses.replace(spec.nuisance, **changes))


def _light(spec: FaceSpec, degrees: float) -> FaceSpec:
    """The key light at ``degrees`` off the camera axis, in the face's own direction (azimuth)."""
    lx, ly, _ = spec.nuisance.light
    azimuth = math.atan2(ly, lx) if (lx or ly) else 0.0
    radius = math.tan(math.radians(degrees))
    return _nuisance(spec, light=(radius * math.cos(azimuth), radius * math.sin(azimuth), 1.0))


def _range(low: float, high: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.round(np.arange(low, high + step / 2, step), 6))


@dataclass(frozen=True)
class Sweep:
    """How the probe sweeps one factor.

    Attributes:
        name: the factor (as in :data:`fer_core.factors.FACTORS`).
        title: the axis title.
        steps: the default steps.
        reference: the step flips are counted against.
        valid: what a step must be, for the error message.
        check: whether a step is valid.
        spec: the face's spec at a step: ``(data set, position, meta, step) -> FaceSpec``.
        eligible: whether a face takes part (default: every face).
    """

    name: str
    title: str
    steps: tuple[Any, ...]
    reference: Any
    valid: str
    check: Callable[[Any], bool]
    spec: Callable[[SynthFaces, int, SampleMeta, Any], FaceSpec]
    eligible: Callable[[SampleMeta], bool] = lambda meta: True

    @property
    def numeric(self) -> bool:
        return self.name != "occluder"


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high


SWEEPS: dict[str, Sweep] = {s.name: s for s in (
    Sweep("yaw", "yaw (°)", _range(-60, 60, 10), 0.0, "degrees in [-90, 90]", _number(-90, 90),
          lambda ds, i, m, v: dataclasses.replace(m.spec, yaw=float(v))),
    Sweep("pitch", "pitch (°)", _range(-20, 20, 5), 0.0, "degrees in [-45, 45]", _number(-45, 45),
          lambda ds, i, m, v: dataclasses.replace(m.spec, pitch=float(v))),
    Sweep("roll", "roll (°)", _range(-15, 15, 5), 0.0, "degrees in [-45, 45]", _number(-45, 45),
          lambda ds, i, m, v: dataclasses.replace(m.spec, roll=float(v))),
    Sweep("occluder", "occluder", OCCLUDERS, "none", f"one of {', '.join(OCCLUDERS)}", lambda v: v in OCCLUDERS,
          lambda ds, i, m, v: dataclasses.replace(m.spec, occluder=str(v))),
    Sweep("intensity", "expression intensity", _range(0.2, 1.0, 0.1), 1.0, "a number in (0, 1]",
          lambda v: _number(0, 1)(v) and v > 0, lambda ds, i, m, v: ds.meta_at_intensity(i, float(v)).spec,
          eligible=lambda meta: bool(np.any(meta.spec.au > 0))),
    Sweep("light", "light angle (°)", _range(0, 50, 10), 0.0, "degrees in [0, 80]", _number(0, 80),
          lambda ds, i, m, v: _light(m.spec, float(v))),
    Sweep("ambient", "ambient light", _range(0.3, 0.8, 0.1), 0.55, "a number in [0, 1]", _number(0, 1),
          lambda ds, i, m, v: _nuisance(m.spec, ambient=float(v))),
    Sweep("blur", "blur sigma (px at 112)", _range(0, 2, 0.25), 0.0, "a sigma in [0, 10] px", _number(0, 10),
          lambda ds, i, m, v: _nuisance(m.spec, blur=float(v))),
    Sweep("noise", "sensor noise (grey levels)", _range(0, 16, 2), 0.0, "grey levels in [0, 64]", _number(0, 64),
          lambda ds, i, m, v: _nuisance(m.spec, noise=float(v))),
    Sweep("jpeg", "JPEG quality (0: none)", (0, 90, 70, 50, 30, 10), 0, "0 (no JPEG) or a quality 1-100",
          lambda v: _number(0, 100)(v) and float(v) == int(v),
          lambda ds, i, m, v: _nuisance(m.spec, jpeg=int(v))),
)}
"""Every factor the probe sweeps (see the module docstring)."""


def check_sweep(factor: str) -> Sweep:
    """The sweep of ``factor``; a ValueError that lists the valid factors otherwise."""
    if factor not in SWEEPS:
        raise ValueError(f"unknown probe factor {factor!r}; valid: {', '.join(SWEEPS)}")
    return SWEEPS[factor]


def parse_steps(factor: str, text: str) -> list[Any]:
    """Steps from the command line: ``a,b,c`` or ``start:stop:step`` (stop included); occluder kinds by name."""
    sweep = check_sweep(factor)
    text = text.strip()
    if not sweep.numeric:
        return [s.strip() for s in text.split(",") if s.strip()]
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or parts[2] <= 0 or parts[1] < parts[0]:
                raise ValueError
            return list(_range(*parts))
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"steps {text!r} for {factor} are not numbers: give 'a,b,c' or 'start:stop:step' "
                         f"(stop included), e.g. '-60:60:10'") from None


def check_steps(factor: str, steps: Sequence[Any] | None) -> list[Any]:
    """The steps to sweep (the default ones for None), each checked; a ValueError names a bad one."""
    sweep = check_sweep(factor)
    steps = list(sweep.steps if steps is None else steps)
    if not steps:
        raise ValueError(f"no steps to probe {factor} at; give at least one ({sweep.valid})")
    bad = [s for s in steps if not sweep.check(s)]
    if bad:
        raise ValueError(f"probe steps {bad} for {factor} are invalid: each must be {sweep.valid}")
    if len(set(steps)) != len(steps):
        raise ValueError(f"probe steps for {factor} repeat a value: {steps}")
    return steps


# --------------------------------------------------------------------------------------------- the probe
def probe_dataset(run_dir: str | os.PathLike, split: str = "test") -> SynthFaces:
    """The run's SynthFACS split; a ValueError saying the probe needs SynthFACS for a run on another data set."""
    from fer_core.config import load_config
    from fer_core.data import build_dataset

    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    if cfg.data.name not in SYNTHFACS_DATASETS:
        raise ValueError(f"probe needs a SynthFACS run; run {run_dir.name} trained on {cfg.data.name}")
    ds = build_dataset(cfg.data.name, root=cfg.data.root, split=split, **cfg.data.options)
    if not isinstance(ds, SynthFaces):  # (a data set registered under that name that is not SynthFACS's)
        raise ValueError(f"probe needs a SynthFACS run; run {run_dir.name} trained on {cfg.data.name}, "
                         f"whose faces are {type(ds).__name__}, not SynthFACS's")
    return ds


def choose_faces(ds: SynthFaces, factor: str, n: int, seed: int = 0) -> np.ndarray:
    """Positions of ``n`` faces of ``ds`` that take part in the probe of ``factor``, drawn without replacement
    with ``seed`` and sorted (every eligible face when there are fewer)."""
    if n < 1:
        raise ValueError(f"the probe needs at least one face, got n={n}")
    sweep = check_sweep(factor)
    eligible = np.array([i for i in range(len(ds)) if sweep.eligible(ds.meta(i))], dtype=np.int64)
    if len(eligible) <= n:
        return eligible
    return np.sort(np.random.default_rng(seed).choice(eligible, size=n, replace=False))


def counterfactual_spec(ds: SynthFaces, i: int, factor: str, step: Any) -> FaceSpec:
    """Face ``i`` of ``ds`` with ``factor`` set to ``step`` and everything else as in the data set."""
    return check_sweep(factor).spec(ds, i, ds.meta(i), step)


def probe(run_dir: str | os.PathLike, factor: str, n: int = DEFAULT_N, steps: Sequence[Any] | None = None,
          split: str = "test", seed: int = 0, *, weights: str = "best", device: str = "cpu",
          write: bool = True) -> dict[str, Any]:
    """Sweep ``factor`` over ``steps`` on ``n`` faces of the run's ``split`` and score the run's model on each.

    Args:
        run_dir: a run folder (or id under the runs folder) trained on SynthFACS.
        factor: one of :data:`SWEEPS`.
        n: faces (chosen by :func:`choose_faces` with ``seed``).
        steps: the values to sweep (default: the factor's, see the module docstring).
        split: the split the faces come from.
        seed: which faces.
        weights: the run's checkpoint (``best`` or ``last``).
        device: where the model runs.
        write: write ``probe/<factor>.json`` and ``probe/<factor>.csv`` into the run.

    Returns:
        The JSON's content: ``run``, ``factor``, ``title``, ``split``, ``steps``, ``reference``, ``faces`` (positions
        in the split), ``labels`` (clean), ``class_names``, ``seconds``, ``render_seconds`` and ``summary`` (one dict
        per step, :func:`summary_frame`).

    Raises:
        ValueError: a run not on SynthFACS ("probe needs a SynthFACS run; ..."), an unknown factor or a bad step.
    """
    import torch

    from fer_core.config import load_config
    from fer_core.evaluate import predict_logits
    from fer_core.runs import load_run_model
    from fer_core.transforms import BatchTransform

    started = time.perf_counter()
    run_dir = io.resolve_run_dir(run_dir)
    sweep = check_sweep(factor)
    steps = check_steps(factor, steps)
    ds = probe_dataset(run_dir, split)
    faces = choose_faces(ds, factor, n, seed)
    if not len(faces):
        raise ValueError(f"{split} has no face the {factor} probe can use (it needs faces with an expression)")
    cfg = load_config(run_dir / "config.yaml")
    model = load_run_model(run_dir, weights=weights, device=device)
    class_names = list(model.cfg.class_names)
    t0 = time.perf_counter()
    images = np.stack([render(sweep.spec(ds, int(i), ds.meta(int(i)), step), ds.image_size)[0]
                       for i in faces for step in steps])  # face-major: face 0 at every step, then face 1...
    render_seconds = time.perf_counter() - t0
    transform = BatchTransform(model.cfg, device=device, channels_last=cfg.train.channels_last)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    logits = predict_logits(model, tensor, transform, batch_size=max(cfg.train.batch_size, 128))
    probs = logits.softmax(1).numpy().reshape(len(faces), len(steps), len(class_names))
    labels = np.array([ds.meta(int(i)).clean_label for i in faces], dtype=np.int64)
    reference = sweep.reference if sweep.reference in steps else steps[0]
    result = {
        "run": run_dir.name, "factor": factor, "title": sweep.title, "numeric": sweep.numeric, "split": split,
        "seed": seed, "weights": weights, "n": len(faces), "steps": steps, "reference": reference,
        "faces": faces.tolist(), "labels": labels.tolist(), "class_names": class_names,
        "summary": _summary(probs, labels, steps, steps.index(reference), class_names),
        "render_seconds": round(render_seconds, 3),
    }
    result["seconds"] = round(time.perf_counter() - started, 3)
    if write:
        json_path, csv_path = probe_paths(run_dir, factor)
        io.atomic_write_text(csv_path, faces_frame(result, probs).to_csv(index=False, float_format="%.5f"))
        io.atomic_write_json(json_path, result)
    return result


def _summary(probs: np.ndarray, labels: np.ndarray, steps: list[Any], ref: int,
             class_names: list[str]) -> list[dict[str, Any]]:
    preds = probs.argmax(2)  # faces x steps
    true_prob = np.take_along_axis(probs, labels[:, None, None], 2)[..., 0]
    rows = []
    for k, step in enumerate(steps):
        counts = np.bincount(preds[:, k], minlength=len(class_names))
        flipped = int((preds[:, k] != preds[:, ref]).sum())
        rows.append({"step": step, "accuracy": float((preds[:, k] == labels).mean()),
                     "true_prob": float(true_prob[:, k].mean()), "flipped": flipped,
                     "flip_rate": flipped / len(labels),
                     "share": {name: float(c / len(labels)) for name, c in zip(class_names, counts, strict=True)}})
    return rows


def faces_frame(result: dict[str, Any], probs: np.ndarray) -> pd.DataFrame:
    """One row per face and step: ``face`` (position in the split), ``label``, ``step``, ``pred``, ``correct``,
    ``true_prob``, ``flipped`` (against the reference step) and ``prob_<class>``."""
    steps, names = result["steps"], result["class_names"]
    faces, labels = np.asarray(result["faces"]), np.asarray(result["labels"])
    preds = probs.argmax(2)
    ref = steps.index(result["reference"])
    frame = pd.DataFrame({
        "face": np.repeat(faces, len(steps)), "label": np.repeat(labels, len(steps)),
        "step": np.tile(np.asarray(steps, dtype=object), len(faces)), "pred": preds.ravel(),
        "correct": (preds == labels[:, None]).ravel(),
        "true_prob": np.take_along_axis(probs, labels[:, None, None], 2)[..., 0].ravel(),
        "flipped": (preds != preds[:, [ref]]).ravel(),
    })
    flat = probs.reshape(-1, len(names))
    return pd.concat([frame, pd.DataFrame({f"prob_{name}": flat[:, k] for k, name in enumerate(names)})], axis=1)


def summary_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per step: ``step``, ``accuracy``, ``true_prob``, ``flipped``, ``flip_rate`` and ``share_<class>``."""
    rows = [{k: v for k, v in row.items() if k != "share"}
            | {f"share_{name}": share for name, share in row["share"].items()} for row in result["summary"]]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- files
def probe_paths(run_dir: str | os.PathLike, factor: str) -> tuple[Path, Path]:
    """``probe/<factor>.json`` and ``probe/<factor>.csv`` of a run."""
    folder = Path(run_dir) / FOLDER
    return folder / f"{factor}.json", folder / f"{factor}.csv"


def read_probe(run_dir: str | os.PathLike, factor: str) -> dict[str, Any] | None:
    """The run's last probe of ``factor`` (:func:`probe`), or None when it has none."""
    import json

    check_sweep(factor)
    path = probe_paths(run_dir, factor)[0]
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


__all__ = ["SWEEPS", "Sweep", "SYNTHFACS_DATASETS", "DEFAULT_N", "check_sweep", "parse_steps", "check_steps",
           "probe_dataset", "choose_faces", "counterfactual_spec", "probe", "faces_frame", "summary_frame",
           "probe_paths", "read_probe"]
