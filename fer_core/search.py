"""Hyper-parameter search with Optuna: every trial is a run of one group, pruned on the validation curve it writes.

    python -m fer_core search --config C --space space.yaml --trials 20 [--group G] [--parallel 2]

The space is a YAML mapping from config keys to distributions::

    train.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    train.optimizer.weight_decay: {type: float, low: 0.0, high: 0.1}
    train.batch_size: {type: categorical, choices: [32, 64, 128]}
    model.options.drop_rate: {type: float, low: 0.0, high: 0.5, step: 0.1}
    train.epochs: {type: int, low: 5, high: 20}

Every key and both ends of every range (each choice) are applied to the config and validated before the first
trial starts, naming the file and the key of a bad entry. The study (TPE sampler, median pruner, maximising the
best validation accuracy of each run) is an Optuna journal file in ``<runs>/.searches/<group>/study.log``, on the
same file system as the runs, so a search that was stopped goes on with ``--trials`` counting every trial so far.

Each trial is started with :func:`fer_core.lifecycle.launch_train` (a child process, like a sweep's points); its
config's ``group`` is the search's and its ``tags`` hold the sampled values and ``trial``. The search reads the
validation accuracy of every epoch from the run's ``metrics.jsonl``, reports it to Optuna, and a trial the pruner
stops is cancelled and marked in its ``status.json`` (``pruned: <epoch>``; its state is ``cancelled``), so the run
folders alone say what happened. :func:`search_summary` is what the Compare page shows for a search group: the
objective per trial and the parameters' importance (fANOVA).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fer_core import io
from fer_core.config import Config, ConfigError, format_value
from fer_core.lifecycle import cancel_run, launch_train, submit_train
from fer_core.sweep import _validate_points, default_group

logger = logging.getLogger(__name__)

SEARCH_FOLDER = ".searches"
"""Sub-folder of the runs folder: one folder per search group with ``space.yaml`` and ``study.log``."""
OBJECTIVE = "best validation accuracy"
ProgressFn = Callable[[dict[str, Any]], None]


class _Dist(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatDist(_Dist):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> FloatDist:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log needs low > 0 and no step")
        return self


class IntDist(_Dist):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, gt=0)

    @model_validator(mode="after")
    def _check(self) -> IntDist:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low <= 0 or self.step != 1):
            raise ValueError("log needs low > 0 and step 1")
        return self


class CategoricalDist(_Dist):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=2)


Dist = Annotated[FloatDist | IntDist | CategoricalDist, Field(discriminator="type")]


class _Space(BaseModel):
    params: dict[str, Dist]


def load_space(space: str | os.PathLike | Mapping[str, Any]) -> dict[str, FloatDist | IntDist | CategoricalDist]:
    """Read and check a search space (a YAML file or a mapping): ``{config key: distribution}``.

    Raises:
        ConfigError: naming the file and every bad key.
    """
    where = "the search space"
    if not isinstance(space, Mapping):
        path = Path(space)
        where = str(path)
        try:
            space = io.load_yaml(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError([f"{path}: cannot be read ({err.strerror or err})"]) from None
        except Exception as err:  # YAML syntax: the parser names the line
            raise ConfigError([f"{path}: not valid YAML: {err}"]) from None
    if not isinstance(space, Mapping) or not space:
        raise ConfigError([f"{where}: give a mapping of config keys to distributions, e.g. "
                           "train.optimizer.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"])
    try:
        return dict(_Space(params=dict(space)).params)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"][1:] if p not in ("float", "int", "categorical")]
            problems.append(f"{where}: {'.'.join(loc[:1]) or '?'}"
                            f"{' (' + '.'.join(loc[1:]) + ')' if loc[1:] else ''}: {e['msg']}")
        raise ConfigError(problems) from None


def _ends(dist: FloatDist | IntDist | CategoricalDist) -> list[Any]:
    return list(dist.choices) if isinstance(dist, CategoricalDist) else [dist.low, dist.high]


def check_space(base: Config, space: Mapping[str, Any], group: str) -> None:
    """Apply both ends of every range (every choice) to ``base`` and validate the configs, before any trial.

    Raises:
        ConfigError: one line per bad key and value.
    """
    lows = {key: _ends(dist)[0] for key, dist in space.items()}
    raw = [({**lows, key: value}, {**lows, key: value}, "check") for key, dist in space.items()
           for value in _ends(dist)]
    _validate_points(base, raw, group)


def _suggest(trial, space: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for key, dist in space.items():
        if isinstance(dist, FloatDist):
            values[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, IntDist):
            values[key] = trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
        else:
            values[key] = trial.suggest_categorical(key, dist.choices)
    return values


def search_folder(group: str, root: str | os.PathLike | None = None) -> Path:
    root = Path(root).expanduser().resolve() if root is not None else io.runs_dir()
    return root / SEARCH_FOLDER / io.check_run_id(group)


def open_study(group: str, root: str | os.PathLike | None = None, *, seed: int = 0, create: bool = True,
               sampler=None, pruner=None):
    """The Optuna study of a search group (journal file ``<runs>/.searches/<group>/study.log``): TPE sampling
    (seeded; random for the first 4 trials) and median pruning (from the 2nd epoch, once 2 trials are complete),
    unless ``sampler`` / ``pruner`` say otherwise."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    folder = search_folder(group, root)
    if not create and not (folder / "study.log").exists():
        raise FileNotFoundError(f"no search {group!r} in {folder.parent}")
    folder.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(folder / "study.log")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not create:
        return optuna.load_study(study_name=group, storage=storage)
    return optuna.create_study(
        study_name=group, storage=storage, direction="maximize", load_if_exists=True,
        sampler=sampler or optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))


