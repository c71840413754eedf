"""Train: start a run from a recipe, edited in a form built from the config schema, and follow it live.

The form is generated from ``fer_core.config`` (each section's fields, their types and allowed values), seeded
from a recipe in ``configs/``; the data set, model, device and teacher-run choices come from the registries and
the runs folder. The edited config goes through the same schema as ``python -m fer_core train`` before anything
starts, and ``fer_core.lifecycle`` starts the trainer as a child process, or, where SLURM's ``sbatch`` is on the
PATH and "SLURM" is chosen, submits it as a SLURM job on the partition picked from ``sinfo``. The page then
follows the run through its folder: ``?run=<run_id>`` (a reload finds it again), or ``?group=<group>`` for a sweep.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import charts, config_form, ui
from fer_core import io, lifecycle, slurm
from fer_core.config import Config, ConfigError, format_value, load_config
from fer_core.models import list_models, model_info
from fer_core.sweep import describe_point, parse_grid, plan_sweep

RECIPE_KEY = "train.recipe"
FORM = "train.form"  # the config form's key: its inputs' keys are "train.form.<config key path>"
SWEEP_ROWS_KEY = "train.sweep.rows"
BACKEND_KEY = "train.backend"
BACKENDS = ("This machine", "SLURM")
POLL_SECONDS = 1.0
CONFIGS = ui.ROOT / "configs"
RECIPE_FOLDERS = ("", "synth", "pretrain", "experiments", "recipes")
COMPARE_PAGE = ui.ROOT / "pages" / "compare.py"

root = io.runs_dir()


# --------------------------------------------------------------------------------------------- recipes
@st.cache_data(show_spinner=False)
def _recipes(stamp: tuple) -> list[str]:
    """Recipe files relative to configs/: the top level first, then synth/, pretrain/, experiments/, recipes/."""
    return [str(p.relative_to(CONFIGS)) for folder in RECIPE_FOLDERS for p in sorted((CONFIGS / folder).glob("*.yaml"))]


@st.cache_data(show_spinner=False)
def _recipe(name: str, mtime: float) -> tuple[dict, str, list[str]]:
    """(values, header comment, problems) of a recipe: the resolved config if it validates, else its raw YAML."""
    text = (CONFIGS / name).read_text(encoding="utf-8")
    comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
    raw = io.load_yaml(text) or {}
    try:
        return load_config(raw).to_dict(), comment, []
    except ConfigError as err:
        return (raw if isinstance(raw, dict) else {}), comment, err.problems


def _model_note(name: str) -> str:
    """One line about a registered model, shown under the form's model choice."""
    spec = model_info(name)
    return (f"input {'×'.join(map(str, spec.input_size))} by default · {spec.paper or spec.origin}"
            + (f" · pretrained: {spec.pretrained}" if spec.pretrained else ""))


@st.cache_data(show_spinner=False, ttl=60)
def _partitions() -> list[str]:
    """The partitions ``sinfo`` reports (asked at most once a minute); empty when it fails."""
    try:
        return slurm.partitions()
    except (slurm.SlurmError, OSError):
        return []


# --------------------------------------------------------------------------------------------- live run
def _run_panel(run_id: str, initial: str) -> None:
    """Progress, Cancel / Resume and learning curves of one run; reruns the page when its state changes."""
    run_dir = io.run_path(run_id, root)
    status = io.read_status(run_dir)
    state = io.run_state(run_dir, status)
    job = status.get("slurm_job")
    if job and state in (*ui.ACTIVE_STATES, "interrupted"):  # SLURM's view, asked at most every 15 s
        queue = slurm.cached_job_states([job]).get(str(job))
        if queue and queue not in slurm.ACTIVE_JOB_STATES:
            state = slurm.reconcile(run_dir, queue)
            status = io.read_status(run_dir)
        elif queue:  # waiting or running in SLURM: the folder's state (its pid is the job's, unset while pending)
            state = status.get("state", state)
        st.caption(f"SLURM job {job}: {queue or 'state unknown'} · job files in "
                   f"`{status.get('slurm_logs') or run_dir / 'slurm'}`")
    if state != initial:
        st.rerun()
    metrics = ui.load_metrics(run_dir)
    epochs = status.get("epochs") or (ui.load_config(run_dir).get("train") or {}).get("epochs")
    if state in ui.ACTIVE_STATES:
        st.progress(ui.progress_of(status, metrics, epochs), text=ui.progress_text(None, state, status, metrics,
                                                                                      epochs))
        if st.button("Cancel", icon=":material/stop:", key="train.cancel"):
            lifecycle.cancel_run(run_dir)
            st.rerun()
    elif state == "done":
        acc = ui.load_eval(run_dir).get("test/all", {}).get("accuracy")
        st.success(f"Finished {status.get('epoch') or len(metrics)} epochs"
                   + (f"; test accuracy {100 * acc:.1f}%." if isinstance(acc, int | float) else "."))
    elif state == "failed":
        st.error(f"Training failed: {status.get('error') or 'no error message recorded'}", icon=":material/error:")
    else:
        st.info(f"This run is {state} after epoch {status.get('epoch') or 0}/{epochs or '?'}.")
    ui.stopped_run_tools(run_dir, state, "train")
    if metrics:
        st.plotly_chart(charts.learning_curves(metrics), width="stretch", key="train.curves")
    elif state in ui.ACTIVE_STATES:
        st.caption("The loss and accuracy curves appear when the first epoch has finished.")


