#!/usr/bin/env bash
# The SynthFACS experiments of docs/EXPERIMENTS.md, one sweep group each, run one after another on the CPU.
#   bash scripts/run_experiments.sh [e1 e2 ...]      (default: all, in this order)
# Then: python scripts/experiments_report.py > docs/EXPERIMENTS.md
# Runs land in $FER_RUNS_DIR (default ./runs); each group can be re-run alone. About 3 hours on 2 cores (PARALLEL=2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BASE=configs/experiments/base.yaml
PARALLEL=${PARALLEL:-1}   # runs at once (each then gets cores / PARALLEL threads)
SEEDS=${SEEDS:-0,1}       # seeds of e3, e5 and e6 (e.g. SEEDS=2 to add a third)
sweep() { "$PY" -m fer_core sweep --config "$BASE" --quiet --parallel "$PARALLEL" "$@"; }

e1() {  # SCN vs baseline under label noise (SCN protocol: flip to a random other class)
  sweep --group e1-scn-noise --grid data.label_noise=0,0.1,0.2,0.3 \
    --variant baseline: \
    --variant scn:model.name=scn,model.options.backbone=small_cnn,train.method.name=scn,train.method.relabel_epoch=3
}
e1b() {  # SCN's parts at 0% and 30% noise: relabelling late (last 3 epochs) or never (weighting + rank loss only)
  sweep --group e1b-scn-parts --grid data.label_noise=0,0.3 \
    --set model.name=scn --set model.options.backbone=small_cnn --set train.method.name=scn \
    --variant relabel_late:train.method.relabel_epoch=7 --variant no_relabel:train.method.relabel_epoch=1000
}
e2() {  # cross-entropy vs label distribution learning (SynthFACS soft labels)
  sweep --group e2-ldl --grid seed=0,1 --variant ce: --variant ldl:train.method.name=ldl
}
e4() {  # SGD vs SAM around SGD
  sweep --group e4-sam --grid seed=0,1 --set train.optimizer.name=sgd --set train.optimizer.lr=0.05 \
    --set train.optimizer.weight_decay=0.0005 --variant sgd: --variant sam:train.optimizer.sam.enabled=true
}
e5() {  # the multi-region ablations (pseudo labels from the e2 cross-entropy run, seed 0, as teacher)
  teacher=$("$PY" -m fer_core runs --group e2-ldl --json | "$PY" -c \
    "import json,sys; print(next(r['run_id'] for r in json.load(sys.stdin)['runs'] if r['tags'].get('variant')=='ce' and r['tags'].get('seed')==0))")
  pl="train.method.name=pseudo_label,train.method.teacher_run=$teacher,train.method.hard_weight=0.5"
  sweep --group e5-region-ablation --set model.name=region_attention --set model.options.backbone=small_cnn \
    --set data.options.train_size=3000 --set train.epochs=8 --grid "seed=$SEEDS" \
    --variant "full:$pl" --variant "no_regions:$pl,model.options.regions=false" \
    --variant "no_attention:$pl,model.options.attention=false" --variant no_pseudo_labels:
}
e3() {  # hard subsets: baseline vs multi-region vs both PAtt-Lite variants, 80x80 faces (PAtt-Lite's patch
        # block needs at least 80)
  sweep --group e3-subsets --set data.options.image_size=80 --set model.input_size=80 --grid "seed=$SEEDS" \
    --variant baseline: \
    --variant region:model.name=region_attention,model.options.backbone=small_cnn \
    --variant patt_lite_published:model.name=patt_lite \
    --variant patt_lite_patch:model.name=patt_lite_patch
}
e6() {  # the two-branch fusion F1 + a*F2 swept over the paper's a = 0.1..1.0 (A=... for a subset)
  sweep --group e6-branch-weight --set model.name=region_attention --set model.options.backbone=small_cnn \
    --set data.options.train_size=3000 --set train.epochs=8 \
    --set model.options.fusion=two_branch --grid "model.options.branch_weight=${A:-0.1:1.0:0.1}" --grid "seed=$SEEDS"
}

if [ $# -eq 0 ]; then set -- e1 e2 e4 e1b e5 e3 e6; fi
for e in "$@"; do "$e"; done
