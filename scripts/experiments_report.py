"""Write docs/EXPERIMENTS.md from the run groups that ``scripts/run_experiments.sh`` creates.

    python scripts/experiments_report.py --out docs/EXPERIMENTS.md      # reads $FER_RUNS_DIR (default ./runs)

Every number in the file is read from a run directory (eval/*.json, metrics.jsonl) of the group named beside
its table; groups that have not been run (or are still running) are listed as such, never filled in.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_core import io  # noqa: E402

SUBSETS = ("all", "clean", "occlusion", "pose30", "pose45", "ambiguous")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def group_runs(name: str) -> list[dict]:
    """Finished runs of a group with their test accuracy per subset and their metrics rows."""
    out = []
    for r in io.list_runs(group=name):
        if r["state"] != "done":
            continue
        run = Path(r["path"])
        ev = io.read_eval(run)
        r["acc"] = {s: ev.get(f"test/{s}", {}).get("accuracy") for s in SUBSETS}
        r["macro_f1"] = ev.get("test/all", {}).get("macro_f1")
        r["metrics"] = io.read_metrics(run)
        r["train_seconds"] = sum(m.get("seconds", 0.0) for m in r["metrics"])
        out.append(r)
    return out


def status_line(name: str, runs: list[dict]) -> str:
    every = io.list_runs(group=name)
    if not every:
        return f"_Group `{name}` has not been run yet._\n"
    pending = [r for r in every if r["state"] != "done"]
    note = f"; {len(pending)} not finished ({', '.join(sorted({r['state'] for r in pending}))})" if pending else ""
    return f"Group `{name}`: {len(runs)} finished runs{note}.\n"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def seed_of(run: dict) -> int:
    """The run's seed tag; runs swept before seeds were a grid key used the base config's seed, 0."""
    return run["tags"].get("seed", 0)


def spread(values: list[float | None]) -> str:
    """Mean over seeds in %, with the range when there are several: ``70.8 (69.9-71.7)``."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return pct(values[0])
    return f"{pct(statistics.fmean(values))} ({pct(min(values))}-{pct(max(values))})"


# --------------------------------------------------------------------------------------------- sections
def e1() -> str:
    name = "e1-scn-noise"
    runs = group_runs(name)
    out = ["## 1. Baseline vs SCN under label noise\n",
           "The SCN paper's claim: as label noise grows, SCN loses less accuracy than its baseline, because noisy "
           "samples get low importance weights and some are relabelled. Protocol: each training label flipped with "
           "probability p to a random other class (`data.label_noise`); test labels clean. Both arms: the small CNN "
           "on 64x64 SynthFACS (4,000 training faces, 10 epochs, AdamW); SCN puts its importance branch on the same "
           "CNN and relabels from the 4th epoch (beta 0.7, margin_1 0.15, margin_2 0.2, gamma 0.5).\n",
           "Command: `bash scripts/run_experiments.sh e1`. " + status_line(name, runs)]
    by = {(r["tags"].get("variant"), r["tags"].get("data.label_noise")): r for r in runs}
    rows = []
    for p in sorted({k[1] for k in by}):
        b, s = by.get(("baseline", p)), by.get(("scn", p))
        ba, sa = (b or {}).get("acc", {}).get("all"), (s or {}).get("acc", {}).get("all")
        ms = (s or {}).get("metrics", [])
        relabelled = sum(m.get("scn_relabelled", 0) for m in ms)
        fixed = sum(m.get("scn_relabel_fixed", 0) for m in ms)
        broke = sum(m.get("scn_relabel_broke", 0) for m in ms)
        last = ms[-1] if ms else {}
        wn, wc = last.get("scn_weight_noisy"), last.get("scn_weight_clean")
        rows.append([f"{int(round(p * 100))}%", pct(ba), pct(sa),
                     "-" if ba is None or sa is None else f"{100 * (sa - ba):+.1f}",
                     str(relabelled) if s else "-", f"{fixed} / {broke}" if s else "-",
                     "-" if wn is None else f"{wn:.3f} / {wc:.3f}"])
    out.append(table(["noise", "baseline test acc", "SCN test acc", "SCN - baseline", "relabels (all epochs)",
                      "fixed / broke a correct label", "final-epoch weight: noisy / clean samples"], rows))
    return "\n".join(out)


