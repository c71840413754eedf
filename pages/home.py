"""Home: what FER Lab is, the runs table, the data sets and models; with no runs, a one-click demo run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from app import ui
from fer_core import io, lifecycle

DEMO_KEY = "home.demo_run"  # id of the demo run this session started (the run folder is the real record)
st.session_state.setdefault(DEMO_KEY, None)

st.title("FER Lab")
st.markdown(
    "A toolkit for **facial expression recognition** research: `fer_core` trains, evaluates and explains FER "
    "models (the architectures of the founding papers, listed below, with their training methods), and this app "
    "launches runs, follows and compares them, shows how they do on the hard cases (occluded faces, turned heads, "
    "ambiguous expressions) and looks inside them: explanation maps, filters, SCN's attention. Everything runs on "
    "a CPU with **SynthFACS**, a procedural face data set built from facial action units, so you can try it "
    "without a licence-gated download. Every run is a folder on disk, so the command line "
    "(`python -m fer_core ...`) and this app always agree."
)

root = io.runs_dir()
runs, skipped = ui.load_runs(root)
active = [r for r in runs if r["state"] in ui.ACTIVE_STATES]


def _start_demo() -> None:
    """Launch the demo training run as a child process (the app never trains in its own process)."""
    try:
        run_id, _pid = lifecycle.launch_train(ui.demo_config(), root=root)
    except Exception as err:  # noqa: BLE001 - show any launch problem on the page, do not crash it
        st.error(f"Could not start the demo run: {err}")
        return
    st.session_state[DEMO_KEY] = run_id
    st.rerun()


# --------------------------------------------------------------------------------------------- empty state
if not runs:
    with st.container(border=True):
        st.subheader("No runs yet")
        config = ui.demo_config()
        shown = config.relative_to(ui.ROOT) if config.is_relative_to(ui.ROOT) else config
        st.markdown(
            f"Runs are read from `{root}` (set `FER_RUNS_DIR` to use another folder). Start with a small demo: "
            "a compact CNN trained for a few epochs on SynthFACS in a background process, a couple of minutes on "
            f"a laptop CPU. The same run from a shell: `python -m fer_core train --config {shown}`."
        )
        if st.button("Train a demo model on SynthFACS", type="primary", icon=":material/play_arrow:", key="home.demo"):
            _start_demo()


# --------------------------------------------------------------------------------------------- active runs
def _run_position(run_dir: Path) -> tuple[str, int]:
    """(state, finished epochs) of a run, read fresh from its folder."""
    status = io.read_status(run_dir)
    return io.run_state(run_dir, status), int(status.get("epoch") or 0)


@st.fragment(run_every=1.0)
def _progress(seen: dict[str, tuple[str, int]]) -> None:
    """Poll the active runs' folders once a second; rerun the whole page when one moves on (new epoch, new state),
    so the runs table below stays in step without re-reading every run each second."""
    for run_id, before in seen.items():
        run_dir = io.run_path(run_id, root)
        if _run_position(run_dir) != before:
            st.rerun()
        status = io.read_status(run_dir)
        metrics = ui.load_metrics(run_dir)
        epochs = status.get("epochs") or ui.load_config(run_dir).get("train", {}).get("epochs")
        text = ui.progress_text(run_id, before[0], status, metrics, epochs)
        st.progress(ui.progress_of(status, metrics, epochs), text=text)
        st.page_link(ui.RUN_PAGE, label="Follow it on its page", query_params={"run": run_id},
                     icon=":material/monitoring:")


if active:
    st.subheader("Training now")
    _progress({r["run_id"]: _run_position(Path(r["path"])) for r in active})

demo = st.session_state[DEMO_KEY]
if demo and any(r["run_id"] == demo and r["state"] == "done" for r in runs):
    st.success(f"The demo run **{demo}** has finished.")
    st.page_link(ui.RUN_PAGE, label="See its learning curves and confusion matrices", query_params={"run": demo},
                 icon=":material/monitoring:")

# --------------------------------------------------------------------------------------------- runs table
if runs:
    st.subheader("Runs")
    frame = ui.runs_frame(runs)
    event = st.dataframe(
        ui.style_states(frame), column_config=ui.runs_column_config(frame), hide_index=True, width="stretch",
        on_select="rerun", selection_mode="single-row", placeholder=ui.MISSING, key="home.runs_table",
    )
    st.caption(f"{len(runs)} run(s) in `{root}`. Click a run id, or select a row, to open its page. "
               f"Accuracies are in percent; subset columns are test accuracy on that subset ({ui.MISSING}: not "
               "evaluated).")
    rows = event.selection.rows if event is not None else []
    if rows:
        st.switch_page(ui.RUN_PAGE, query_params={"run": runs[rows[0]]["run_id"]})
if skipped:
    with st.expander(f"{len(skipped)} folder(s) in the runs folder are not runs"):
        st.dataframe(pd.DataFrame(skipped), hide_index=True, width="stretch")

# --------------------------------------------------------------------------------------------- catalogue
st.subheader("Data sets")


def _dataset_source(d: dict) -> str:
    """Where a data set's faces come from, for the list: built in, its folder, or not configured."""
    if not d["needs_root"]:
        return "built in"
    return f"from `{d['root']}`" if d["root"] else "not configured"


st.markdown("\n".join(f"- **{d['name']}** ({_dataset_source(d)}): {d['description']}" for d in ui.dataset_list()))
st.caption(ui.data_home_note())
st.subheader("Models")
models = ui.model_frame()
st.caption("Sizes, MACs and CPU latency: `python -m fer_core models`.")
st.dataframe(models, hide_index=True, width="stretch", height=35 * (len(models) + 1) + 3, column_config={
    "paper": st.column_config.TextColumn("paper", width="large"),
})
