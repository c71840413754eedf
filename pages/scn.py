"""SCN attention: what a Self-Cure Network run learnt about its training faces.

SCN (Wang et al., CVPR 2020) gives every training face an importance weight, splits each batch into a high- and a
low-importance group, and relabels low-importance faces the model confidently disagrees with. The trainer writes the
weights and relabel events of every epoch under the run's ``scn/`` folder; this page reads them
(``fer_core.explain.attention``): weight histograms per class, noisy against clean faces, the faces SCN trusts
least and most, and every relabel event with whether it restored the clean label. ``/scn?run=<run_id>`` opens a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from app import charts, ui
from fer_core import io
from fer_core.data import browse, build_dataset
from fer_core.explain import attention
from fer_core.labels import CLASSES

SELECT_KEY = "scn.selected"
EPOCH_KEY = "scn.epoch"
COLOUR_KEY = "scn.colour_by"
EXTREMES_KEY = "scn.extremes"
TRAIN_COMMAND = "python -m fer_core train --config configs/synth/scn.yaml"


# --------------------------------------------------------------------------------------------- cached reads
@st.cache_data(show_spinner=False, max_entries=16)
def _summary(run_dir: str, stamp: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    return attention.scn_epoch_summary(run_dir), attention.read_scn_relabels(run_dir)


@st.cache_data(show_spinner=False, max_entries=32)
def _samples(run_dir: str, epoch: int, stamp: tuple) -> pd.DataFrame:
    return attention.scn_samples(run_dir, epoch)


@st.cache_resource(show_spinner=False, max_entries=4)
def _train_set(data_json: str) -> Any:
    """The run's training split, rebuilt from its config (SynthFACS needs no files; real data sets need data.root)."""
    data = json.loads(data_json)
    return build_dataset(data["name"], root=data.get("root"), split="train", **(data.get("options") or {}))


@st.cache_data(show_spinner=False, max_entries=32)
def _faces(data_json: str, indices: tuple[int, ...]) -> list[dict]:
    return browse.faces(_train_set(data_json), indices)


def _is_scn(run: dict) -> bool:
    cfg = ui.load_config(run["path"])
    method = ((cfg.get("train") or {}).get("method") or {}).get("name")
    return run.get("model") == "scn" or method == "scn"


# --------------------------------------------------------------------------------------------- run choice
st.title("SCN attention")
root = io.runs_dir()
runs, _skipped = ui.load_runs(root)
scn_runs = {r["run_id"]: r for r in runs if _is_scn(r)}
if not scn_runs:
    st.info(
        f"No Self-Cure Network runs in `{root}` yet. SCN runs are those with `model.name: scn` and "
        "`train.method.name: scn`; each writes its per-face importance weights and relabel events under `scn/`. "
        f"Train one on SynthFACS with 20% injected label noise (a few CPU minutes): `{TRAIN_COMMAND}`, "
        "or start it from the Train page with that config.", icon=":material/balance:",
    )
    st.page_link(ui.ROOT / "pages" / "train.py", label="Train", icon=":material/play_circle:")
    st.stop()

run_id = ui.run_select(scn_runs, SELECT_KEY, "Choose an SCN run", what="SCN run")
run = scn_runs[run_id]
run_dir = Path(run["path"])
config = ui.load_config(run_dir)
data_cfg = config.get("data") or {}
method = (config.get("train") or {}).get("method") or {}
noise = float(data_cfg.get("label_noise") or 0) or float((data_cfg.get("options") or {}).get("noise_rate") or 0)
relabel_from = method.get("relabel_epoch")
st.markdown(
    f"{ui.state_badge(run['state'])} · {data_cfg.get('name', '?')} · backbone "
    f"`{((config.get('model') or {}).get('options') or {}).get('backbone', '?')}` · label noise **{noise:.0%}** · "
    f"relabelling from epoch **{relabel_from + 1 if isinstance(relabel_from, int) else '?'}** "
    f"(margin {method.get('margin_2', '?')}) · low-importance share β = {method.get('beta', '?')}"
)
st.page_link(ui.RUN_PAGE, label="Learning curves and evaluation of this run", query_params={"run": run_id},
             icon=":material/monitoring:")