def e1b() -> str:
    name = "e1b-scn-parts"
    runs = group_runs(name) + [r for r in group_runs("e1-scn-noise")
                               if r["tags"].get("data.label_noise") in (0, 0.3)]
    out = ["### 1b. Which part of SCN does what\n",
           "The same runs split into SCN's parts at 0% and 30% noise: the baseline; SCN with relabelling from the "
           "4th epoch (table 1); relabelling only in the last 3 epochs; and no relabelling at all (importance "
           "weighting and rank regularisation only).\n",
           "Command: `bash scripts/run_experiments.sh e1b`. " + status_line(name, group_runs(name))]
    label = {"baseline": "baseline", "scn": "SCN, relabel from epoch 4", "relabel_late": "SCN, relabel from epoch 8",
             "no_relabel": "SCN, no relabelling"}
    by = {(r["tags"].get("variant"), r["tags"].get("data.label_noise")): r for r in runs}
    rows = []
    for v, text in label.items():
        row = [text]
        for p in (0, 0.3):
            r = by.get((v, p))
            ms = (r or {}).get("metrics", [])
            row.append(pct((r or {}).get("acc", {}).get("all")))
            if v == "baseline":
                row.append("-")
            else:
                row.append(f"{sum(m.get('scn_relabel_fixed', 0) for m in ms)} / "
                           f"{sum(m.get('scn_relabel_broke', 0) for m in ms)}" if r else "-")
        rows.append(row)
    out.append(table(["variant", "0% noise: test acc", "fixed / broke", "30% noise: test acc", "fixed / broke"],
                     rows))
    return "\n".join(out)


def _two_arm(name: str, title: str, intro: str, arms: tuple[str, str], cmd: str, subsets=("all", "ambiguous")) -> str:
    runs = group_runs(name)
    out = [f"## {title}\n", intro, f"Command: `{cmd}`. " + status_line(name, runs)]
    seeds = sorted({r["tags"].get("seed") for r in runs})
    header = ["seed"] + [f"{a} {s}" for a in arms for s in subsets] + ["train s/run " + " / ".join(arms)]
    rows = []
    by = {(r["tags"].get("variant"), r["tags"].get("seed")): r for r in runs}
    for seed in seeds:
        row = [str(seed)]
        for a in arms:
            row += [pct(by.get((a, seed), {}).get("acc", {}).get(s)) for s in subsets]
        row.append(" / ".join(f"{by[(a, seed)]['train_seconds']:.0f}" if (a, seed) in by else "-" for a in arms))
        rows.append(row)
    if len(seeds) > 1:
        row = ["mean"]
        for a in arms:
            row += [pct(mean([by.get((a, sd), {}).get("acc", {}).get(s) for sd in seeds])) for s in subsets]
        row.append("")
        rows.append(row)
    out.append(table(header, rows))
    return "\n".join(out)


def distribution_scores(run: dict) -> dict[str, float]:
    """Agreement of a run's test predictions with SynthFACS's label distributions: accuracy against the
    distribution's top class and mean KL(label_dist || predicted), on all test faces and on the ambiguous ones."""
    import numpy as np
    import pandas as pd

    from fer_core.config import load_config
    from fer_core.data import build_dataset

    cfg = load_config(Path(run["path"]) / "config.yaml")
    dists = build_dataset("synthfaces", split="test", **cfg.data.options).label_dists
    pred = pd.read_csv(Path(run["path"]) / "eval" / "test_all_predictions.csv").sort_values("index")
    probs = pred[[c for c in pred.columns if c.startswith("prob_")]].to_numpy()
    q = dists[pred["index"].to_numpy()]
    kl = (q * (np.log(np.clip(q, 1e-12, None)) - np.log(np.clip(probs, 1e-12, None)))).sum(1)
    top = probs.argmax(1) == q.argmax(1)
    amb = q.max(1) < 0.6
    return {"top_all": float(top.mean()), "top_amb": float(top[amb].mean()), "kl_all": float(kl.mean()),
            "kl_amb": float(kl[amb].mean())}


