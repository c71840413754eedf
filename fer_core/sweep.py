"""Sweeps and ablations: many runs of one base config, tied together by ``Config.group`` and ``Config.tags``.

A *grid* is a cartesian product of dotted-key value lists::

    {"train.optimizer.lr": [0.1, 0.01], "model.options.branch_weight": [0.1, 0.5]}    # 4 runs

An *ablation* is a list of named variants, each a set of overrides (``full`` changes nothing)::

    [("full", {}), ("no_regions", {"model.options.regions": False})]                   # 2 runs

Both may be given: every variant is then crossed with every grid point. Each point is applied to the base config
with the semantics of ``--set`` (values read by :func:`fer_core.config.parse_value`, keys set by
:func:`fer_core.config.set_key`: dotted keys, missing sections created, no descending into a value), variant first,
grid values last, and validated. Every point is validated *before* anything runs, including the model's options
and what the method needs of the model (:func:`fer_core.runs.check_model`: built on the ``meta`` device, which
allocates nothing); data set files are checked when a run loads its data.

Each point's config gets:

* ``group``: the sweep's group id (given, else the base config's ``group``, else ``<name>-sweep-<timestamp>``);
* ``tags``: the base config's tags, then ``{"variant": name, <variant's keys>...}``, then the grid values;
* ``name``: the base name with a readable suffix, e.g. ``smoke-lr0.01-branch_weight0.5`` or ``smoke-no_regions``.

This module plans; :func:`fer_core.lifecycle.run_sweep` trains the points (a child process per run, as the app
does), ``parallel`` at a time, following them through their run folders. On the command line::

    python -m fer_core sweep --config configs/smoke.yaml --grid train.optimizer.lr=0.01,0.001 --parallel 2
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from fer_core.config import Config, ConfigError, format_value, load_config, parse_value, set_key, split_override
from fer_core.runs import check_model

Point = tuple[dict[str, Any], Config]
"""One planned run: its tags (the swept values) and its validated config."""

Variant = tuple[str, dict[str, Any]]
"""A named ablation variant: ``(name, {dotted key: value})``."""


MAX_RANGE_VALUES = 1000
MAX_PROBLEMS_SHOWN = 20
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RANGE_RE = re.compile(rf"^\s*({_NUMBER})\s*:\s*({_NUMBER})\s*(?::\s*({_NUMBER})\s*)?$")
_VARIANT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------------------- parsing
def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets and quotes, so YAML flow values like ``[1, 2]`` stay whole."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_range(text: str) -> list[int | float] | None:
    """Expand ``start:stop[:step]`` (``stop`` included, ``step`` default 1) or return None if ``text`` is no range.

    Computed in decimal, so ``0.1:1.0:0.1`` gives exactly ``[0.1, 0.2, ..., 1.0]`` (the floats of those literals,
    never ``0.30000000000000004``). All-integer bounds give ints (``0:4`` -> ``[0, 1, 2, 3, 4]``). A negative step
    counts down. Raises ValueError for a zero step, a step pointing away from ``stop`` or over
    :data:`MAX_RANGE_VALUES` values.
    """
    match = _RANGE_RE.match(text)
    if not match:
        return None
    start_s, stop_s, step_s = match.group(1), match.group(2), match.group(3) or "1"
    try:
        start, stop, step = Decimal(start_s), Decimal(stop_s), Decimal(step_s)
    except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
        return None
    if step == 0:
        raise ValueError(f"range {text!r}: the step must not be 0")
    if (stop - start) * step < 0:
        raise ValueError(f"range {text!r}: a step of {step_s} never goes from {start_s} to {stop_s}")
    count = int((stop - start) / step) + 1
    if count > MAX_RANGE_VALUES:
        raise ValueError(f"range {text!r} has {count} values (at most {MAX_RANGE_VALUES}); use a larger step")
    integral = not any(c in s for s in (start_s, stop_s, step_s) for c in ".eE")
    values = [start + i * step for i in range(count)]
    return [int(v) for v in values] if integral else [float(v) for v in values]


def parse_values(text: str) -> list[Any]:
    """``v1,v2,...`` as a list: each item a YAML scalar or a ``start:stop[:step]`` range (see :func:`parse_range`)."""
    values: list[Any] = []
    for item in _split_top(text):
        expanded = parse_range(item)
        values.extend(expanded if expanded is not None else [parse_value(item)])
    return values


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """Parse ``["key=v1,v2,v3", ...]`` (``--grid`` arguments) into ``{key: [values]}``.

    Values are YAML scalars as with ``--set`` (``0.1``, ``1e-3``, ``true``, ``resnet18``, ``[1, 2]``: commas inside
    brackets or quotes do not split) or ranges ``start:stop[:step]`` with ``stop`` included, e.g.
    ``model.options.branch_weight=0.1:1.0:0.1`` (ten values, exact decimals) or ``seed=0:4``.

    Raises:
        ConfigError: an item is not ``key=values``, a key is given twice, or a range is malformed.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, text = split_override(item, "--grid", "key.sub=v1,v2,..., e.g. train.optimizer.lr=0.1,0.01")
        if key in grid:
            raise ConfigError([f"--grid {key}: given twice; list all its values in one --grid {key}=v1,v2"])
        try:
            grid[key] = parse_values(text)
        except ValueError as err:
            raise ConfigError([f"--grid {key}: {err}"]) from None
    return grid


