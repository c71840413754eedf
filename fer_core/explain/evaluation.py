"""Which explanation is right: localisation against SynthFACS's ground-truth masks, and faithfulness.

SynthFACS renders every face twice, at rest and with its expression; the pixels that differ (minus hair and
occluders) are the face's relevance mask: where the expression *is*. A map that explains an expression should put
its relevance there. For each method, on test faces:

* **pointing game** (Zhang et al., 2016): the map's maximum falls inside the mask;
* **relevance mass accuracy** (Arras et al., 2022): the share of the map's positive relevance inside the mask;
* **relevance rank accuracy** (Arras et al., 2022): the share of the top-K pixels inside the mask, K = mask size;
* **deletion / insertion AUC** (Petsiuk et al., RISE, 2018), faithfulness to the model: the target class's
  probability as the most relevant pixels are replaced by a blurred copy of the face (deletion: lower is
  better) or restored into the blurred face (insertion: higher is better), in ``steps`` equal steps.

Two reference rows bound each column: a uniformly random map (the floor) and the mask itself (the ceiling for
localisation; not necessarily for faithfulness, which measures the *model*, not the face).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_core.explain.core import explain
from fer_core.transforms import BatchTransform

REFERENCE_ROWS = ("random", "mask")
METRICS = ("pointing", "mass", "rank", "deletion", "insertion")


@dataclass(frozen=True)
class FaceScores:
    pointing: float
    mass: float
    rank: float
    deletion: float
    insertion: float


def localisation(map_: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Pointing game hit (1/0), relevance mass accuracy and relevance rank accuracy of a map against a 0/1 mask.

    Only positive relevance counts (signed maps: evidence for the class). An all-zero map scores 0.
    """
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("the mask is empty: nothing to localise")
    pos = np.clip(map_.astype(np.float64), 0, None)
    if pos.max() <= 0:
        return 0.0, 0.0, 0.0
    pointing = float(mask.flat[int(np.argmax(pos))])
    mass = float(pos[mask].sum() / pos.sum())
    k = int(mask.sum())
    top = np.argpartition(-pos.ravel(), k - 1)[:k]
    rank = float(mask.ravel()[top].mean())
    return pointing, mass, rank


def _blurred(image: np.ndarray) -> np.ndarray:
    sigma = max(image.shape[:2]) / 8
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma)


@torch.inference_mode()
def deletion_insertion(model: nn.Module, image: np.ndarray, map_: np.ndarray, target: int,
                       steps: int = 16) -> tuple[float, float]:
    """Deletion and insertion AUC (mean of the target probability over ``steps + 1`` equally spaced fractions)."""
    order = np.argsort(-map_.ravel(), kind="stable")
    base = _blurred(image)
    n = order.size
    frames_del, frames_ins = [], []
    flat_img = image.reshape(n, -1)
    flat_base = base.reshape(n, -1)
    for i in range(steps + 1):
        chosen = order[: round(n * i / steps)]
        d = flat_img.copy()
        d[chosen] = flat_base[chosen]
        ins = flat_base.copy()
        ins[chosen] = flat_img[chosen]
        frames_del.append(d.reshape(image.shape))
        frames_ins.append(ins.reshape(image.shape))
    frames = np.stack(frames_del + frames_ins)
    batch = torch.from_numpy(frames if frames.ndim == 4 else frames[..., None]).permute(0, 3, 1, 2).contiguous()
    device = next(model.parameters()).device
    probs = torch.softmax(model(BatchTransform(model.cfg, device=device)(batch)).float(), dim=1)[:, target].cpu()
    curve_del, curve_ins = probs[: steps + 1].numpy(), probs[steps + 1:].numpy()
    return float(np.trapezoid(curve_del) / steps), float(np.trapezoid(curve_ins) / steps)


def score_face(model: nn.Module, image: np.ndarray, mask: np.ndarray, map_: np.ndarray, target: int,
               steps: int = 16) -> FaceScores:
    pointing, mass, rank = localisation(map_, mask)
    deletion, insertion = deletion_insertion(model, image, map_, target, steps)
    return FaceScores(pointing, mass, rank, deletion, insertion)