def run_search(base: Config, space: Mapping[str, Any], trials: int, *, group: str | None = None,
               runs_root: str | os.PathLike | None = None, parallel: int = 1, seed: int = 0,
               progress: ProgressFn | None = None, poll_interval: float = 0.5, sampler=None,
               pruner=None, backend: str = "local", slurm: Mapping[str, Any] | None = None) -> list[str]:
    """Run an Optuna search until the study holds ``trials`` finished trials (complete, pruned or failed).

    Args:
        base: the config every trial starts from.
        space: ``{config key: distribution}`` (:func:`load_space`).
        trials: how many trials the study should have in all (a resumed search counts the earlier ones).
        group: the search's group (default ``base.group``, else a fresh ``<name>-sweep-<time>``).
        runs_root: runs folder (default :func:`fer_core.io.runs_dir`).
        parallel: trials at once.
        seed: the TPE sampler's seed.
        progress: called with ``start`` {trial, run_id, params}, ``epoch`` {trial, run_id, epoch, val_acc},
            ``end`` {trial, run_id, state, value} (state: complete | pruned | failed) events.
        poll_interval: seconds between looks at the run folders.
        sampler, pruner: Optuna's, instead of :func:`open_study`'s defaults.
        backend: ``local`` (child processes here) or ``slurm`` (each trial a SLURM job, :mod:`fer_core.slurm`,
            with the options ``slurm``; a trial whose job vanished counts as failed).

    Returns:
        The run ids this call started, in trial order. If interrupted, the trials it started are cancelled and
        marked failed in the study.
    """
    from optuna.trial import TrialState

    if parallel < 1 or trials < 1:
        raise ValueError(f"trials and parallel must be >= 1 (got {trials}, {parallel})")
    if backend not in ("local", "slurm"):
        raise ValueError(f"backend must be local or slurm (got {backend!r})")
    root = Path(runs_root).expanduser().resolve() if runs_root is not None else io.runs_dir()
    group = group or base.group or default_group(base)
    check_space(base, space, group)
    study = open_study(group, root, seed=seed, sampler=sampler, pruner=pruner)
    folder = search_folder(group, root)
    io.atomic_write_text(folder / "space.yaml", io.dump_yaml({k: v.model_dump(exclude_none=True)
                                                              for k, v in space.items()}))
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        run_id = stale.user_attrs.get("run_id")  # a search that was killed: its trial's run is not followed
        if run_id and (root / run_id).is_dir():
            with contextlib.suppress(Exception):
                cancel_run(root / run_id)
        study.tell(stale.number, state=TrialState.FAIL)
        logger.warning("trial %d (run %s) was left running by an earlier search: marked failed", stale.number, run_id)
    emit = progress or (lambda event: None)
    started: list[str] = []
    active: dict[int, tuple[Any, Path, int]] = {}  # trial number -> (trial, run folder, epochs reported)

    def finished() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.FAIL)))

    try:
        while finished() + len(active) < trials or active:
            while finished() + len(active) < trials and len(active) < parallel:
                trial = study.ask()
                values = _suggest(trial, space)
                tags = {**values, "trial": trial.number}
                [(_, cfg)] = _validate_points(base, [(tags, values, f"trial{trial.number}")], group)
                run_id, _ = submit_train(cfg, root=root, slurm=slurm) if backend == "slurm" else \
                    launch_train(cfg, root=root)
                trial.set_user_attr("run_id", run_id)
                active[trial.number] = (trial, root / run_id, 0)
                started.append(run_id)
                emit({"event": "start", "trial": trial.number, "run_id": run_id, "params": values})
            time.sleep(poll_interval)
            for number, (trial, run_dir, reported) in list(active.items()):
                rows = [m for m in io.read_metrics(run_dir) if isinstance(m.get("val_acc"), int | float)]
                for row in rows[reported:]:
                    trial.report(float(row["val_acc"]), int(row["epoch"]))
                    emit({"event": "epoch", "trial": number, "run_id": run_dir.name, "epoch": row["epoch"],
                          "val_acc": row["val_acc"]})
                active[number] = (trial, run_dir, len(rows))
                state = io.run_state(run_dir)
                if backend == "slurm" and state in ("queued", "running", "interrupted"):
                    state = _slurm_state(run_dir)
                if state in ("queued", "running") and len(rows) > reported and trial.should_prune():
                    cancel_run(run_dir)
                    io.write_status(run_dir, pruned=int(rows[-1]["epoch"]))
                    study.tell(trial, state=TrialState.PRUNED)
                    del active[number]
                    emit({"event": "end", "trial": number, "run_id": run_dir.name, "state": "pruned",
                          "value": max(r["val_acc"] for r in rows)})
                elif state == "done":
                    value = max((float(r["val_acc"]) for r in rows), default=float("nan"))
                    study.tell(trial, value)
                    del active[number]
                    emit({"event": "end", "trial": number, "run_id": run_dir.name, "state": "complete",
                          "value": value})
                elif state not in ("queued", "running"):
                    study.tell(trial, state=TrialState.FAIL)
                    del active[number]
                    emit({"event": "end", "trial": number, "run_id": run_dir.name, "state": "failed",
                          "value": None, "error": io.read_status(run_dir).get("error") or state})
    except BaseException:
        for trial, run_dir, _ in active.values():
            with contextlib.suppress(Exception):
                cancel_run(run_dir)
            with contextlib.suppress(Exception):
                study.tell(trial, state=TrialState.FAIL)
        raise
    return started