def _group_runs(group: str) -> list[dict]:
    runs, _ = ui.load_runs(root)
    return sorted((r for r in runs if r.get("group") == group), key=lambda r: (r["created"], r["run_id"]))


def _group_panel(group: str, initial: tuple) -> None:
    """Each run of a sweep with its progress; reruns the page when a run starts or ends."""
    info = lifecycle.read_sweep(group, root)
    runs = _group_runs(group)
    if _group_signature(info, runs) != initial:
        st.rerun()
    planned = len(info["planned"]) if info else len(runs)
    ended = sum(r["state"] not in ui.ACTIVE_STATES for r in runs)
    going = "the sweep process is starting them one after another" if info and info["running"] else "no more will start"
    st.progress(ended / planned if planned else 0.0, text=f"{ended} of {planned} runs ended · {going}")
    for r in runs:
        left, right = st.columns([2, 3])
        left.page_link(ui.RUN_PAGE, label=r["run_id"], query_params={"run": r["run_id"]},
                       icon=":material/monitoring:")
        left.markdown(f"{ui.state_badge(r['state'])} {describe_point(r.get('tags') or {})}")
        status = {"epoch": r.get("epoch"), "epochs": r.get("epochs")}
        right.progress(ui.progress_of(status, [], r.get("epochs")),
                       text=ui.progress_text(None, r["state"], status, [], r.get("epochs"))
                       + (f" · best val acc {100 * r['best_val_acc']:.1f}%" if r.get("best_val_acc") else ""))
    if info and info["running"] and st.button("Cancel the sweep", icon=":material/stop:", key="train.cancel_sweep"):
        lifecycle.cancel_sweep(group, root)
        st.rerun()


def _group_signature(info: dict | None, runs: list[dict]) -> tuple:
    return (bool(info and info["running"]), tuple((r["run_id"], r["state"]) for r in runs))


def _forget(param: str) -> None:
    st.query_params.pop(param, None)


# --------------------------------------------------------------------------------------------- page: followed
st.title("Train")
st.caption("Start a training run from a recipe: edit it below, check the config, launch. The run trains in a "
           "background process and is a folder on disk, so you can close this page and come back.")

followed, group = st.query_params.get("run"), st.query_params.get("group")
if followed:
    try:
        if not io.run_path(followed, root).is_dir():
            raise FileNotFoundError
    except (ValueError, FileNotFoundError):  # not a run of this folder (a bad or hostile link): never read it
        st.warning(f"There is no run `{followed}` in `{root}`.")
        followed = None
if group:
    try:
        lifecycle.sweep_path(group, root)
    except ValueError as err:
        st.warning(f"Not a sweep group: {err}")
        group = None
if followed:
    with st.container(border=True):
        initial = io.run_state(root / followed)
        head, link, close = st.columns([5, 2, 1], vertical_alignment="center")
        head.markdown(f"#### {followed} {ui.state_badge(initial)}")
        link.page_link(ui.RUN_PAGE, label="Open its page", query_params={"run": followed}, icon=":material/monitoring:")
        close.button("Close", key="train.close_run", on_click=_forget, args=("run",), help="Stop following this run")
        interval = POLL_SECONDS if initial in ui.ACTIVE_STATES else None
        st.fragment(run_every=interval)(_run_panel)(followed, initial)
