"""Sanity checks for explanation methods (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018).

Does a method explain the *model* at all? If its maps barely change when the model's weights are destroyed, or when
the model was trained on labels that mean nothing, the maps show the image (edges, contrast), not what the model
learned. For every method, on the same faces:

* **cascading randomisation**: copies of the model with its layer groups re-initialised from the top (the output)
  down, cumulatively, until every weight is random;
* **independent randomisation**: one group re-initialised at a time, the rest trained;
* **data randomisation**: the same config trained on shuffled training labels (``data.shuffle_labels: true``,
  :func:`fer_core.losses.shuffle_labels`), a model that can only memorise.

Protocol (as Adebayo et al.): every map explains the class the **original** model predicts for the face, on the
original and on every randomised model, so a change of the map is a change of the explanation, not of the class.
Each randomised map is compared with the original map of the same face and method by

* ``spearman_abs``: Spearman rank correlation (``scipy.stats.spearmanr``) of the absolute values;
* ``spearman_signed``: the same on the signed values (only for signed methods: integrated gradients, occlusion,
  LIME; NaN for the others);
* ``ssim``: structural similarity (``skimage.metrics.structural_similarity``) of the absolute values, which lie in
  [0, 1] (``explain`` normalises every map), so ``data_range=1``; default 7 x 7 window.

Both maps are first resized to the model's input size (area averaging), so the SSIM window covers the same share
of every face whatever the size of its crop. A constant map (e.g. Grad-CAM of a model whose ReLUs are all off)
has no ranks: two constant maps count as identical (1.0), one constant map against a varying one as unrelated
(0.0). Per step, the mean over faces with a Student-t 95% interval (:func:`fer_core.stats.mean_ci`).

**Layer groups** (:func:`layer_groups`): a *group* is a module with its own weights that is not a plain container.
From the model down, plain ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict`` are opened, any other module
that holds parameters is one group (a residual block, a conv-BN-ReLU block, a lone conv, BN or linear layer). So
the small CNN has 5 groups (4 conv blocks, the classifier) and mini-Xception 9 (the stem's two convs and two BNs,
the four residual modules, the class convolution). Groups are ordered by when their forward pass starts on a
dummy input, the top (nearest the output) first.

**Re-initialisation** (:func:`randomize`): every submodule of a group with a ``reset_parameters`` method calls it
(PyTorch's own initialisation of that layer: Kaiming-uniform convs and linears, BatchNorm weight 1 and bias 0)
under a seed fixed per group, so the same group gets the same random weights in every step and every run;
BatchNorm's ``reset_parameters`` also resets its running statistics (mean 0, variance 1), so a re-initialised
BN layer is an identity in eval mode. Parameters of a module without ``reset_parameters`` are redrawn from a normal
distribution with their own trained mean and standard deviation. The original model is never modified (deep
copies).

**Verdict** (:func:`verdict`), a threshold fixed before any result was seen, since the literature has none (Adebayo
et al. judge curves and pictures): a method **passes** when the maps of the fully randomised model (the cascade's
last step) *and* of the label-shuffled model are dissimilar from the original maps: mean ``|spearman_abs|`` below
0.5 (below a "moderate" correlation on the usual scale) and mean ``ssim`` below 0.5. Without a shuffled model only
the model randomisation is judged and the verdict says so.

Methods that ignore the class (EigenCAM, activations) get the same checks: for them the question is whether the
map shows features the model learned, rather than the structure of the image any random network would pass on.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn

from fer_core.explain.core import explain, method_info

RHO_MAX = 0.5
"""A method passes when the mean |Spearman rho| of |map| between original and randomised maps is below this..."""
SSIM_MAX = 0.5
"""...and the mean SSIM is below this, for the fully randomised model and for the label-shuffled model."""
SSIM_DATA_RANGE = 1.0
"""|map| lies in [0, 1] for every method (``explain`` normalises), so SSIM's data range is 1."""
MODES = ("cascade", "independent")
METRICS = ("spearman_abs", "spearman_signed", "ssim")
DOCS_ANCHOR = "docs/EXPLANATIONS.md#sanity-checks-adebayo-et-al-2018"
RESULTS_PATH = Path(__file__).resolve().parents[2] / "docs" / "explain_sanity.json"
"""The per-method verdicts of the checks reported in docs/EXPLANATIONS.md, read by the Explain page."""
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# --------------------------------------------------------------------------------------------- layer groups
@dataclass(frozen=True)
class LayerGroup:
    """One unit of randomisation: a module with its own weights (see the module docstring for the rule).

    Attributes:
        name: dotted module path (``blocks.3``, ``fc``).
        kind: the module's class name.
        params: number of parameters in it.
    """

    name: str
    kind: str
    params: int


