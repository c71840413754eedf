"""The Train page's config form: one input per field of the config schema (:mod:`fer_core.config`), seeded from a
recipe, returning what the user entered as plain data.

Each section of the schema (a pydantic model) becomes a grid of inputs chosen by the field's type: allowed values
(``Literal``) and the registries' names give select boxes, booleans checkboxes, integers number boxes, lists of
allowed values multiselects, lists of sections a YAML text area, and everything else a text box whose text the
schema parses and checks. Free-form ``options`` mappings get one input per option the recipe sets plus a YAML box.
:func:`show` lays the sections out and returns a dict in the shape of a config file, not yet validated: the page
passes it to ``fer_core.config.load_config``, whose errors name the key and the value. Every input's session_state
key is ``<key>.<config key path>`` (``train.form.train.epochs``), so edits survive reruns until :func:`reset`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import streamlit as st
import yaml
from pydantic import BaseModel

from fer_core import io
from fer_core.config import Config, DataConfig, ModelSection, TrainConfig
from fer_core.sweep import parse_values


@dataclass(frozen=True)
class Choices:
    """What the form offers beyond the schema's own allowed values: plain data from the registries and runs folder.

    Attributes:
        datasets: the registered data sets by name (``app.ui.dataset_list`` rows: ``needs_root``, ``root``,
            ``description``).
        models: the registered model names, each with a one-line description shown under the model's select box.
        devices: the devices a run can train on here, the default first.
        teacher_runs: ids of finished runs, offered as teachers (pseudo labels).
        init_runs: ids of finished runs, offered as ``model.init_from`` (the backbone starts from that run's).
        data_home_note: one sentence saying where real data sets are read from (shown when one is not there).
    """

    datasets: Mapping[str, Mapping[str, Any]]
    models: Mapping[str, str]
    devices: Sequence[str] = ("cpu",)
    teacher_runs: Sequence[str] = ()
    init_runs: Sequence[str] = ()
    data_home_note: str = ""


def reset(key: str) -> None:
    """Forget every value edited in the form ``key`` (a new recipe), so it starts from the recipe again."""
    prefix = f"{key}."
    for name in [k for k in st.session_state if str(k).startswith(prefix)]:
        del st.session_state[name]


def show(recipe: Mapping[str, Any], choices: Choices, *, key: str) -> dict[str, Any]:
    """The whole form, seeded from ``recipe`` (a config as a dict); returns the values entered, shaped like a config.

    Args:
        recipe: the starting values, e.g. a resolved config's ``to_dict()`` or a recipe's raw YAML.
        choices: the data sets, models, devices and teacher runs to offer.
        key: the form's session_state key prefix (``<page>.form``).
    """
    form = f"{key}."
    data_in, model_in, train_in = (recipe.get(k) or {} for k in ("data", "model", "train"))

    with st.container(border=True):
        st.markdown("**Run**", help=_doc(Config))
        top = _fields(form, "", Config, recipe, ["name", "seed"], columns=2, labels={"name": "run name"})
        train = _fields(form, "train", TrainConfig, train_in, ["epochs", "batch_size", "device", "precision"],
                        columns=4, choices={"device": list(choices.devices)})

    left, right = st.columns(2)
    with left.container(border=True):
        st.markdown("**Data set**", help=_doc(DataConfig))
        data = _fields(form, "data", DataConfig, data_in, ["name", "label_noise"], columns=2,
                       choices={"name": list(choices.datasets)}, labels={"name": "data set"})
        info = choices.datasets.get(data["name"], {})
        st.caption(info.get("description", ""))
        if info.get("needs_root"):  # the app reads real data only from $FER_DATA/<name>, never from a typed path
            data["root"] = None
            if info.get("root"):
                st.caption(f"Files read from `{info['root']}`.")
            else:
                st.warning(f"**{data['name']}** is not configured. {choices.data_home_note}",
                           icon=":material/folder_off:")
        data["options"] = _options(form, "data", data_in, data["name"] == data_in.get("name"))
    with right.container(border=True):
        st.markdown("**Model**", help=_doc(ModelSection))
        starts = list(choices.init_runs)  # finished runs, and a weights file the recipe names
        if model_in.get("init_from") and model_in["init_from"] not in starts:
            starts.insert(0, model_in["init_from"])
        model = _fields(form, "model", ModelSection, model_in, ["name", "pretrained", "input_size", "weights_path"],
                        columns=2, choices={"name": list(choices.models)}, labels={"name": "model"})
        st.caption(choices.models.get(model["name"], ""))
        model.update(_fields(form, "model", ModelSection, model_in, ["init_from"], columns=1,
                             choices={"init_from": starts}, labels={"init_from": "start the backbone from a run"}))
        if not starts:
            st.caption("No finished run to start from yet: train one (e.g. `configs/pretrain/`) to pick it here.")
        model["options"] = _options(form, "model", model_in, model["name"] == model_in.get("name"))

    methods = _method_tags()
    method_in = train_in.get("method") or {}
    with st.container(border=True):
        st.session_state.setdefault(form + "train.method.name", method_in.get("name", "standard"))
        tag = st.selectbox("Training method", list(methods), key=form + "train.method.name")
        cls = methods[tag]
        st.caption(_doc(cls))
        names = [n for n in cls.model_fields if n != "name"]
        teachers = list(choices.teacher_runs)
        train["method"] = {"name": tag, **_fields(form, f"train.method.{tag}", cls,
                                                   method_in if method_in.get("name") == tag else {}, names,
                                                   columns=3, choices={"teacher_run": teachers})}
        if "teacher_run" in names and not teachers:
            st.info("A teacher is a finished run: train one first (e.g. a resnet50 recipe), then pick it here.")

    for column, (name, title) in zip(st.columns(2), (("optimizer", "Optimiser"),
                                                     ("scheduler", "Learning-rate schedule")), strict=True):
        with column.container(border=True):
            section = TrainConfig.model_fields[name].annotation
            st.markdown(f"**{title}**", help=_doc(section))
            train[name] = _fields(form, f"train.{name}", section, train_in.get(name) or {},
                                  list(section.model_fields), columns=3)

    with st.expander("More training options: augmentation, early stopping, stages, evaluation"):
        st.caption(_doc(TrainConfig))
        shown = {"epochs", "batch_size", "device", "precision", "method", "optimizer", "scheduler"}
        train.update(_fields(form, "train", TrainConfig, train_in,
                             [n for n in TrainConfig.model_fields if n not in shown]))
        section = Config.model_fields["eval"].annotation
        st.markdown("**evaluation**", help=_doc(section))
        evaluation = _fields(form, "eval", section, recipe.get("eval") or {}, list(section.model_fields), columns=2)

    return {**top, "data": data, "model": model, "train": train, "eval": evaluation}


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
        return io.dump_yaml(list(value) if isinstance(value, tuple) else value, flow=True).strip()
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


def _widget(form: str, path: str, cls: type[BaseModel], name: str, data: Mapping[str, Any],
            choices: Sequence | None = None, label: str | None = None) -> Any:
    """One input for field ``name`` of section ``cls`` at config key ``path``; returns what goes into the config.

    The input follows the field's type: allowed values (``Literal``) and ``choices`` give a select box, booleans a
    checkbox, integers a number box, other values a text box whose text the schema parses and checks.
    """
    key, label = form + path, label or name.replace("_", " ")
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
        st.session_state.setdefault(key, io.dump_yaml(value) if value else "")
        text = st.text_area(label, key=key, help="YAML list; empty for none")
        try:
            return io.load_yaml(text) if text.strip() else None
        except yaml.YAMLError as err:  # shown by the schema as "<key>: input should be a valid list"
            return f"not valid YAML: {' '.join(str(err).split())}"
    st.session_state.setdefault(key, _text(value))
    text = st.text_input(label, key=key, placeholder="default" if optional else None)
    if annotation is str:
        return text.strip() or (None if optional else "")
    if annotation in (int, float):  # a number if it reads as one; else the schema names the key and the text
        return _number(text.strip()) if text.strip() else (None if optional else "")
    return _from_text(text)


def _fields(form: str, path: str, cls: type[BaseModel], data: Mapping[str, Any], names: Sequence[str],
            columns: int = 3, choices: Mapping[str, Sequence] | None = None,
            labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Inputs for ``names`` of section ``cls`` in a grid; nested sections get a labelled grid of their own."""
    out: dict[str, Any] = {}
    plain = [n for n in names if not _is_section(_unwrap(cls.model_fields[n].annotation)[0])]
    cols = st.columns(columns)
    for i, name in enumerate(plain):
        with cols[i % columns]:
            out[name] = _widget(form, f"{path}.{name}".strip("."), cls, name, data, (choices or {}).get(name),
                                (labels or {}).get(name))
    for name in names:
        sub = _unwrap(cls.model_fields[name].annotation)[0]
        if _is_section(sub):
            st.markdown(f"**{name.replace('_', ' ')}**", help=_doc(sub))
            out[name] = _fields(form, f"{path}.{name}", sub, data.get(name) or {}, list(sub.model_fields), columns)
    return out


def _options(form: str, path: str, data: Mapping[str, Any], same_as_recipe: bool) -> dict[str, Any]:
    """A free-form ``options`` mapping: one input per option the recipe sets, plus a YAML box for more."""
    recipe = dict(data.get("options") or {}) if same_as_recipe else {}
    out: dict[str, Any] = {}
    cols = st.columns(3)
    for i, (name, value) in enumerate(recipe.items()):
        key = f"{form}{path}.options.{name}"
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
    extra = st.text_input("more options", key=f"{form}{path}.options.+", placeholder="{name: value, ...}",
                          help=f"Further `{path}.options` as a YAML mapping, e.g. `{{seed: 1}}`")
    if extra.strip():
        try:
            more = io.load_yaml(extra)
        except yaml.YAMLError:
            more = None
        out.update(more if isinstance(more, dict) else {"<more options>": extra})
    return out


def _method_tags() -> dict[str, type[BaseModel]]:
    """The training methods of the schema by their ``name`` tag."""
    union = _unwrap(TrainConfig.model_fields["method"].annotation)[0]
    return {m.model_fields["name"].default: m for m in typing.get_args(union) if _is_section(m)}
