"""Train: start a run from a recipe, edited in a form built from the config schema, and follow it live.

The form is generated from ``fer_core.config`` (each section's fields, their types and allowed values), seeded
from a recipe in ``configs/``; the data set, model, device and teacher-run choices come from the registries and
the runs folder. The edited config goes through the same schema as ``python -m fer_core train`` before anything
starts, and ``fer_core.launch`` starts the trainer as a child process. The page then follows the run through its
folder: ``?run=<run_id>`` (a reload finds it again), or ``?group=<group>`` for a sweep.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pandas as pd
import streamlit as st
import yaml
from pydantic import BaseModel

from app import charts, ui
from fer_core import io, launch
from fer_core.config import Config, ConfigError, DataConfig, ModelSection, TrainConfig, load_config
from fer_core.models import list_models, model_info
from fer_core.sweep import describe_point, format_value, parse_grid, parse_values, plan_sweep

RECIPE_KEY = "train.recipe"
FORM = "train.form."  # prefix of every form widget's key; the rest is the config key path
SWEEP_ROWS_KEY = "train.sweep.rows"
POLL_SECONDS = 1.0
CONFIGS = ui.ROOT / "configs"
RECIPE_FOLDERS = ("", "synth", "experiments", "recipes")
COMPARE_PAGE = ui.ROOT / "pages" / "compare.py"

root = io.runs_dir()


# --------------------------------------------------------------------------------------------- recipes
@st.cache_data(show_spinner=False)
def _recipes(stamp: tuple) -> list[str]:
    """Recipe files relative to configs/: the top level first, then synth/, experiments/, recipes/."""
    return [str(p.relative_to(CONFIGS)) for folder in RECIPE_FOLDERS for p in sorted((CONFIGS / folder).glob("*.yaml"))]


@st.cache_data(show_spinner=False)
def _recipe(name: str, mtime: float) -> tuple[dict, str, list[str]]:
    """(values, header comment, problems) of a recipe: the resolved config if it validates, else its raw YAML."""
    text = (CONFIGS / name).read_text(encoding="utf-8")
    comment = " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))
    raw = yaml.safe_load(text) or {}
    try:
        return load_config(raw).to_dict(), comment, []
    except ConfigError as err:
        return (raw if isinstance(raw, dict) else {}), comment, err.problems


def _reset_form() -> None:
    """A new recipe: forget every edited value, so the form starts from the recipe again."""
    for key in [k for k in st.session_state if str(k).startswith(FORM)]:
        del st.session_state[key]


# --------------------------------------------------------------------------------------------- schema -> widgets
def _doc(cls: type) -> str:
    """A section's docstring as help text (reST ``code`` as markdown `code`)."""
    return " ".join((cls.__doc__ or "").split()).replace("``", "`").replace(":class:", "")


def _is_section(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type inside ``Annotated`` / ``X | None``, whether None is allowed)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(annotation))
    return annotation, False


def _default(cls: type[BaseModel], name: str) -> Any:
    field = cls.model_fields[name]
    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _text(value: Any) -> str:
    """A value as the text of an input box: numbers as Python writes them, lists as YAML flow, None as ''."""
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True).strip()
    return str(value)


def _from_text(text: str) -> Any:
    """A typed-in value: numbers as numbers (``1e-3`` too), else a YAML scalar or flow list/mapping."""
    values = parse_values(text) if text.strip() else [None]
    return values[0] if len(values) == 1 else values


UNSET = "(unset)"  # stands for None in a select box (Streamlit shows a None option as "no selection")


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _choice_label(value: Any) -> str:
    return "not set (default)" if value == UNSET else str(value)


def _widget(path: str, cls: type[BaseModel], name: str, data: Mapping[str, Any], choices: list | None = None,
            label: str | None = None) -> Any:
    """One input for field ``name`` of section ``cls`` at config key ``path``; returns what goes into the config.

    The input follows the field's type: allowed values (``Literal``) and ``choices`` give a select box, booleans a
    checkbox, integers a number box, other values a text box whose text the schema parses and checks.
    """
    key, label = FORM + path, label or name.replace("_", " ")
    annotation, optional = _unwrap(cls.model_fields[name].annotation)
    value = data.get(name, _default(cls, name))
    args = typing.get_args(annotation)
    if choices is not None or typing.get_origin(annotation) is Literal:
        options = ([UNSET] if optional else []) + list(choices if choices is not None else args)
        if value is not None and value not in options:
            st.warning(f"`{path}`: the recipe's `{value}` is not available here; pick one of the choices.")
        value = UNSET if value is None and optional else value
        if st.session_state.get(key, value) not in options:
            st.session_state[key] = options[0] if options else None
        st.session_state.setdefault(key, value)
        picked = st.selectbox(label, options, key=key, format_func=_choice_label)
        return None if picked == UNSET else picked
    if annotation is bool:
        if optional:
            st.session_state.setdefault(key, UNSET if value is None else value)
            picked = st.selectbox(label, [UNSET, True, False], key=key, format_func=_choice_label)
            return None if picked == UNSET else picked
        st.session_state.setdefault(key, bool(value))
        return st.checkbox(label, key=key)
    if annotation is int and not optional and isinstance(value, int):
        st.session_state.setdefault(key, value)
        return st.number_input(label, step=1, key=key)
    if typing.get_origin(annotation) in (list, tuple) and args and typing.get_origin(args[0]) is Literal:
        st.session_state.setdefault(key, list(value or []))
        return st.multiselect(label, list(typing.get_args(args[0])), key=key)
    if typing.get_origin(annotation) in (list, tuple) and args and _is_section(args[0]):
        st.session_state.setdefault(key, yaml.safe_dump(value, sort_keys=False) if value else "")
        text = st.text_area(label, key=key, help="YAML list; empty for none")
        try:
            return yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:  # shown by the schema as "<key>: input should be a valid list"
            return f"not valid YAML: {' '.join(str(err).split())}"
    st.session_state.setdefault(key, _text(value))
    text = st.text_input(label, key=key, placeholder="default" if optional else None)
    if annotation is str:
        return text.strip() or (None if optional else "")
    if annotation in (int, float):  # a number if it reads as one; else the schema names the key and the text
        return _number(text.strip()) if text.strip() else (None if optional else "")
    return _from_text(text)