if group:
    with st.container(border=True):
        head, link, close = st.columns([5, 2, 1], vertical_alignment="center")
        head.markdown(f"#### Sweep {group}")
        link.page_link(COMPARE_PAGE, label="Compare its runs", query_params={"group": group},
                       icon=":material/compare:")
        close.button("Close", key="train.close_group", on_click=_forget, args=("group",),
                     help="Stop following this sweep")
        signature = _group_signature(lifecycle.read_sweep(group, root), _group_runs(group))
        st.fragment(run_every=POLL_SECONDS if signature[0] or any(
            s in ui.ACTIVE_STATES for _, s in signature[1]) else None)(_group_panel)(group, signature)
if not followed and not group:
    active = [r for r in ui.load_runs(root)[0] if r["state"] in ui.ACTIVE_STATES]
    for r in active:
        text, follow = st.columns([5, 1], vertical_alignment="center")
        text.markdown(f"Training now: **{r['run_id']}** {ui.state_badge(r['state'])} epoch "
                      f"{r.get('epoch') or 0}/{r.get('epochs') or '?'}")
        follow.button("Follow", key=f"train.follow.{r['run_id']}", on_click=st.query_params.update,
                      kwargs={"run": r["run_id"]})

# --------------------------------------------------------------------------------------------- page: the form
st.subheader("New run")
recipes = _recipes(tuple((CONFIGS / f).stat().st_mtime_ns for f in RECIPE_FOLDERS if (CONFIGS / f).is_dir()))
if not recipes:
    st.info(f"No recipes in `{CONFIGS}`: add a YAML config there (see `configs/smoke.yaml` in the repository).")
    st.stop()
if st.session_state.get(RECIPE_KEY) not in recipes:
    st.session_state[RECIPE_KEY] = "synth_quick.yaml" if "synth_quick.yaml" in recipes else recipes[0]
recipe_name = st.selectbox("Start from a recipe", recipes, key=RECIPE_KEY, on_change=config_form.reset, args=(FORM,),
                           help="YAML files in configs/; synth/ trains on SynthFACS, pretrain/ pretrains a backbone "
                                "on SynthFACS subjects the FER splits never use, recipes/ trains on real data sets")
recipe, comment, recipe_problems = _recipe(recipe_name, (CONFIGS / recipe_name).stat().st_mtime)
if comment:
    st.caption(comment)
if recipe_problems:
    st.warning("This recipe does not validate here as it is; fix the fields below:  \n"
               + "  \n".join(f"- {p}" for p in recipe_problems))

runs, _ = ui.load_runs(root)
choices = config_form.Choices(
    datasets={d["name"]: d for d in ui.dataset_list()},
    models={name: _model_note(name) for name in list_models()},
    devices=lifecycle.available_devices(),
    teacher_runs=[r["run_id"] for r in runs if r["state"] == "done"],
    init_runs=[r["run_id"] for r in runs if r["state"] == "done"],
    data_home_note=ui.data_home_note(),
)
values = config_form.show(recipe, choices, key=FORM)

# --------------------------------------------------------------------------------------------- validate, launch
cfg: Config | None = None
try:
    cfg = load_config(values)
    problems = lifecycle.check_launch(cfg, root)
except ConfigError as err:
    problems = err.problems
if slurm.available() and st.session_state.get(BACKEND_KEY) == "SLURM":  # the device is the compute node's
    problems = [p for p in problems if not p.startswith("train.device:")]
if problems:
    st.error("Fix these before launching:  \n" + "  \n".join(f"- {p}" for p in problems), icon=":material/error:")
else:
    file_name = f"{cfg.name}.yaml"
    with st.expander("The config as YAML, and the same run from a shell"):
        st.markdown(f"The same from a shell: `python -m fer_core train --config {file_name}`")
        st.download_button("Download the YAML", cfg.to_yaml(), file_name=file_name, mime="application/x-yaml",
                           icon=":material/download:", key="train.download")
        st.code(cfg.to_yaml(), language="yaml")