stamp = ui.folder_stamp(run_dir / "scn", "*.csv")  # changes when the trainer writes scn/
epochs = attention.scn_epochs(run_dir)
if not epochs:
    if run["state"] in ui.ACTIVE_STATES:
        st.info("This run has not finished its first epoch yet; the weights appear here after it.")
    else:
        st.info(f"This run wrote no SCN files (`{run_dir / 'scn'}` is empty or missing): it stopped before its first "
                f"epoch ended. Train it again with `python -m fer_core train --resume {run_id}` or a new run.")
    st.stop()

try:
    with st.spinner("Reading the importance weights of every epoch"):
        summary, relabels = _summary(str(run_dir), stamp)
except (OSError, ValueError, KeyError) as err:
    st.error(f"Could not read `{run_dir / 'scn'}`: {err}")
    st.stop()

data_json = json.dumps({k: data_cfg.get(k) for k in ("name", "root", "options")}, sort_keys=True)
train_set, data_error = None, None
try:
    with st.spinner("Rebuilding the training faces from the run's data set config"):
        train_set = _train_set(data_json)
except Exception as err:  # noqa: BLE001 - e.g. a real data set whose folder is not on this machine
    data_error = str(err)
classes = list(train_set.classes) if train_set is not None else list(CLASSES)
has_noise = bool(summary["weight_noisy"].notna().any())

# --------------------------------------------------------------------------------------------- weights per epoch
st.subheader("Importance weights")
shown = [e + 1 for e in epochs]  # 1-based, as in metrics.jsonl and the Run page
if st.session_state.get(EPOCH_KEY) not in shown:
    st.session_state[EPOCH_KEY] = shown[-1]
if len(shown) > 1:
    epoch = st.select_slider("Epoch", shown, key=EPOCH_KEY)
else:
    epoch = shown[0]
    st.caption("One epoch written so far.")
samples = _samples(str(run_dir), epoch - 1, stamp)
row = summary.set_index("epoch").loc[epoch]
c1, c2, c3, c4 = st.columns(4)
c1.metric("Mean weight", f"{row['mean_weight']:.3f}", help="Mean importance weight of the faces seen this epoch")
c2.metric("High / low group", f"{row['weight_high']:.2f} / {row['weight_low']:.2f}",
          help=f"Mean weight of the high- and low-importance groups; {row['low_share']:.0%} of faces were low")
if has_noise:
    c3.metric("Noisy / clean faces", f"{row['weight_noisy']:.3f} / {row['weight_clean']:.3f}",
              help="Mean weight of faces whose label was flipped by injected noise, and of the others. SCN's claim: "
                   "noisy faces get lower weights.")
else:
    c3.metric("Noisy / clean faces", "no noise", help="Every training label equals its clean label")
c4.metric("Labels still wrong", f"{row['label_noise']:.1%}",
          help="Share of training labels that differ from the clean ones at the end of this epoch")

st.session_state.setdefault(COLOUR_KEY, "group")
colour_by = "group"
if has_noise:
    colour_by = st.radio("Colour the bars by", ["group", "noise"], key=COLOUR_KEY, horizontal=True,
                         format_func=lambda v: {"group": "importance group (high / low)",
                                                "noise": "label noise (injected / clean)"}[v])
st.plotly_chart(charts.scn_weight_histograms(samples, classes, colour_by), width="stretch", key="scn.histograms")
st.caption(f"Epoch {epoch}: {int(row['seen']):,} training faces, grouped by the label trained on at the end of the "
           "epoch (after its relabels). Weights are in (0, 1): SCN's attention output for each face.")
st.plotly_chart(charts.scn_weight_curves(summary, has_noise), width="stretch", key="scn.curves")
if not has_noise:
    st.caption("This run had no label noise (every label is its clean label), so there are no noisy faces to "
               "compare; train with `data.label_noise: 0.2` to see SCN separate them.")

# --------------------------------------------------------------------------------------------- extreme faces
st.subheader("Faces SCN trusts least and most")
st.session_state.setdefault(EXTREMES_KEY, 8)
n = st.slider("Faces of each kind", 4, 24, step=1, key=EXTREMES_KEY)
seen = samples.dropna(subset=["weight"])
lowest = seen.nsmallest(n, "weight")
highest = seen.nlargest(n, "weight")


def _caption(r: pd.Series) -> str:
    text = f"{r['weight']:.3f} · {classes[int(r['label'])]}"
    if int(r["clean_label"]) != int(r["label"]):
        text += f" (clean: {classes[int(r['clean_label'])]})"
    return text