def _fields(path: str, cls: type[BaseModel], data: Mapping[str, Any], names: list[str], columns: int = 3,
            choices: Mapping[str, list] | None = None, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Inputs for ``names`` of section ``cls`` in a grid; nested sections get a labelled grid of their own."""
    out: dict[str, Any] = {}
    plain = [n for n in names if not _is_section(_unwrap(cls.model_fields[n].annotation)[0])]
    cols = st.columns(columns)
    for i, name in enumerate(plain):
        with cols[i % columns]:
            out[name] = _widget(f"{path}.{name}".strip("."), cls, name, data, (choices or {}).get(name),
                                (labels or {}).get(name))
    for name in names:
        sub = _unwrap(cls.model_fields[name].annotation)[0]
        if _is_section(sub):
            st.markdown(f"**{name.replace('_', ' ')}**", help=_doc(sub))
            out[name] = _fields(f"{path}.{name}", sub, data.get(name) or {}, list(sub.model_fields), columns)
    return out


def _options(path: str, data: Mapping[str, Any], same_as_recipe: bool) -> dict[str, Any]:
    """A free-form ``options`` mapping: one input per option the recipe sets, plus a YAML box for more."""
    recipe = dict(data.get("options") or {}) if same_as_recipe else {}
    out: dict[str, Any] = {}
    cols = st.columns(3)
    for i, (name, value) in enumerate(recipe.items()):
        key = f"{FORM}{path}.options.{name}"
        with cols[i % 3]:
            if isinstance(value, bool):
                st.session_state.setdefault(key, value)
                out[name] = st.checkbox(name, key=key)
            elif isinstance(value, int):
                st.session_state.setdefault(key, value)
                out[name] = st.number_input(name, step=1, key=key)
            else:
                st.session_state.setdefault(key, _text(value))
                out[name] = _from_text(st.text_input(name, key=key))
    extra = st.text_input("more options", key=f"{FORM}{path}.options.+", placeholder="{name: value, ...}",
                          help=f"Further `{path}.options` as a YAML mapping, e.g. `{{seed: 1}}`")
    if extra.strip():
        try:
            more = yaml.safe_load(extra)
        except yaml.YAMLError:
            more = None
        out.update(more if isinstance(more, dict) else {"<more options>": extra})
    return out


def _method_tags() -> dict[str, type[BaseModel]]:
    """The training methods of the schema by their ``name`` tag."""
    union = _unwrap(TrainConfig.model_fields["method"].annotation)[0]
    return {m.model_fields["name"].default: m for m in typing.get_args(union) if _is_section(m)}


# --------------------------------------------------------------------------------------------- live run
def _run_panel(run_id: str, initial: str) -> None:
    """Progress, Cancel / Resume and learning curves of one run; reruns the page when its state changes."""
    run_dir = io.run_path(run_id, root)
    status = io.read_status(run_dir)
    state = io.run_state(run_dir, status)
    if state != initial:
        st.rerun()
    metrics = ui.load_metrics(run_dir)
    epochs = status.get("epochs") or (ui.load_config(run_dir).get("train") or {}).get("epochs")
    if state in ui.ACTIVE_STATES:
        st.progress(ui.progress_of(status, metrics, epochs), text=ui.progress_text(None, state, status, metrics,
                                                                                      epochs))
        if st.button("Cancel", icon=":material/stop:", key="train.cancel"):
            launch.cancel_run(run_dir)
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
    info = launch.read_sweep(group, root)
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
        launch.cancel_sweep(group, root)
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
        launch.sweep_path(group, root)
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
        signature = _group_signature(launch.read_sweep(group, root), _group_runs(group))
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
recipe_name = st.selectbox("Start from a recipe", recipes, key=RECIPE_KEY, on_change=_reset_form,
                           help="YAML files in configs/; synth/ trains on SynthFACS, recipes/ on real data sets")
recipe, comment, recipe_problems = _recipe(recipe_name, (CONFIGS / recipe_name).stat().st_mtime)
if comment:
    st.caption(comment)
if recipe_problems:
    st.warning("This recipe does not validate here as it is; fix the fields below:  \n"
               + "  \n".join(f"- {p}" for p in recipe_problems))

data_in, model_in, train_in = (recipe.get(k) or {} for k in ("data", "model", "train"))
runs, _ = ui.load_runs(root)
finished = [r["run_id"] for r in runs if r["state"] == "done"]
datasets = {d["name"]: d for d in ui.dataset_list()}

with st.container(border=True):
    st.markdown("**Run**", help=_doc(Config))
    top = _fields("", Config, recipe, ["name", "seed"], columns=2, labels={"name": "run name"})
    train = _fields("train", TrainConfig, train_in, ["epochs", "batch_size", "device", "precision"], columns=4,
                    choices={"device": launch.available_devices()})

left, right = st.columns(2)
with left.container(border=True):
    st.markdown("**Data set**", help=_doc(DataConfig))
    data = _fields("data", DataConfig, data_in, ["name", "label_noise"], columns=2,
                   choices={"name": list(datasets)}, labels={"name": "data set"})
    info = datasets.get(data["name"], {})
    st.caption(info.get("description", ""))
    if info.get("needs_root"):  # the app reads real data only from $FER_DATA/<name>, never from a typed path
        data["root"] = None
        if info.get("root"):
            st.caption(f"Files read from `{info['root']}`.")
        else:
            st.warning(f"**{data['name']}** is not configured. {ui.data_home_note()}", icon=":material/folder_off:")
    data["options"] = _options("data", data_in, data["name"] == data_in.get("name"))
with right.container(border=True):
    st.markdown("**Model**", help=_doc(ModelSection))
    model = _fields("model", ModelSection, model_in, ["name", "pretrained", "input_size", "weights_path"],
                    columns=2, choices={"name": list_models()}, labels={"name": "model"})
    spec = model_info(model["name"])
    st.caption(f"input {'×'.join(map(str, spec.input_size))} by default · {spec.paper or spec.origin}"
               + (f" · pretrained: {spec.pretrained}" if spec.pretrained else ""))
    model["options"] = _options("model", model_in, model["name"] == model_in.get("name"))

methods = _method_tags()
method_in = train_in.get("method") or {}
with st.container(border=True):
    st.session_state.setdefault(FORM + "train.method.name", method_in.get("name", "standard"))
    tag = st.selectbox("Training method", list(methods), key=FORM + "train.method.name")
    cls = methods[tag]
    st.caption(_doc(cls))
    names = [n for n in cls.model_fields if n != "name"]
    train["method"] = {"name": tag, **_fields(f"train.method.{tag}", cls, method_in if method_in.get("name") == tag
                                               else {}, names, columns=3, choices={"teacher_run": finished})}
    if "teacher_run" in names and not finished:
        st.info("A teacher is a finished run: train one first (e.g. a resnet50 recipe), then pick it here.")

for column, (name, title) in zip(st.columns(2), (("optimizer", "Optimiser"), ("scheduler", "Learning-rate schedule")),
                                  strict=True):
    with column.container(border=True):
        section = TrainConfig.model_fields[name].annotation
        st.markdown(f"**{title}**", help=_doc(section))
        train[name] = _fields(f"train.{name}", section, train_in.get(name) or {}, list(section.model_fields),
                              columns=3)

with st.expander("More training options: augmentation, early stopping, stages, evaluation"):
    st.caption(_doc(TrainConfig))
    shown = {"epochs", "batch_size", "device", "precision", "method", "optimizer", "scheduler"}
    train.update(_fields("train", TrainConfig, train_in, [n for n in TrainConfig.model_fields if n not in shown]))
    st.markdown("**evaluation**", help=_doc(Config.model_fields["eval"].annotation))
    section = Config.model_fields["eval"].annotation
    evaluation = _fields("eval", section, recipe.get("eval") or {}, list(section.model_fields), columns=2)

# --------------------------------------------------------------------------------------------- validate, launch
values = {**top, "data": data, "model": model, "train": train, "eval": evaluation}
cfg: Config | None = None
try:
    cfg = load_config(values)
    problems = launch.check_launch(cfg, root)
except ConfigError as err:
    problems = err.problems
if problems:
    st.error("Fix these before launching:  \n" + "  \n".join(f"- {p}" for p in problems), icon=":material/error:")
else:
    file_name = f"{cfg.name}.yaml"
    with st.expander("The config as YAML, and the same run from a shell"):
        st.markdown(f"The same from a shell: `python -m fer_core train --config {file_name}`")
        st.download_button("Download the YAML", cfg.to_yaml(), file_name=file_name, mime="application/x-yaml",
                           icon=":material/download:", key="train.download")
        st.code(cfg.to_yaml(), language="yaml")

if st.button("Launch training", type="primary", icon=":material/play_arrow:", key="train.launch"):
    if problems or cfg is None:
        st.error("Nothing was launched: the config above has problems.")
    else:
        try:
            run_id, _pid = launch.launch_train(cfg, root=root)
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
                    launched, _pid = launch.launch_sweep(cfg, items, group=group_name.strip() or None,
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