def e2() -> str:
    text = _two_arm(
        "e2-ldl", "2. Cross-entropy vs label distribution learning",
        "Label distribution learning (EfficientFace, LFER-LDL) trains on a distribution over expressions instead of "
        "one label; SynthFACS knows each face's distribution (computed from the action units that are visible), so "
        "LDL here uses the data set's own `label_dist` (`train.method.name=ldl`). The `ambiguous` subset holds the "
        "test faces whose top class has less than 60% of the mass. Small CNN, 64x64, 10 epochs, two seeds. The "
        "first table scores against the hard labels (the intended expression), the second against the "
        "distributions.\n",
        ("ce", "ldl"), "bash scripts/run_experiments.sh e2")
    rows = []
    for r in sorted(group_runs("e2-ldl"), key=lambda r: (r["tags"].get("variant"), r["tags"].get("seed"))):
        d = distribution_scores(r)
        rows.append([r["tags"].get("variant"), str(r["tags"].get("seed")), pct(d["top_all"]), pct(d["top_amb"]),
                     f"{d['kl_all']:.3f}", f"{d['kl_amb']:.3f}"])
    if rows:
        text += "\n" + table(["variant", "seed", "top class = distribution's, all", "same, ambiguous",
                              "KL(label_dist, prediction), all", "same, ambiguous"], rows)
    return text


def e4() -> str:
    return _two_arm(
        "e4-sam", "4. SGD vs SAM",
        "Sharpness-aware minimisation around the same SGD (lr 0.05, momentum 0.9, weight decay 5e-4, cosine), "
        "rho 0.05; SAM costs two forward/backward passes per step. Small CNN, 64x64, 10 epochs, two seeds.\n",
        ("sgd", "sam"), "bash scripts/run_experiments.sh e4", subsets=("all", "occlusion"))


def e3() -> str:
    name = "e3-subsets"
    runs = group_runs(name)
    out = ["## 3. Occluded and turned faces: baseline vs multi-region vs PAtt-Lite\n",
           "The multi-region and PAtt-Lite papers claim robustness to occlusion and pose. All four at 80x80 "
           "(PAtt-Lite's patch block needs at least 80), trained from scratch (no ImageNet weights offline), 10 "
           "epochs: the small CNN; the multi-region net on the same CNN (face + four 40x40 quadrants); PAtt-Lite "
           "with the published attention (across the batch) and with attention across its 2x2 patches.\n",
           "Command: `bash scripts/run_experiments.sh e3`. " + status_line(name, runs)]
    order = ["baseline", "region", "patt_lite_published", "patt_lite_patch"]
    rows = []
    for v in order:
        rs = [r for r in runs if r["tags"].get("variant") == v]
        if rs:
            rows.append([v, rs[0]["model"], str(len(rs))] + [spread([r["acc"].get(s) for r in rs]) for s in SUBSETS]
                        + [f"{mean([r['train_seconds'] for r in rs]):.0f}"])
    out.append(table(["variant", "model", "seeds"] + list(SUBSETS) + ["train s"], rows))
    out.append("Mean over seeds, (lowest-highest) in brackets.\n")
    return "\n".join(out)


PAPER_ABLATION = {"full": "86.21 / 86.71", "no_regions": "84.91 / 86.68", "no_attention": "86.28 / 86.78",
                  "no_pseudo_labels": "85.89 / 86.40"}
PAPER_SWEEP = dict(zip([round(0.1 * i, 1) for i in range(1, 11)],
                       [85.14, 85.56, 85.59, 85.98, 85.72, 86.21, 85.17, 86.08, 85.59, 85.17], strict=True))