for title, part in (("Lowest weights", lowest), ("Highest weights", highest)):
    st.markdown(f"**{title}** (epoch {epoch}) · weight · label trained on (clean label where it differs)")
    if train_set is not None:
        with st.spinner("Rendering faces"):
            faces = _faces(data_json, tuple(int(i) for i in part["index"]))
        st.image([f["image"] for f in faces], caption=[_caption(r) for _, r in part.iterrows()], width=96,
                 output_format="PNG")
if data_error:
    st.warning(f"The faces cannot be shown: the run's data set could not be rebuilt here ({data_error}). The table "
               "below still lists them.")
table = pd.concat([lowest.assign(kind="lowest"), highest.assign(kind="highest")])
st.dataframe(pd.DataFrame({
    "kind": table["kind"], "index": table["index"], "weight": table["weight"], "group": table["group"],
    "label": [classes[int(v)] for v in table["label"]], "clean label": [classes[int(v)] for v in table["clean_label"]],
    "noisy": table["noisy"], "relabelled": table["relabelled"],
}), hide_index=True, width="stretch", column_config={
    "index": st.column_config.NumberColumn("index", help="position in the training split", format="%d"),
    "weight": st.column_config.NumberColumn("weight", format="%.3f"),
    "noisy": st.column_config.CheckboxColumn("noisy", help="the original training label was flipped by noise"),
    "relabelled": st.column_config.CheckboxColumn("relabelled", help="SCN changed the label by this epoch"),
})

# --------------------------------------------------------------------------------------------- relabels
st.subheader("Relabel events")
fixed, broke, total = int(relabels["fixed"].sum()), int(relabels["broke"].sum()), len(relabels)
metrics = ui.load_metrics(run_dir)
logged = {key: sum(int(m.get(key) or 0) for m in metrics)
          for key in ("scn_relabelled", "scn_relabel_fixed", "scn_relabel_broke")}
c1, c2, c3, c4 = st.columns(4)
c1.metric("Relabelled", f"{total:,}", help="Relabel events over all epochs (a face can be relabelled twice)")
c2.metric("Fixed", f"{fixed:,}", help="The new label is the clean one: injected noise undone")
c3.metric("Broke", f"{broke:,}", help="The old label was the clean one: a correct label replaced")
c4.metric("Still wrong", f"{total - fixed - broke:,}", help="A wrong label replaced by another wrong one")
if metrics and (logged["scn_relabelled"], logged["scn_relabel_fixed"], logged["scn_relabel_broke"]) != (
        total, fixed, broke):
    st.warning(f"metrics.jsonl counts differ from the scn/ files: {logged['scn_relabelled']} relabelled, "
               f"{logged['scn_relabel_fixed']} fixed, {logged['scn_relabel_broke']} broke (a resumed run can log an "
               "epoch twice).")
elif metrics:
    st.caption(f"Same counts as metrics.jsonl (scn_relabelled {logged['scn_relabelled']}, scn_relabel_fixed "
               f"{logged['scn_relabel_fixed']}, scn_relabel_broke {logged['scn_relabel_broke']}).")
if not total:
    when = (f"from epoch {relabel_from + 1}" if isinstance(relabel_from, int) else "from `relabel_epoch`")
    st.info(f"No relabel events: SCN relabels {when} on, and only low-importance faces whose top class beats "
            "their label by the margin.")
else:
    st.plotly_chart(charts.scn_relabel_bars(summary), width="stretch", key="scn.relabel_bars")
    result = np.where(relabels["fixed"], "fixed", np.where(relabels["broke"], "broke", "still wrong"))
    st.dataframe(pd.DataFrame({
        "epoch": relabels["epoch"], "index": relabels["index"],
        "from": [classes[int(v)] for v in relabels["old_label"]],
        "to": [classes[int(v)] for v in relabels["new_label"]],
        "clean label": [classes[int(v)] for v in relabels["clean_label"]], "result": result,
    }), hide_index=True, width="stretch", column_config={
        "index": st.column_config.NumberColumn("index", help="position in the training split", format="%d"),
        "result": st.column_config.TextColumn("result", help="fixed: restored the clean label; broke: replaced a "
                                              "correct label; still wrong: a wrong label replaced by another"),
    })
