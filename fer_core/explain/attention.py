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
        ``bottom_left``, ``bottom_right``; each a sigmoid in (0, 1), all 1 with ``attention=False``).

    Raises:
        ValueError: the model has no ``forward_attention``.
    """
    if not callable(getattr(model, "forward_attention", None)):
        raise ValueError(f"{type(model).__name__} has no attention weights (no forward_attention); the models "
                         "that have them: scn, region_attention")
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