def _candidate_groups(model: nn.Module) -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if not any(True for _ in child.parameters()):
                continue
            if type(child) in _CONTAINERS:
                visit(path + ".", child)
            else:
                out.append((path, child))

    visit("", model)
    if any(True for _ in model.parameters(recurse=False)):
        raise ValueError(f"{type(model).__name__} holds parameters directly (not in a submodule): its layers cannot "
                         "be grouped for randomisation")
    return out


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The model's layer groups, top (nearest the output) first, in the order a forward pass reaches them.

    Groups the forward pass never reaches (unused heads) are left out.

    Raises:
        ValueError: a model with no parameters, or without ``.cfg`` (its input size is needed).
    """
    candidates = _candidate_groups(model)
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no parameters: nothing to randomise")
    if not hasattr(model, "cfg"):
        raise ValueError(f"{type(model).__name__} has no .cfg (input size): build it with fer_core.models.create_model")
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _x, n=n: order.append(n) if n not in order else None)
               for n, m in candidates]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *model.cfg.input_size, device=device))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    modules = dict(candidates)
    return [LayerGroup(name=n, kind=type(modules[n]).__name__, params=sum(p.numel() for p in modules[n].parameters()))
            for n in reversed(order)]


def _group_seed(seed: int, index: int) -> int:
    return seed * 100_003 + 7919 * (index + 1)


@torch.no_grad()
def _reinit(module: nn.Module) -> None:
    covered: set[int] = set()
    for sub in module.modules():
        if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
            sub.reset_parameters()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    for sub in module.modules():
        for p in sub.parameters(recurse=False):
            if id(p) not in covered:
                std = float(p.std()) if p.numel() > 1 else 0.0
                p.normal_(float(p.mean()), std if math.isfinite(std) and std > 0 else 0.02)


def randomize(model: nn.Module, groups: Sequence[str], *, seed: int = 0) -> nn.Module:
    """A deep copy of the model with the named layer groups re-initialised (the model itself is not touched).

    Each group is re-initialised under its own seed (derived from ``seed`` and its place in
    :func:`layer_groups`), so a group gets the same weights whichever other groups are randomised with it.

    Raises:
        ValueError: a name that is not one of the model's groups (the message lists them).
    """
    order = [g.name for g in layer_groups(model)]
    unknown = [g for g in groups if g not in order]
    if unknown:
        raise ValueError(f"unknown layer group(s) {unknown}; the model's groups, top first: {', '.join(order)}")
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    device = next(clone.parameters()).device
    for name in groups:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(_group_seed(seed, order.index(name)))
            _reinit(modules[name])
    return clone


@dataclass(frozen=True)
class Step:
    """One randomised model of a check: ``mode`` ("cascade", "independent" or "shuffled"), its place ``index``
    (cascade: how many groups from the top are random, minus one), a ``label`` and the groups re-initialised."""

    mode: str
    index: int
    label: str
    groups: tuple[str, ...]


def randomisation_steps(groups: Sequence[LayerGroup], modes: Sequence[str] = MODES) -> list[Step]:
    """The cascade (top group, top two, ..., all) and the independent steps (each group alone), as asked."""
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown randomisation mode(s) {bad}; valid: {', '.join(MODES)}")
    names = [g.name for g in groups]
    steps = []
    if "cascade" in modes:
        steps += [Step("cascade", i, f"to {n}" if i < len(names) - 1 else "all", tuple(names[:i + 1]))
                  for i, n in enumerate(names)]
    if "independent" in modes:
        steps += [Step("independent", i, n, (n,)) for i, n in enumerate(names)]
    return steps


# --------------------------------------------------------------------------------------------- similarity
def _ranks_corr(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    const_a, const_b = bool(np.ptp(a) == 0), bool(np.ptp(b) == 0)
    if const_a or const_b:
        return 1.0 if const_a and const_b else 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def map_similarity(original: np.ndarray, other: np.ndarray, *, signed: bool = False,
                   size: tuple[int, int] | None = None) -> dict[str, float]:
    """Similarity of two maps of one face: ``spearman_abs``, ``spearman_signed`` (NaN unless ``signed``), ``ssim``.

    Args:
        original, other: float maps of the same shape (``explain``'s: in [0, 1], or [-1, 1] when signed).
        signed: the method's maps are signed (also rank the signed values).
        size: (h, w) to resize both maps to first (area averaging); None keeps them as they are.

    Raises:
        ValueError: maps of different shapes, or not 2-D.
    """
    from skimage.metrics import structural_similarity

    a, b = (np.asarray(m, dtype=np.float32) for m in (original, other))
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"maps must be two h x w arrays of the same shape, got {a.shape} and {b.shape}")
    if size is not None and a.shape != tuple(size):
        a, b = (cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_AREA) for m in (a, b))
    abs_a, abs_b = np.abs(a), np.abs(b)
    win = min(7, *a.shape) // 2 * 2 + 1 if min(a.shape) < 7 else 7
    ssim = float(structural_similarity(abs_a, abs_b, data_range=SSIM_DATA_RANGE, win_size=win))
    return {"spearman_abs": _ranks_corr(abs_a, abs_b),
            "spearman_signed": _ranks_corr(a, b) if signed else math.nan,
            "ssim": ssim}


# --------------------------------------------------------------------------------------------- the checks
@dataclass(frozen=True)
class Verdict:
    """A method's verdict: ``passed`` (True/False), ``checks`` (what was judged: "cascade", "shuffled"), the mean
    similarities behind it (``{check: {metric: mean}}``) and ``reason`` (one sentence)."""

    method: str
    passed: bool
    checks: tuple[str, ...]
    means: dict[str, dict[str, float]]
    reason: str

    @property
    def label(self) -> str:
        """"passed", "failed", or "passed (model randomisation only)" without a shuffled model."""
        if not self.passed:
            return "failed"
        return "passed" if "shuffled" in self.checks else "passed (model randomisation only)"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.label, "passed": self.passed, "checks": list(self.checks),
                "means": {k: {m: _round(v) for m, v in d.items()} for k, d in self.means.items()},
                "reason": self.reason}


def _round(v: float) -> float | None:
    return None if not math.isfinite(v) else round(float(v), 4)


def verdict(method: str, summary: pd.DataFrame) -> Verdict:
    """Judge a method from a :attr:`SanityReport.summary` by the fixed rule (module docstring): the cascade's last
    step and, when present, the shuffled model, each with mean |spearman_abs| < :data:`RHO_MAX` and mean ssim <
    :data:`SSIM_MAX`.

    Raises:
        ValueError: the summary has no full cascade for the method.
    """
    rows = summary[summary["method"] == method]
    cascade = rows[rows["mode"] == "cascade"]
    if cascade.empty:
        raise ValueError(f"no cascading randomisation of {method} in the results: a verdict needs the fully "
                         "randomised model (mode 'cascade')")
    judged = {"cascade": cascade.loc[cascade["index"].idxmax()]}
    shuffled = rows[rows["mode"] == "shuffled"]
    if not shuffled.empty:
        judged["shuffled"] = shuffled.iloc[0]
    means, problems = {}, []
    for check, r in judged.items():
        means[check] = {"spearman_abs": float(r["abs_spearman_abs"]), "ssim": float(r["ssim"])}
        what = "fully randomised model" if check == "cascade" else "label-shuffled model"
        if not means[check]["spearman_abs"] < RHO_MAX:
            problems.append(f"{what}: mean |rho| {means[check]['spearman_abs']:.2f} >= {RHO_MAX}")
        if not means[check]["ssim"] < SSIM_MAX:
            problems.append(f"{what}: mean SSIM {means[check]['ssim']:.2f} >= {SSIM_MAX}")
    passed = not problems
    reason = ("maps of the " + " and the ".join("fully randomised model" if c == "cascade" else "label-shuffled model"
                                                 for c in judged) + f" are dissimilar (|rho| < {RHO_MAX}, "
              f"SSIM < {SSIM_MAX})") if passed else "; ".join(problems)
    return Verdict(method=method, passed=passed, checks=tuple(judged), means=means, reason=reason)


@dataclass
class SanityReport:
    """What :func:`sanity_check` measured.

    Attributes:
        records: one row per (method, step, face): mode, index, label, face, the three similarities.
        summary: one row per (method, step): n, mean and 95% interval of each similarity, and the mean of
            |spearman_abs| (``abs_spearman_abs``, what the verdict reads).
        verdicts: method -> :class:`Verdict`.
        groups: the model's layer groups, top first.
        seconds: wall time; ``seconds_per_method``: method -> seconds spent computing its maps.
        faces: number of faces.
    """

    records: pd.DataFrame
    summary: pd.DataFrame
    verdicts: dict[str, Verdict]
    groups: list[LayerGroup]
    seconds: float
    seconds_per_method: dict[str, float]
    faces: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: settings, thresholds, groups, verdicts and the summary table."""
        summary = [{k: (_round(v) if isinstance(v, float) else v) for k, v in row.items()}
                   for row in self.summary.to_dict(orient="records")]
        return {"settings": self.settings, "faces": self.faces, "seconds": round(self.seconds, 1),
                "seconds_per_method": {k: round(v, 1) for k, v in self.seconds_per_method.items()},
                "thresholds": {"spearman_abs": RHO_MAX, "ssim": SSIM_MAX, "ssim_data_range": SSIM_DATA_RANGE},
                "groups": [g.__dict__ for g in self.groups],
                "verdicts": {m: v.to_dict() for m, v in self.verdicts.items()}, "summary": summary}


def summarise(records: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval over faces of each similarity, per (method, mode, index, label)."""
    from fer_core.stats import mean_ci

    rows = []
    for (method, mode, index, label), g in records.groupby(["method", "mode", "index", "label"], sort=False):
        row: dict[str, Any] = {"method": method, "mode": mode, "index": int(index), "label": label, "n": len(g)}
        for metric in METRICS:
            ci = mean_ci(g[metric].to_numpy())
            row.update({metric: ci.mean, f"{metric}_low": ci.low, f"{metric}_high": ci.high})
        ci = mean_ci(np.abs(g["spearman_abs"].to_numpy()))  # what the verdict reads
        row.update({"abs_spearman_abs": ci.mean, "abs_spearman_abs_low": ci.low, "abs_spearman_abs_high": ci.high})
        rows.append(row)
    return pd.DataFrame(rows)


@contextmanager
def _timed(totals: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - start


def _check_faces(faces: Sequence[np.ndarray]) -> list[np.ndarray]:
    if not faces:
        raise ValueError("no faces to explain: pass at least one uint8 face crop")
    return list(faces)


def sanity_check(model: nn.Module, faces: Sequence[np.ndarray], methods: Sequence[str], *,
                 shuffled: nn.Module | None = None, modes: Sequence[str] = MODES, seed: int = 0,
                 options: dict[str, dict] | None = None,
                 progress: Callable[[str], None] | None = None) -> SanityReport:
    """Cascading and independent randomisation (and data randomisation with ``shuffled``) for every method.

    Args:
        model: the trained model (from ``create_model`` / ``load_run_model``); never modified.
        faces: uint8 face crops (``H x W`` grey or ``H x W x 3`` RGB), as for :func:`fer_core.explain.explain`.
        methods: registered method names.
        shuffled: the same architecture trained on shuffled labels (data randomisation), or None.
        modes: which model randomisations to run ("cascade", "independent").
        seed: seeds the re-initialisation.
        options: per-method options for ``explain``.
        progress: called with a line of text per step.

    Returns:
        A :class:`SanityReport`.

    Raises:
        ValueError: unknown methods or modes, no faces, a shuffled model with other classes.
    """
    faces = _check_faces(faces)
    for m in methods:
        method_info(m)
    if "cascade" not in modes:
        raise ValueError(f"modes {list(modes)} lack 'cascade': the verdict needs the fully randomised model")
    if shuffled is not None and tuple(shuffled.cfg.class_names) != tuple(model.cfg.class_names):
        raise ValueError(f"the shuffled model's classes {list(shuffled.cfg.class_names)} differ from the model's "
                         f"{list(model.cfg.class_names)}: train it with the same config plus data.shuffle_labels=true")
    started = time.perf_counter()
    options = options or {}
    say = progress or (lambda _text: None)
    size = tuple(model.cfg.input_size[1:])
    groups = layer_groups(model)
    steps = randomisation_steps(groups, modes)
    totals: dict[str, float] = {}

    def maps_of(net: nn.Module, targets: list[int] | None) -> tuple[dict[str, list[np.ndarray]], list[int]]:
        out: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        found: list[int] = []
        for i, face in enumerate(faces):
            for m in methods:
                with _timed(totals, m):
                    exp = explain(net, face, m, target=None if targets is None else targets[i], **options.get(m, {}))
                out[m].append(exp.map)
                if targets is None and len(found) == i:
                    found.append(exp.target)
        return out, found if targets is None else targets

    say(f"original model: {len(faces)} faces x {len(methods)} methods")
    original, targets = maps_of(model, None)
    records = []
    runs: list[tuple[Step, Callable[[], nn.Module]]] = [(s, lambda s=s: randomize(model, s.groups, seed=seed))
                                                          for s in steps]
    if shuffled is not None:
        runs.append((Step("shuffled", 0, "shuffled labels", ()), lambda: shuffled))
    for k, (step, build) in enumerate(runs, 1):
        say(f"step {k}/{len(runs)}: {step.mode} {step.label}")
        maps, _ = maps_of(build(), targets)
        for m in methods:
            signed = method_info(m).signed
            for i in range(len(faces)):
                sim = map_similarity(original[m][i], maps[m][i], signed=signed, size=size)
                records.append({"method": m, "mode": step.mode, "index": step.index, "label": step.label,
                                "face": i, **sim})
    df = pd.DataFrame.from_records(records)
    summary = summarise(df)
    verdicts = {m: verdict(m, summary) for m in methods}
    settings = {"methods": list(methods), "modes": list(modes), "shuffled": shuffled is not None, "seed": seed,
                "protocol": "maps for the original model's predicted class", "compared_at": list(size),
                "options": options}
    return SanityReport(records=df, summary=summary, verdicts=verdicts, groups=groups,
                        seconds=time.perf_counter() - started, seconds_per_method=totals, faces=len(faces),
                        settings=settings)


# --------------------------------------------------------------------------------------------- outputs
def to_markdown(report: SanityReport, title: str = "") -> str:
    """Markdown: the verdict table (fully randomised and label-shuffled model, every method), then the cascade and
    independent curves (mean rank correlation of |map| and mean SSIM per step)."""
    out = [title] if title else []
    out.append(f"{report.faces} faces; thresholds: mean |Spearman rho| of |map| < {RHO_MAX} and mean SSIM < "
               f"{SSIM_MAX} (data range {SSIM_DATA_RANGE:g}); maps for the original model's predicted class. "
               f"Layer groups, top first: " + ", ".join(f"`{g.name}` ({g.kind}, {g.params:,})" for g in report.groups)
               + ".\n")
    out.append("Verdict columns: mean over faces of |Spearman rho| between the |maps| (what the verdict reads) and "
               "mean SSIM, each with its 95% interval; signed rho only for signed methods; s: seconds spent "
               "computing the method's maps (all steps).\n")
    out.append("| method | verdict | fully randomised: \\|rho\\| | SSIM | label-shuffled: \\|rho\\| | SSIM | "
               "signed rho (random / shuffled) | s |")
    out.append("|---|---|---|---|---|---|---|---|")
    s = report.summary
    last = int(s[s["mode"] == "cascade"]["index"].max())

    def cell(row: pd.DataFrame, metric: str) -> str:
        if row.empty or not math.isfinite(float(row[metric].iloc[0])):
            return "-"
        r = row.iloc[0]
        return f"{r[metric]:.2f} [{r[metric + '_low']:.2f}, {r[metric + '_high']:.2f}]" \
            if math.isfinite(r[metric + "_low"]) else f"{r[metric]:.2f}"

    for m, v in report.verdicts.items():
        rows = s[s["method"] == m]
        full = rows[(rows["mode"] == "cascade") & (rows["index"] == last)]
        shuf = rows[rows["mode"] == "shuffled"]
        signed = " / ".join(cell(r, "spearman_signed") for r in (full, shuf)) if method_info(m).signed else "-"
        out.append(f"| {m} | **{v.label}** | {cell(full, 'abs_spearman_abs')} | {cell(full, 'ssim')} | "
                   f"{cell(shuf, 'abs_spearman_abs')} | {cell(shuf, 'ssim')} | {signed} | "
                   f"{report.seconds_per_method.get(m, math.nan):.0f} |")
    out.append("")
    for mode in ("cascade", "independent"):
        part = s[s["mode"] == mode]
        if part.empty:
            continue
        labels = list(dict.fromkeys(part.sort_values("index")["label"]))
        head = ("Cascading randomisation (top group down, cumulative)" if mode == "cascade"
                else "Independent randomisation (one group at a time)")
        for metric, what in (("spearman_abs", "mean Spearman rho of |map|"), ("ssim", "mean SSIM")):
            out.append(f"{head}: {what}\n")
            out.append("| method | " + " | ".join(labels) + " |")
            out.append("|---|" + "---|" * len(labels))
            for m in report.verdicts:
                vals = part[part["method"] == m].set_index("label")[metric]
                out.append(f"| {m} | " + " | ".join(f"{vals.get(lab, math.nan):.2f}" for lab in labels) + " |")
            out.append("")
    return "\n".join(out)


def load_report(folder: str | Path) -> SanityReport:
    """A report back from the ``sanity.json`` and ``sanity_faces.csv`` that ``explain-sanity`` wrote into
    ``folder`` (summary and verdicts recomputed from the per-face rows)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "sanity.json").read_text())
        records = pd.read_csv(folder / "sanity_faces.csv")
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{folder} does not hold a readable sanity.json and sanity_faces.csv ({err}); run "
                         "`python -m fer_core explain-sanity ... --out` into it") from None
    summary = summarise(records)
    methods = list(dict.fromkeys(records["method"]))
    return SanityReport(records=records, summary=summary, verdicts={m: verdict(m, summary) for m in methods},
                        groups=[LayerGroup(**g) for g in meta["groups"]], seconds=float(meta["seconds"]),
                        seconds_per_method=dict(meta["seconds_per_method"]), faces=int(meta["faces"]),
                        settings=dict(meta["settings"]))