def evaluate_explanations(model: nn.Module, faces: Sequence[dict], methods: Sequence[str], *,
                          subsets: dict[str, set[int]] | None = None, steps: int = 16, seed: int = 0,
                          options: dict[str, dict] | None = None) -> pd.DataFrame:
    """Score every method (plus the random and mask reference rows) on every face.

    Args:
        model: the model to explain, in eval mode.
        faces: items of a data set with masks: ``{"image": uint8 C x H x W tensor, "mask": H x W, "index": i}``.
        methods: explanation method names.
        subsets: subset name -> the ``index`` values in it (``all`` is added).
        steps: deletion/insertion steps.
        seed: for the random reference maps.
        options: per-method options for :func:`fer_core.explain.explain`.

    Returns:
        One row per (method, subset): n, the five metrics (means) and ``ms_per_face`` (the explanation's time).
    """
    rng = np.random.default_rng(seed)
    records = []
    if faces:  # first calls import libraries and warm caches: keep that out of the timings
        warm = faces[0]["image"].permute(1, 2, 0).numpy()
        for method in methods:
            explain(model, warm[..., 0] if warm.shape[2] == 1 else warm, method, **(options or {}).get(method, {}))
    for face in faces:
        image = face["image"].permute(1, 2, 0).numpy()
        image = image[..., 0] if image.shape[2] == 1 else image
        mask = face["mask"].numpy() if hasattr(face["mask"], "numpy") else np.asarray(face["mask"])
        if not mask.any():
            continue
        target = None
        for method in (*methods, *REFERENCE_ROWS):
            start = time.perf_counter()
            if method == "random":
                map_ = rng.random(mask.shape).astype(np.float32)
            elif method == "mask":
                map_ = mask.astype(np.float32) + 1e-3 * rng.random(mask.shape).astype(np.float32)
            else:
                exp = explain(model, image, method, **(options or {}).get(method, {}))
                map_, target = exp.map, exp.target
            ms = (time.perf_counter() - start) * 1000
            if target is None:  # reference rows before any method: the predicted class
                with torch.inference_mode():
                    x = BatchTransform(model.cfg, device=next(model.parameters()).device)(face["image"][None])
                    target = int(model(x).argmax(1))
            scores = score_face(model, image, mask, map_, target, steps)
            records.append({"method": method, "index": int(face["index"]), "ms": ms, **scores.__dict__})
    df = pd.DataFrame.from_records(records)
    groups = {"all": None, **(subsets or {})}
    rows = []
    for name, members in groups.items():
        part = df if members is None else df[df["index"].isin(members)]
        if part.empty:
            continue
        for method, g in part.groupby("method", sort=False):
            rows.append({"method": method, "subset": name, "n": len(g),
                         **{m: float(g[m].mean()) for m in METRICS}, "ms_per_face": float(g["ms"].mean())})
    return pd.DataFrame(rows)


def synthfaces_eval_faces(n: int, *, split: str = "test", **options) -> tuple[list[dict], dict[str, set[int]]]:
    """``n`` SynthFACS faces spread evenly over a split, and the membership of each test subset."""
    from fer_core.data import build_dataset, materialize

    ds = build_dataset("synthfaces", split=split, **options)
    materialize(ds)  # renders (or reads the cache) once; items then come from memory
    picks = np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int)
    faces = [ds[int(i)] for i in dict.fromkeys(picks.tolist())]
    subsets = {}
    for name in ds.subsets:
        sub = build_dataset("synthfaces", split=split, subset=name, **options)
        subsets[name] = {int(i) for i in sub.split_indices}
    return faces, subsets


def to_markdown(df: pd.DataFrame, subsets: Sequence[str] = ("all",)) -> str:
    """The results as markdown tables, one per subset, methods ordered by relevance mass."""
    out = []
    for name in subsets:
        part = df[df["subset"] == name].sort_values("mass", ascending=False)
        if part.empty:
            continue
        out.append(f"**{name}** ({int(part['n'].iloc[0])} faces)\n")
        out.append("| method | pointing game | relevance mass | relevance rank | deletion AUC (lower better) | "
                   "insertion AUC (higher better) | ms per face |")
        out.append("|---|---|---|---|---|---|---|")
        for _, r in part.iterrows():
            ms = "-" if r["method"] in REFERENCE_ROWS else f"{r['ms_per_face']:.0f}"
            label = {"random": "*random map (floor)*", "mask": "*ground-truth mask (ceiling)*"}.get(r["method"],
                                                                                                   r["method"])
            out.append(f"| {label} | {r['pointing']:.3f} | {r['mass']:.3f} | {r['rank']:.3f} | "
                       f"{r['deletion']:.3f} | {r['insertion']:.3f} | {ms} |")
        out.append("")
    return "\n".join(out)