slurm_options: dict | None = None
if slurm.available():
    st.session_state.setdefault(BACKEND_KEY, BACKENDS[0])
    backend = st.segmented_control("Where to train", BACKENDS, key=BACKEND_KEY) or BACKENDS[0]
    if backend == "SLURM":
        names = _partitions()
        cols = st.columns(4)
        partition = cols[0].selectbox("Partition", names or ["(sinfo lists none)"], key="train.slurm.partition")
        time_text = cols[1].text_input("Time limit", "1:00:00", key="train.slurm.time",
                                       help="SLURM's formats: minutes, H:MM:SS, D-HH:MM:SS")
        gpus = cols[2].number_input("GPUs per node", 0, 16, 0, key="train.slurm.gpus")
        cpus = cols[3].number_input("CPUs per task", 0, 256, 0, key="train.slurm.cpus",
                                    help="0: the partition's default")
        slurm_options = {"partition": partition if names else None, "time": time_text,
                         **({"cpus": int(cpus)} if cpus else {}), **({"gpus": int(gpus)} if gpus else {})}
        st.caption("The run is submitted as a SLURM job (submitit) and trains in its run folder; its state and the "
                   "job's queue state show here and on Home. The same from a shell: `python -m fer_core train "
                   "--config FILE --backend slurm --slurm partition=...,time=...`.")

if st.button("Launch training", type="primary", icon=":material/play_arrow:", key="train.launch"):
    if problems or cfg is None:
        st.error("Nothing was launched: the config above has problems.")
    else:
        try:
            if slurm_options is not None:
                run_id, _job = lifecycle.submit_train(cfg, root=root, slurm=slurm_options)
            else:
                run_id, _pid = lifecycle.launch_train(cfg, root=root)
        except Exception as err:  # noqa: BLE001 - any launch problem is shown on the page, never a traceback
            st.error(f"Could not start the run: {err}")
        else:
            st.query_params["run"] = run_id
            st.rerun()

# --------------------------------------------------------------------------------------------- sweeps
with st.expander("Sweep: train this config for several values of some keys", icon=":material/grid_view:"):
    st.caption("Each row is a config key (dotted, as in the YAML) and its values: a comma-separated list "
               "(`0.01,0.001`, `adam,sgd`) or a range `start:stop[:step]` with stop included (`0:2`). Every "
               "combination is one run; the runs share a group, so the Compare page can line them up. The same "
               "from a shell: `python -m fer_core sweep --config FILE --grid key=v1,v2`.")
    st.session_state.setdefault(SWEEP_ROWS_KEY, 1)
    items = []
    for i in range(st.session_state[SWEEP_ROWS_KEY]):
        key_col, values_col = st.columns([2, 3])
        key = key_col.text_input("config key", key=f"train.sweep.key.{i}", placeholder="train.optimizer.lr")
        grid_values = values_col.text_input("values", key=f"train.sweep.values.{i}", placeholder="0.01,0.001")
        if key.strip():
            items.append(f"{key.strip()}={grid_values}")
    add, group_col, parallel_col = st.columns([1, 2, 1], vertical_alignment="bottom")
    if add.button("Add a key", icon=":material/add:", key="train.sweep.add"):
        st.session_state[SWEEP_ROWS_KEY] += 1
        st.rerun()
    group_name = group_col.text_input("group name", key="train.sweep.group",
                                      placeholder=f"{cfg.name if cfg else 'run'}-sweep-<time>")
    parallel = parallel_col.number_input("runs at once", min_value=1, max_value=8, value=1, key="train.sweep.parallel")
    if items and cfg is not None and not problems:
        try:
            points = plan_sweep(cfg, parse_grid(items), group=group_name.strip() or None)
        except ConfigError as err:
            st.error("The sweep cannot run:  \n" + "  \n".join(f"- {p}" for p in err.problems))
        else:
            keys = list(points[0][0])
            st.dataframe(pd.DataFrame([{"run name": c.name, **{k: format_value(t[k]) for k in keys}}
                                       for t, c in points]), hide_index=True, width="stretch", key="train.sweep.plan")
            if st.button(f"Launch {len(points)} runs", type="primary", icon=":material/play_arrow:",
                         key="train.sweep.launch"):
                try:
                    launched, _pid = lifecycle.launch_sweep(cfg, items, group=group_name.strip() or None,
                                                         parallel=int(parallel), root=root)
                except (ConfigError, ValueError, FileExistsError, OSError) as err:
                    st.error(f"Could not start the sweep: {err}")
                else:
                    st.query_params["group"] = launched
                    st.rerun()
    elif items:
        st.info("Fix the config above first; the sweep plan appears here when it validates.")
    else:
        st.info("Add a config key and its values to see the planned runs.")