def record_verdicts(report: SanityReport, key: str, description: str, command: str,
                    path: str | Path = RESULTS_PATH, *, label: str | None = None) -> Path:
    """Add (or replace) one checked model's verdicts in the results file the Explain page reads.

    The file: ``{"docs": anchor, "thresholds": ..., "models": {key: {"label" (a short name for a table column),
    "description", "command", "faces", "shuffled", "verdicts": {method: Verdict.to_dict()}}}}``.
    """
    from fer_core import io

    path = Path(path)
    data = read_results(path) if path.exists() else {}
    data["docs"] = DOCS_ANCHOR
    data["thresholds"] = {"spearman_abs": RHO_MAX, "ssim": SSIM_MAX, "ssim_data_range": SSIM_DATA_RANGE}
    data.setdefault("models", {})[key] = {
        "label": label or key, "description": description, "command": command, "faces": report.faces,
        "shuffled": bool(report.settings.get("shuffled")),
        "verdicts": {m: v.to_dict() for m, v in report.verdicts.items()}}
    io.atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    return path


def read_results(path: str | Path = RESULTS_PATH) -> dict[str, Any]:
    """The recorded verdicts (see :func:`record_verdicts`); ``{}`` when the file does not exist.

    Raises:
        ValueError: the file is not valid JSON of that shape (the message names it).
    """
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); rerun `python -m fer_core explain-sanity ... --record "
                         f"{path}` to rewrite it") from None
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise ValueError(f"{path} has no 'models' mapping; rerun `python -m fer_core explain-sanity` with --record")
    return data