def e5() -> str:
    name = "e5-region-ablation"
    runs = group_runs(name)
    out = ["## 5a. The multi-region ablation table\n",
           "The seed paper's ablations, laid out as it does (its RAF-DB / FERPlus accuracies beside ours). The "
           "network: the face and its four quadrants through a shared encoder (the small CNN here, ResNet-18 in the "
           "paper), per-part attention, fused softmax outputs; pseudo labels from a teacher run (here the "
           "cross-entropy run of experiment 2, seed 0, standing in for the paper's ResNet-50), mixed 50/50 with the "
           "hard labels. 64x64 faces, 3,000 training faces, 8 epochs.\n",
           "Command: `bash scripts/run_experiments.sh e5` (after e2). " + status_line(name, runs)]
    rows = []
    for v in PAPER_ABLATION:
        rs = [r for r in runs if r["tags"].get("variant") == v]
        if rs:
            rows.append([v, str(len(rs))] + [spread([r["acc"].get(s) for r in rs])
                                              for s in ("all", "occlusion", "pose30", "pose45")]
                        + [PAPER_ABLATION[v]])
    out.append(table(["variant", "seeds", "all", "occlusion", "pose30", "pose45", "paper RAF-DB / FERPlus"], rows))
    out.append("Mean over seeds, (lowest-highest) in brackets.\n")
    return "\n".join(out)


def e6() -> str:
    name = "e6-branch-weight"
    runs = group_runs(name)
    out = ["## 5b. The two-branch fusion `F = F1 + a*F2` swept over a\n",
           "F1: the whole face's softmax; F2: the attention-weighted mean of the quadrants' softmaxes "
           "(`model.options.fusion=two_branch`, `branch_weight=a`). Same network and data as 5a, cross-entropy "
           "on the hard labels, the paper's values of a.\n",
           "Command: `bash scripts/run_experiments.sh e6` (both seeds at every a; the table below ran "
           "`SEEDS=0 bash scripts/run_experiments.sh e6` and `A=0.2:0.6:0.2 SEEDS=1 bash scripts/run_experiments.sh "
           "e6`, for CPU time). " + status_line(name, runs)]
    rows = []
    for a in sorted({r["tags"].get("model.options.branch_weight") for r in runs}):
        rs = sorted((r for r in runs if r["tags"].get("model.options.branch_weight") == a), key=seed_of)
        rows.append([f"{a:g}", ", ".join(str(seed_of(r)) for r in rs), spread([r["acc"]["all"] for r in rs]),
                     spread([r["acc"]["occlusion"] for r in rs]), f"{PAPER_SWEEP.get(round(a, 1), '-')}"])
    out.append(table(["a", "seeds", "test acc", "occlusion", "paper RAF-DB"], rows))
    out.append("Mean over seeds, (lowest-highest) in brackets.\n")
    return "\n".join(out)


HEAD = """# The papers' effects, reproduced on SynthFACS

Each section states a claim from the literature FER Lab is built on, the run group that tests it on SynthFACS,
and what came out, as measured. Generated by `python scripts/experiments_report.py --findings
docs/experiments_findings.md --out docs/EXPERIMENTS.md`
from the run directories (test split: 3,068 faces; subsets: clean, occlusion, pose30, pose45, ambiguous, see
docs/SYNTHFACS.md). Runs are on a 2-core CPU, so the networks are small and the runs short: these numbers say
whether an effect shows up under the same conditions for both arms, not what the methods reach on real data.
Accuracies in %.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")
    parser.add_argument("--findings", type=Path, default=None,
                        help="markdown appended after the tables (the written-up reading of the numbers)")
    args = parser.parse_args()
    text = "\n".join([HEAD, e1(), e1b(), e2(), e3(), e4(), e5(), e6()])
    if args.findings and args.findings.exists():
        text += "\n" + args.findings.read_text(encoding="utf-8")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        print(text)


if __name__ == "__main__":
    main()
