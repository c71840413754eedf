"""Run: one run in detail. State and config, learning curves, confusion matrices, metrics and reliability diagrams
(calibration, before and after temperature scaling) per test subset.

``/run?run=<run_id>`` opens a given run; the select box keeps the query parameter in step, so the URL can be shared.
A queued or running run redraws itself once every couple of seconds from its folder.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import charts, ui
from fer_core import io, lifecycle

SELECT_KEY = "run.selected"
NORMALISE_KEY = "run.normalise"
POLL_SECONDS = 2.0

root = io.runs_dir()
runs, _skipped = ui.load_runs(root)
st.title("Run")
if not runs:
    st.info(f"No runs in `{root}` yet. Start a demo run from the Home page, or from a shell: "
            "`python -m fer_core train --config configs/synth_quick.yaml`.")
    st.page_link(ui.HOME_PAGE, label="Home", icon=":material/home:")
    st.stop()

by_id = {r["run_id"]: r for r in runs}  # newest first
run_id = ui.run_select(by_id, SELECT_KEY)
run = by_id[run_id]
run_dir = Path(run["path"])
config = ui.load_config(run_dir)


# --------------------------------------------------------------------------------------------- header
def _summary(cfg: dict) -> list[tuple[str, str]]:
    """(label, value) pairs that say what a run trains, for the header."""
    data, model, train = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    opt, sched = train.get("optimizer") or {}, train.get("scheduler") or {}
    data_opts = ", ".join(f"{k}={v}" for k, v in (data.get("options") or {}).items())
    return [
        ("model", str(model.get("name", "?")) + (" (pretrained)" if model.get("pretrained") else "")),
        ("data", str(data.get("name", "?")) + (f" ({data_opts})" if data_opts else "")),
        ("epochs", str(train.get("epochs", "?"))),
        ("batch", str(train.get("batch_size", "?"))),
        ("optimiser", f"{opt.get('name', '?')}, lr {opt.get('lr', '?')}, {sched.get('name', 'no')} schedule"),
        ("device / seed", f"{train.get('device', '?')} / {cfg.get('seed', '?')}"),
    ]


st.markdown(f"### {run_id} {ui.state_badge(run['state'])}")
st.caption(f"created {ui.format_time(run.get('created'))} · folder `{run_dir}`"
           + (f" · name `{config['name']}`" if config.get("name") else ""))
if config:
    pairs = _summary(config)
    for col, chunk in zip(st.columns(3), (pairs[0:2], pairs[2:4], pairs[4:6]), strict=True):
        col.markdown("  \n".join(f"**{label}:** {value}" for label, value in chunk))
    with st.expander("Full config (config.yaml)"):
        st.code(io.dump_yaml(config), language="yaml")
if run.get("problem"):
    st.warning(f"Parts of this run folder could not be read: {run['problem']}")


# --------------------------------------------------------------------------------------------- live part
def _state_notice(state: str, status: dict) -> None:
    """Say clearly what happened to a run that is not done."""
    error = status.get("error")
    if state == "failed":
        where = f"  \nwhere: `{status['error_at']}`" if status.get("error_at") else ""
        st.error(f"Training failed: {error or 'no error message recorded'}{where}", icon=":material/error:")
    elif state == "interrupted":
        st.warning(
            f"This run was interrupted: status.json says `{status.get('state')}` but its process "
            f"(pid {status.get('pid')}) is gone, so it was killed or the machine restarted. "
            f"Resume it from its last checkpoint with `python -m fer_core train --resume {run_id}`.",
            icon=":material/warning:",
        )
    elif state == "cancelled":
        st.info("This run was cancelled." + (f" {error}" if error else ""), icon=":material/cancel:")
    elif state == "unknown":
        st.info("This run has no status.json yet.")
    ui.stopped_run_tools(run_dir, state, "run")


def _live(initial_state: str) -> None:
    """Progress, state notice and learning curves; rerun the whole page when the run changes state."""
    status = io.read_status(run_dir)
    state = io.run_state(run_dir, status)
    if state != initial_state:
        st.rerun()  # started, finished or died: redraw everything (header badge, evaluation)
    metrics = ui.load_metrics(run_dir)
    epochs = status.get("epochs") or (config.get("train") or {}).get("epochs")
    if state in ui.ACTIVE_STATES:
        text = ui.progress_text(None, state, status, metrics, epochs)
        st.progress(ui.progress_of(status, metrics, epochs), text=text)
        if st.button("Cancel this run", icon=":material/stop:", key="run.cancel"):
            lifecycle.cancel_run(run_dir)
            st.rerun()
    else:
        _state_notice(state, status)
    st.subheader("Learning curves")
    if metrics:
        st.plotly_chart(charts.learning_curves(metrics), width="stretch", key="run.curves")
    else:
        st.info("No epoch has finished yet; the curves appear after the first one.")


interval = POLL_SECONDS if run["state"] in ui.ACTIVE_STATES else None
st.fragment(run_every=interval)(_live)(run["state"])


# --------------------------------------------------------------------------------------------- evaluation
evals = ui.load_eval(run_dir)
st.subheader("Evaluation")
if not evals:
    if run["state"] == "done":
        st.info(f"No evaluation results in `{run_dir / 'eval'}`. Run `python -m fer_core evaluate {run_id}`.")
    elif run["state"] in ui.ACTIVE_STATES:
        st.info("Evaluation results appear here when training has finished.")
    else:
        st.info("No evaluation: the run stopped before training finished.")
    st.stop()

st.dataframe(ui.eval_frame(evals), column_config=ui.EVAL_COLUMN_CONFIG, hide_index=True, width="stretch",
             placeholder=ui.MISSING)
st.caption("Mean class accuracy averages the per-class recalls, so rare expressions count as much as common ones.")



# --------------------------------------------------------------------------------------------- calibration
def _read_calibration() -> dict | None:
    """The run's ``calibration.json`` (None without one; a broken one is a warning, not a crash)."""
    try:
        return io.read_calibration(run_dir)
    except (OSError, ValueError) as err:
        st.warning(f"Cannot read the run's temperature: {err}")
        return None