def method_verdicts(method: str, results: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every recorded verdict of one method: ``[{"model": key, "label", "description", "verdict", "reason",
    "means"}]`` (``means``: ``{"cascade" | "shuffled": {"spearman_abs", "ssim"}}``; empty list: not checked)."""
    results = read_results() if results is None else results
    out = []
    for key, entry in (results.get("models") or {}).items():
        v = (entry.get("verdicts") or {}).get(method)
        if v is not None:
            out.append({"model": key, "label": entry.get("label", key), "description": entry.get("description", key),
                        "verdict": v.get("verdict"), "reason": v.get("reason", ""), "means": v.get("means", {})})
    return out


# --------------------------------------------------------------------------------------------- pictures
def cascade_preview(model: nn.Module, image: np.ndarray, method: str, target: int | str | None = None, *,
                    points: Sequence[str] = ("top", "half", "all"), seed: int = 0,
                    **options: Any) -> list[tuple[str, Any]]:
    """The method's map on the model and on cascade-randomised copies of it, for one face (the Explain page).

    ``points``: "top" (the top group random), "half" (the top half of the groups), "all" (every group). Every map
    explains the original model's class for the face (or ``target``). Returns ``[(label, Explanation)]``,
    the original first.
    """
    groups = [g.name for g in layer_groups(model)]
    original = explain(model, image, method, target=target, **options)
    cut = {"top": 1, "half": max(1, len(groups) // 2), "all": len(groups)}
    bad = [p for p in points if p not in cut]
    if bad:
        raise ValueError(f"unknown cascade point(s) {bad}; valid: top, half, all")
    out = [("trained model", original)]
    for p in points:
        k = cut[p]
        label = "all layers random" if k == len(groups) else f"top {k} of {len(groups)} layer groups random"
        out.append((label, explain(randomize(model, groups[:k], seed=seed), image, method, target=original.target,
                                   **options)))
    return out


def contact_sheet(model: nn.Module, face: np.ndarray, methods: Sequence[str], *, shuffled: nn.Module | None = None,
                  seed: int = 0, size: int = 96, options: dict[str, dict] | None = None) -> np.ndarray:
    """One row per method: the face, the original map, the cascade (top group, half, all random) and, with
    ``shuffled``, the label-shuffled model's map, each captioned. uint8 RGB."""
    from fer_core.explain.render import _caption, enlarge, overlay

    options = options or {}
    tile = enlarge(face, size)
    rows = []
    header = ["face", "trained", "top random", "half random", "all random"] + (["shuffled labels"] if shuffled else [])
    rows.append(np.hstack([_caption(size, h) for h in header] + [_caption(110, "")]))
    for m in methods:
        pairs = cascade_preview(model, face, m, seed=seed, **options.get(m, {}))
        maps = [e.map for _label, e in pairs]
        if shuffled is not None:
            maps.append(explain(shuffled, face, m, target=pairs[0][1].target, **options.get(m, {})).map)
        row = [tile] + [overlay(tile, mp) for mp in maps]
        name = _caption(110, m, height=size)
        rows.append(np.hstack(row + [name]))
    return np.vstack(rows)


# --------------------------------------------------------------------------------------------- faces
def real_faces(n_lfw: int = 18, size: int = 96) -> list[tuple[str, np.ndarray]]:
    """Real face crops bundled with the libraries: the first ``n_lfw`` faces of scikit-image's LFW subset (25 x 25
    grey, enlarged to ``size`` bicubic), the astronaut (Eileen Collins) and Grace Hopper, cropped by
    :func:`fer_core.face.faces`. Returns ``[(name, uint8 crop)]``."""
    import matplotlib.cbook
    from skimage import data

    from fer_core.face import faces as find_faces
    from fer_core.face import load_image

    out = []
    lfw = data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for i in range(min(n_lfw, len(lfw))):
        grey = (lfw[i] * 255).round().astype(np.uint8)
        out.append((f"lfw_subset[{i}]", cv2.resize(grey, (size, size), interpolation=cv2.INTER_CUBIC)))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = load_image(f.read())
    for name, image in (("astronaut", data.astronaut()), ("grace_hopper", hopper)):
        out.append((name, find_faces(image, whole_image_if_none=True)[0].crop))
    return out