def _slurm_state(run_dir: Path) -> str:
    """A SLURM trial's state, its job asked at most every 15 s; a job gone without the run's end fails the run."""
    from fer_core import slurm

    status = io.read_status(run_dir)
    job = status.get("slurm_job")
    queue = slurm.cached_job_states([job]).get(str(job)) if job else None
    if queue and queue not in slurm.ACTIVE_JOB_STATES:
        return slurm.reconcile(run_dir, queue)
    # the job is queued or running (or not listed yet): what the folder says, whatever its pid (the job's, which
    # a requeue or a pending start leaves unset)
    return status.get("state", "queued")


def search_summary(group: str, root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """What the Compare page shows for a search group, or None when the group is not a search.

    Returns:
        ``{"trials": [{trial, run_id, state, value, params...}], "importance": {key: share} (empty with fewer
        than two complete trials), "best": the best complete trial's row or None, "space": {key: text}}``.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        study = open_study(group, root, create=False)
    except FileNotFoundError:
        return None
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = t.value if t.state == TrialState.COMPLETE else (
            max(t.intermediate_values.values()) if t.intermediate_values else None)
        rows.append({"trial": t.number, "run_id": t.user_attrs.get("run_id"), "state": names.get(t.state, "?"),
                     "value": value, "epochs": len(t.intermediate_values), **t.params})
    complete = [r for r in rows if r["state"] == "complete"]
    importance: dict[str, float] = {}
    if len(complete) >= 2 and len(study.best_trial.params) >= 1:
        with contextlib.suppress(RuntimeError, ValueError, ZeroDivisionError):
            importance = dict(optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)))
    space_file = search_folder(group, root) / "space.yaml"
    space = io.load_yaml(space_file.read_text()) if space_file.exists() else {}
    return {"trials": rows, "importance": importance,
            "best": max(complete, key=lambda r: r["value"]) if complete else None,
            "space": {k: ", ".join(f"{a} {format_value(b)}" for a, b in v.items()) for k, v in space.items()}}