def parse_variant(text: str) -> Variant:
    """Parse one ``--variant name:key=value,key=value`` into ``(name, {key: value})``; ``full:`` changes nothing.

    Raises:
        ConfigError: no ``name:``, a bad name, or an override that is not ``key=value``.
    """
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not _VARIANT_NAME_RE.match(name):
        raise ConfigError([f"--variant expects name:key=value,key=value with a name of letters, digits, '.', '_', "
                           f"'-', e.g. no_regions:model.options.regions=false or full: (got {text!r})"])
    overrides: dict[str, Any] = {}
    for item in _split_top(rest) if rest.strip() else []:
        key, value = split_override(item, f"--variant {name}", "key.sub=value items separated by commas")
        if key in overrides:
            raise ConfigError([f"--variant {name}: {key} given twice"])
        overrides[key] = parse_value(value)
    return name, overrides


# --------------------------------------------------------------------------------------------- planning
def default_group(base: Config) -> str:
    """A fresh group id: ``<name>-sweep-<local time>``."""
    return f"{base.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    """Last dotted component of each key for names, the whole key (dots as ``_``) where the last ones clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k.replace(".", "_")) for k, s in zip(keys, last, strict=True)}


def describe_point(tags: Mapping[str, Any]) -> str:
    """``key=value`` pairs of a point's tags, e.g. ``train.optimizer.lr=0.1 model.options.branch_weight=0.5``."""
    return " ".join(f"{k}={format_value(v)}" for k, v in tags.items())


def _validate_points(base: Config, raw: list[tuple[dict[str, Any], dict[str, Any], str]],
                     group: str | None) -> list[Point]:
    """Apply, name, tag and validate every point; one ConfigError listing every bad point, before anything runs."""
    group = group or base.group or default_group(base)
    base_data = base.to_dict()
    points, problems = [], []
    built: dict[str, list[str]] = {}
    for tags, overrides, suffix in raw:
        label = f"point {describe_point(tags)}" if tags else "point"
        data = json.loads(json.dumps(base_data))  # a deep copy of plain data
        try:
            for key, value in overrides.items():
                set_key(data, key, value, what="")
            data.update(group=group, tags={**base.tags, **tags},
                         name=f"{base.name}-{suffix}" if suffix else base.name)
            cfg = load_config(data)
        except ConfigError as err:
            problems += [f"{label}: {p}" for p in err.problems]
            continue
        model_problems = check_model(cfg, built)
        if model_problems:
            problems += [f"{label}: {p}" for p in model_problems]
            continue
        points.append((tags, cfg))
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > len(shown):
            shown.append(f"... and {len(problems) - len(shown)} more problems in {len(raw)} points")
        raise ConfigError(shown)
    return points


def _grid_points(grid: Mapping[str, Sequence[Any]]) -> list[tuple[dict[str, Any], str]]:
    for key, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError([f"grid {key}: give a non-empty list of values (got {values!r})"])
    keys = list(grid)
    short = _short_keys(keys)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        tags = dict(zip(keys, combo, strict=True))
        out.append((tags, "-".join(f"{short[k]}{format_value(v)}" for k, v in tags.items())))
    return out


def expand_grid(base: Config, grid: Mapping[str, Sequence[Any]], *, group: str | None = None) -> list[Point]:
    """The cartesian product of ``grid`` applied to ``base``: one validated ``(tags, config)`` per point.

    Args:
        base: the config every point starts from.
        grid: ``{dotted key: [values]}``, e.g. ``{"train.optimizer.lr": [0.1, 0.01]}`` (see :func:`parse_grid`).
        group: the sweep's group id (default: ``base.group``, else :func:`default_group`).

    Raises:
        ConfigError: a point is invalid; one line per problem, naming the point's values and the key.
    """
    raw = [(tags, dict(tags), suffix) for tags, suffix in _grid_points(grid)]
    return _validate_points(base, raw, group)


def plan_sweep(base: Config, grid: Mapping[str, Sequence[Any]] | None = None, *,
               variants: Sequence[Variant] | None = None, group: str | None = None) -> list[Point]:
    """What :func:`run_sweep` would run, validated: every variant crossed with every grid point.

    Args:
        base: the config every point starts from.
        grid: ``{dotted key: [values]}`` (a product); None or empty for none.
        variants: ``[(name, {dotted key: value})]`` (see :func:`parse_variant`); None or empty for none.
        group: the sweep's group id (default: ``base.group``, else :func:`default_group`).

    Raises:
        ConfigError: nothing to sweep, duplicate variant names, or an invalid point (all of them listed).
    """
    if not grid and not variants:
        raise ConfigError(["nothing to sweep: give a grid (--grid key=v1,v2) or variants (--variant name:k=v)"])
    names = [name for name, _ in variants or []]
    if len(set(names)) != len(names):
        raise ConfigError([f"variant names must be unique (got {', '.join(names)})"])
    grid_points = _grid_points(grid) if grid else [({}, "")]
    raw = []
    for name, overrides in variants or [(None, {})]:
        for grid_tags, grid_suffix in grid_points:
            head = {"variant": name, **overrides} if name is not None else {}
            tags = {**head, **grid_tags}
            suffix = "-".join(s for s in (name, grid_suffix) if s)
            raw.append((tags, {**overrides, **grid_tags}, suffix))
    return _validate_points(base, raw, group)