def _share(value: float | None) -> str:
    return ui.MISSING if value is None else f"{ui.pct(value):.1f}%"


def _value(value: float | None) -> str:
    return ui.MISSING if value is None else f"{value:.3f}"


def _reliability(key: str, result: dict, calibration: dict | None) -> None:
    """One split/subset's reliability diagram (before and after temperature scaling when the run has a temperature)
    and a caption with its ECE, NLL and Brier score."""
    if not result.get("reliability"):
        st.caption(f"No calibration numbers in this evaluation (written before they existed); "
                   f"`python -m fer_core evaluate {run_id}` adds them.")
        return
    scaled = result.get("calibrated") or {}
    curves = {"before": result["reliability"]}
    if scaled.get("reliability"):
        curves[f"after T={scaled['temperature']:.2f}"] = scaled["reliability"]
    left, right = st.columns([3, 2])
    left.plotly_chart(charts.reliability_diagram(curves, {"before": charts.TRAIN_COLOR}, title="Reliability"),
                      width="stretch", key=f"run.reliability.{key}")

    def numbers(r: dict) -> str:
        return (f"ECE {_share(r.get('ece'))} (adaptive bins {_share(r.get('ece_adaptive'))}), "
                f"NLL {_value(r.get('nll'))}, Brier {_value(r.get('brier'))}")

    lines = [f"**{key}**, as trained: {numbers(result)}."]
    if scaled:
        lines.append(f"After temperature scaling (logits ÷ {scaled['temperature']:.3f}): {numbers(scaled)}; the "
                     "accuracy does not change.")
    if calibration:
        before, after = calibration.get("before") or {}, calibration.get("after") or {}
        lines.append(f"The temperature was fitted on the {calibration.get('split', 'val')} split "
                     f"({calibration.get('n', '?')} faces, {calibration.get('weights', 'best')} weights): ECE there "
                     f"{_share(before.get('ece'))} → {_share(after.get('ece'))}."
                     + (" It stopped at the edge of its range: too few or too easy validation faces."
                        if calibration.get("at_bound") else ""))
    else:
        lines.append(f"No temperature yet: `python -m fer_core calibrate {run_id}` fits one on the validation split.")
    right.markdown("  \n".join(lines))
    right.caption("Bars: accuracy of the faces in each confidence bin; red: the gap to their mean confidence. A bar "
                  "below the diagonal means over-confidence. ECE is the face-weighted mean gap (15 bins).")


calibration = _read_calibration()
st.session_state.setdefault(NORMALISE_KEY, True)
st.toggle("Normalise rows (share of each true class)", key=NORMALISE_KEY)
keys = ui.ordered_eval_keys(evals)
tabs = st.tabs([key if not key.startswith("test/") else key.removeprefix("test/") for key in keys])
reference_key = "test/all" if "test/all" in evals else keys[0]
for tab, key in zip(tabs, keys, strict=True):
    result = evals[key]
    with tab:
        st.caption(f"{key}: {result.get('n', '?')} faces, accuracy {ui.pct(result.get('accuracy')) or 0:.1f}%")
        left, right = st.columns([3, 2])
        fig = charts.confusion_matrix(result["confusion"], result["class_names"],
                                      normalise=st.session_state[NORMALISE_KEY], title="Confusion matrix")
        left.plotly_chart(fig, width="stretch", key=f"run.confusion.{key}")
        compared = {key: result} if key == reference_key else {reference_key: evals[reference_key], key: result}
        recall = {k: (r["confusion"], r["class_names"]) for k, r in compared.items()}
        right.plotly_chart(charts.per_class_recall(recall), width="stretch", key=f"run.recall.{key}")
        _reliability(key, result, calibration)


