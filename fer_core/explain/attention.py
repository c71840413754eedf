"""Attention weights the models compute themselves: SCN's per-sample importance and the region net's part weights,
for one image (:func:`attention_weights`) or for a whole training set from a run (:func:`read_scn_weights`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from fer_core.explain.core import frozen_eval, prepare

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def attention_weights(model: nn.Module, image: np.ndarray) -> dict[str, float]:
    """The model's attention weights for one uint8 face crop (``H x W`` or ``H x W x 3``, any size).

    Returns:
        SCN: ``{"importance": alpha}`` (the sample's importance weight, in (0, 1)); the region attention net:
        one weight per part, keyed by ``model.region_names`` (``face``, ``top_left``, ``top_right``,
        ``bottom_left``, ``bottom_right``; each a sigmoid in (0, 1), all 1 with ``attention=False``); RAN: its
        softmaxed self-attention weights (summing to 1), keyed ``face``, ``center_down``, ``top_left``,
        ``top_right``, ``center_90``, ``center_80``.

    Raises:
        ValueError: the model has no ``forward_attention``.
    """
    if not callable(getattr(model, "forward_attention", None)):
        raise ValueError(f"{type(model).__name__} has no attention weights (no forward_attention); the models "
                         "that have them: scn, region_attention, ran")
    _, _, x = prepare(model, image)
    with frozen_eval(model), torch.no_grad():
        weights = model.forward_attention(x).weights[0].double().cpu().tolist()
    names = getattr(model, "region_names", None)
    if names is None:
        names = ("importance",) if len(weights) == 1 else tuple(f"part_{i}" for i in range(len(weights)))
    return dict(zip(names, weights, strict=True))


_EPOCH_FILE = re.compile(r"epoch_(\d+)\.csv")


def read_scn_weights(run_dir: str | os.PathLike, epoch: int | None = None) -> pd.DataFrame:
    """The per-sample SCN importance weights a run wrote for one epoch (``scn/epoch_NNN.csv``).

    Args:
        run_dir: the run directory.
        epoch: the epoch (as numbered in the file names); None: the latest written.

    Returns:
        Columns ``index`` (sample index in the training split), ``weight`` (float, NaN for a sample not seen
        that epoch), ``group`` ("high" or "low" importance), ``label`` (the label trained on, after any
        relabelling), ``clean_label`` (before injected noise); ``df.attrs["epoch"]`` is the epoch read.

    Raises:
        FileNotFoundError: no ``scn/`` files (not an SCN run, or no epoch finished yet) or no such epoch (the
            message lists the epochs there are).
    """
    import pandas as pd

    folder = Path(run_dir) / "scn"
    epochs = sorted(int(m.group(1)) for p in folder.glob("epoch_*.csv") if (m := _EPOCH_FILE.fullmatch(p.name)))
    if not epochs:
        raise FileNotFoundError(f"no SCN weights in {folder}: the run was not trained with method 'scn', or no "
                                "epoch has finished yet")
    if epoch is None:
        epoch = epochs[-1]
    if epoch not in epochs:
        raise FileNotFoundError(f"no SCN weights for epoch {epoch} in {folder}; epochs written: "
                                f"{', '.join(map(str, epochs))}")
    df = pd.read_csv(folder / f"epoch_{epoch:03d}.csv",
                     dtype={"index": "int64", "weight": "float64", "group": "string", "label": "int64",
                            "clean_label": "int64"})
    df.attrs["epoch"] = epoch
    return df


def scn_epochs(run_dir: str | os.PathLike) -> list[int]:
    """The epochs (file numbering, 0-based) for which a run wrote ``scn/epoch_NNN.csv``, ascending; [] if none."""
    folder = Path(run_dir) / "scn"
    return sorted(int(m.group(1)) for p in folder.glob("epoch_*.csv") if (m := _EPOCH_FILE.fullmatch(p.name)))


_RELABEL_FILE = re.compile(r"relabels_(\d+)\.csv")


def read_scn_relabels(run_dir: str | os.PathLike) -> pd.DataFrame:
    """Every relabel event of an SCN run (``scn/relabels_NNN.csv``), in the order they happened.

    Returns:
        Columns ``epoch`` (1-based, as in ``metrics.jsonl``: events of ``relabels_NNN.csv`` are epoch NNN + 1),
        ``index`` (sample index in the training split), ``old_label``, ``new_label``, ``clean_label``,
        ``fixed`` (the new label is the clean one: injected noise undone) and ``broke`` (the old label was the
        clean one: a correct label replaced). Per epoch, the sums of ``fixed`` and ``broke`` are the
        ``scn_relabel_fixed`` and ``scn_relabel_broke`` of ``metrics.jsonl``. Empty (with these columns) when
        the run relabelled nothing or wrote no SCN files.
    """
    import pandas as pd

    folder = Path(run_dir) / "scn"
    files = sorted((int(m.group(1)), p) for p in folder.glob("relabels_*.csv")
                   if (m := _RELABEL_FILE.fullmatch(p.name)))
    columns = ["epoch", "index", "old_label", "new_label", "clean_label"]
    frames = []
    for epoch, path in files:
        df = pd.read_csv(path, dtype="int64")
        if len(df):
            frames.append(df.assign(epoch=epoch + 1)[columns])
    events = (pd.concat(frames, ignore_index=True) if frames
              else pd.DataFrame({c: pd.Series(dtype="int64") for c in columns}))
    events["fixed"] = events["new_label"] == events["clean_label"]
    events["broke"] = events["old_label"] == events["clean_label"]
    return events


def scn_initial_labels(weights: pd.DataFrame, relabels: pd.DataFrame) -> np.ndarray:
    """The training labels before any relabelling (with injected noise), per sample index.

    A sample's label only changes through a relabel event, so its first event's ``old_label`` is its initial
    label, and a sample never relabelled keeps the ``label`` of any epoch's weights file.

    Args:
        weights: one epoch of :func:`read_scn_weights` (any epoch).
        relabels: :func:`read_scn_relabels` of the same run.
    """
    labels = np.empty(int(weights["index"].max()) + 1 if len(weights) else 0, dtype=np.int64)
    labels[weights["index"].to_numpy()] = weights["label"].to_numpy()
    if len(relabels):
        first = relabels.drop_duplicates("index", keep="first")
        labels[first["index"].to_numpy()] = first["old_label"].to_numpy()
    return labels


def scn_samples(run_dir: str | os.PathLike, epoch: int | None = None) -> pd.DataFrame:
    """:func:`read_scn_weights` with what each sample went through: ``initial_label`` (before relabelling),
    ``noisy`` (the initial label is not the clean one: injected noise) and ``relabelled`` (its label at the end
    of this epoch differs from the initial one). ``epoch`` is the file numbering, as in :func:`read_scn_weights`."""
    df = read_scn_weights(run_dir, epoch)
    initial = scn_initial_labels(df, read_scn_relabels(run_dir))[df["index"].to_numpy()]
    df["initial_label"] = initial
    df["noisy"] = initial != df["clean_label"].to_numpy()
    df["relabelled"] = initial != df["label"].to_numpy()
    return df


def scn_epoch_summary(run_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per epoch of an SCN run: how the importance weights split the samples, and what relabelling did.

    Returns:
        Columns ``epoch`` (1-based, as in ``metrics.jsonl``), ``seen`` (samples with a weight that epoch),
        ``mean_weight``, ``weight_high`` / ``weight_low`` (mean weight of the high / low importance group),
        ``low_share`` (fraction of seen samples in the low group), ``weight_noisy`` / ``weight_clean`` (mean
        weight of the samples whose initial label was / was not injected noise; NaN when there are none, which
        is how ``metrics.jsonl``'s ``scn_weight_noisy`` / ``scn_weight_clean`` are defined), ``label_noise``
        (fraction of labels that differ from the clean ones at the end of the epoch: ``scn_label_noise``),
        ``relabelled``, ``fixed``, ``broke`` (events that epoch). Empty when the run wrote no SCN files.
    """
    import pandas as pd

    relabels = read_scn_relabels(run_dir)
    per_epoch = relabels.groupby("epoch")[["fixed", "broke"]].agg(["size", "sum"]) if len(relabels) else None
    rows = []
    initial = None
    for file_epoch in scn_epochs(run_dir):
        df = read_scn_weights(run_dir, file_epoch)
        if initial is None:
            initial = scn_initial_labels(df, relabels)
        idx = df["index"].to_numpy()
        w = df["weight"].to_numpy(dtype=np.float64)
        seen = ~np.isnan(w)
        low = (df["group"] == "low").to_numpy(dtype=bool)
        noisy = initial[idx] != df["clean_label"].to_numpy()

        def mean(sel: np.ndarray, w: np.ndarray = w) -> float:
            return float(w[sel].mean()) if sel.any() else float("nan")

        epoch = file_epoch + 1
        has_noise = (noisy & seen).any() and (~noisy & seen).any()
        events = per_epoch.loc[epoch] if per_epoch is not None and epoch in per_epoch.index else None
        rows.append({
            "epoch": epoch, "seen": int(seen.sum()), "mean_weight": mean(seen),
            "weight_high": mean(seen & ~low), "weight_low": mean(seen & low),
            "low_share": float((low & seen).sum() / seen.sum()) if seen.any() else float("nan"),
            "weight_noisy": mean(seen & noisy) if has_noise else float("nan"),
            "weight_clean": mean(seen & ~noisy) if has_noise else float("nan"),
            "label_noise": float((df["label"] != df["clean_label"]).mean()) if len(df) else float("nan"),
            "relabelled": int(events[("fixed", "size")]) if events is not None else 0,
            "fixed": int(events[("fixed", "sum")]) if events is not None else 0,
            "broke": int(events[("broke", "sum")]) if events is not None else 0,
        })
    columns = ["epoch", "seen", "mean_weight", "weight_high", "weight_low", "low_share", "weight_noisy",
               "weight_clean", "label_noise", "relabelled", "fixed", "broke"]
    return pd.DataFrame(rows, columns=columns)