# --------------------------------------------------------------------------------------------- robustness
FACTOR_KEY = "run.factor"
PROBE_FACTOR_KEY = "run.probe_factor"
PROBE_N_KEY = "run.probe_n"
MAIN_FACTORS = ("yaw", "intensity", "occluder")


def _factor_chart(result: dict, name: str, key: str) -> None:
    """One factor's accuracy per bin, from ``eval/factors/test.json``."""
    from fer_core.factors import FACTORS, factor_frame

    part = result["factors"][name]
    fig = charts.factor_accuracy(factor_frame({run_id: result}, name), x_title=FACTORS[name].title,
                                 numeric=part["numeric"], overall={run_id: result.get("accuracy")})
    st.plotly_chart(fig, width="stretch", key=key)
    skipped = part["not_applicable"]["n"]
    st.caption(f"{part['note'].capitalize()}." + (f" {skipped} faces not applicable." if skipped else ""))


def _robustness() -> None:
    """Accuracy against SynthFACS's factors: yaw, intensity and occluder, and any other factor on request."""
    from fer_core.factors import FACTORS, read_factors

    st.subheader("Robustness")
    result = read_factors(run_dir, "test")
    if result is None:
        if (config.get("data") or {}).get("name") in ("synthfaces", "synthfaces_pretrain"):
            st.info(f"No factor accuracies in `{run_dir / 'eval' / 'factors'}`: evaluate the run again with "
                    f"`python -m fer_core evaluate {run_id}` to write them.")
        else:
            st.info("Accuracy per factor needs SynthFACS, whose faces come with their pose, occluder, expression "
                    "intensity and light; this run's data set has no such labels.")
        return
    st.caption(f"Test accuracy per bin of the factors SynthFACS knows for each of the {result['n']} test faces, with "
               "95% Wilson intervals; the dotted line is the accuracy on all of them. From the shell: "
               f"`python -m fer_core factors {run_id}`.")
    for name in MAIN_FACTORS:
        _factor_chart(result, name, f"run.factor.{name}")
    others = [name for name in FACTORS if name not in MAIN_FACTORS and name in result["factors"]]
    if st.session_state.get(FACTOR_KEY) not in others:
        st.session_state[FACTOR_KEY] = others[0]
    other = st.selectbox("Another factor", others, key=FACTOR_KEY, format_func=lambda f: FACTORS[f].title)
    _factor_chart(result, other, "run.factor.other")


@st.cache_resource(show_spinner=False, max_entries=1)
def _probe_lock():
    """One probe at a time in this app process (a probe renders thousands of faces)."""
    import threading

    return threading.Lock()


def _probe() -> None:
    """The counterfactual probe: one factor swept on the same test faces; cached in ``probe/<factor>.json``."""
    from fer_core.probe import DEFAULT_N, SWEEPS, SYNTHFACS_DATASETS, probe, read_probe
    from fer_core.runs import weights_path

    st.subheader("Probe")
    data_name = (config.get("data") or {}).get("name")
    if data_name not in SYNTHFACS_DATASETS:
        st.info(f"The probe needs a SynthFACS run: it renders the same test faces again with one factor changed, "
                f"which only a generated data set can do. This run trained on `{data_name}`.")
        return
    if not weights_path(run_dir, "best").exists():
        st.info("The probe needs the run's best weights, which it does not have (yet).")
        return
    st.session_state.setdefault(PROBE_FACTOR_KEY, "yaw")
    st.session_state.setdefault(PROBE_N_KEY, DEFAULT_N)
    left, right = st.columns([2, 1])
    factor = left.selectbox("Factor to sweep", list(SWEEPS), key=PROBE_FACTOR_KEY,
                            format_func=lambda f: f"{f}: {SWEEPS[f].title}")
    n = right.number_input("Faces", min_value=10, max_value=2000, step=50, key=PROBE_N_KEY)
    cached = read_probe(run_dir, factor)
    label = "Run the probe again" if cached else "Run the probe"
    if st.button(label, icon=":material/science:", key="run.probe_go"):
        with st.spinner(f"Rendering {int(n)} faces at each {factor} step and scoring them…"), _probe_lock():
            try:
                cached = probe(run_dir, factor, n=int(n))
            except (ValueError, FileNotFoundError) as err:
                st.error(str(err))
                return
    if cached is None:
        st.caption(f"The same test faces rendered again with {factor} swept over "
                   f"{', '.join(str(s) for s in SWEEPS[factor].steps)} and everything else fixed; nothing is cached "
                   f"yet. From the shell: `python -m fer_core probe {run_id} --factor {factor}`.")
        return
    st.plotly_chart(charts.probe_curve(cached), width="stretch", key="run.probe")
    st.caption(f"{cached['n']} {cached['split']} faces, each rendered at every {factor} step with everything else "
               f"as in the data set; flips count faces whose prediction differs from their prediction at "
               f"{factor} = {cached['reference']}. Took {cached['seconds']:.0f} s; saved in "
               f"`{run_dir / 'probe' / (factor + '.json')}`.")


_robustness()
_probe()
