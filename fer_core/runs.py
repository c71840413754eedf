"""What belongs to a run: its checkpoints and trainer state, its model, and its data split.

The trainer saves and resumes through these functions, and evaluation, prediction, explanation and teacher models
load a run's model through them; the file layout is docs/CONTRACTS.md's::

    runs/<id>/checkpoints/best.safetensors   weights (safetensors) with the class names in their metadata
    runs/<id>/checkpoints/last.safetensors   + last_state.pt: the resumable trainer state (weights_only pickle)

    model = load_run_model("runs/<id>")              # strict load, eval mode, model.cfg.class_names
    weights_path("runs/<id>", "best")                # where a tag's weights are (nothing read)
    ds, images, labels = load_split(cfg.data, "test", placement="host")

Importing this module imports no torch (it is imported on first use), so the app's pages may ask for paths.
Plain files of a run (status, metrics, eval results) are :mod:`fer_core.io`'s; starting and stopping runs is
:mod:`fer_core.lifecycle`'s.
"""

from __future__ import annotations

import io as _bytes_io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_core import io
from fer_core.config import Config, DataConfig, format_value, load_config

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from fer_core.models.weights import LoadReport

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
"""The sub-folder of a run that holds its weights and trainer state."""


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: damaged, truncated, or a pickle that would need code to load."""


# --------------------------------------------------------------------------------------------- paths
def checkpoints_dir(run_dir: str | os.PathLike) -> Path:
    """``<run>/checkpoints``."""
    return Path(run_dir) / CHECKPOINTS


def weights_path(run_dir: str | os.PathLike, tag: str = "best") -> Path:
    """The weights file of checkpoint ``tag`` (``best``, ``last``, ``stage_best``) of a run (it may not exist)."""
    return checkpoints_dir(run_dir) / f"{tag}.safetensors"


def trainer_state_path(run_dir: str | os.PathLike, tag: str = "last") -> Path:
    """The resumable trainer state of checkpoint ``tag`` of a run (it may not exist)."""
    return checkpoints_dir(run_dir) / f"{tag}_state.pt"


def resumable(run_dir: str | os.PathLike) -> bool:
    """Whether the run has a trainer state to resume from (it finished an epoch)."""
    return trainer_state_path(run_dir).exists()


# --------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(directory: str | os.PathLike, model: nn.Module, tag: str,
                    extra_state: Mapping[str, Any] | None = None, metadata: Mapping[str, str] | None = None) -> Path:
    """Save ``model`` weights as ``<directory>/<tag>.safetensors`` and, if given, ``extra_state`` as
    ``<tag>_state.pt``; ``directory`` is a run's :func:`checkpoints_dir`.

    ``extra_state`` is the trainer state (optimizer, scheduler, epoch, RNG states, best metric): tensors,
    numbers, strings, lists and dicts only, so it loads with ``torch.load(weights_only=True)``.
    Returns the weights path.
    """
    import torch
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    path = io.atomic_write_bytes(directory / f"{tag}.safetensors", save(tensors, metadata=dict(metadata or {})))
    if extra_state is not None:
        buf = _bytes_io.BytesIO()
        torch.save(dict(extra_state), buf)
        io.atomic_write_bytes(directory / f"{tag}_state.pt", buf.getvalue())
    return path


def load_trainer_state(directory: str | os.PathLike, tag: str = "last") -> dict:
    """Load ``<directory>/<tag>_state.pt`` with ``weights_only=True`` (a checkpoint is data, never code)."""
    import torch

    from fer_core.models.weights import load_error

    path = Path(directory) / f"{tag}_state.pt"
    if not path.exists():
        raise FileNotFoundError(f"no trainer state {path}; the run cannot be resumed from {tag!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated zips and refused pickles raise many types
        raise CheckpointError(
            f"cannot read the trainer state {path} ({load_error(err)}); it is "
            "damaged, or a pickle that needs code to load, which is refused on purpose. The run cannot be resumed "
            "from it; its weights (.safetensors) are separate files.") from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a trainer state (a dict)")
    return state


def load_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load safetensors weights into ``model`` strictly; the error names missing, unexpected and mis-shaped keys."""
    from fer_core.models.weights import load_state_dict, read_state_dict

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"weights file {path} does not exist")
    load_state_dict(model, read_state_dict(path), source=str(path))
    return model


def checkpoint_class_names(path: str | os.PathLike) -> list[str] | None:
    """Class names stored in a safetensors checkpoint's metadata by the trainer (None if absent)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {path} ({err}): the file is damaged or truncated; train the run "
                              "again, or resume it to write new weights") from None
    return json.loads(meta["class_names"]) if "class_names" in meta else None


# --------------------------------------------------------------------------------------------- data
def load_split(data: DataConfig, split: str, subset: str | None = None, *, placement: str = "auto",
               device: torch.device | str = "cpu", workers: int = 0) -> tuple[Dataset, Any, torch.Tensor]:
    """Build one split (and subset) of the configured data set and put its images where ``placement`` says
    (:mod:`fer_core.batches`): ``host`` holds them as uint8 ``N x C x H x W`` in memory (``materialize``),
    ``device`` also moves them to ``device``, ``stream`` reads them batch by batch with ``workers`` processes, and
    ``auto`` chooses by size and logs why. Returns ``(data set, images, labels)``."""
    import torch

    from fer_core.batches import StreamedImages, choose_placement, estimated_bytes, place
    from fer_core.data import build_dataset, materialize

    ds = build_dataset(data.name, root=data.root, split=split, subset=None if subset == "all" else subset,
                       **data.options)
    choice = choose_placement(estimated_bytes(ds), device, placement)
    if len(ds):
        logger.info("%s %s%s: %d images held %s: %s", data.name, split, "" if subset in (None, "all") else
                    f"/{subset}", len(ds), {"device": f"on {device}", "host": "in host memory",
                                            "stream": f"nowhere, streamed by {workers} worker(s)"}[choice.placement],
                    choice.reason)
    if choice.placement == "stream" and len(ds):
        return ds, StreamedImages(ds, workers), torch.as_tensor(ds.labels, dtype=torch.long)
    images, labels = materialize(ds)
    size = getattr(ds, "image_size", None)
    if size and len(images) and tuple(images.shape[-2:]) != (size, size):
        warnings.warn(f"{data.name} {split}: materialize returned {tuple(images.shape[-2:])} images for "
                      f"image_size={size}; a stale cache? (they are resized to the model's input anyway)",
                      stacklevel=2)
    return ds, place(images, choice, device), labels.long()


# --------------------------------------------------------------------------------------------- models
def model_from_config(cfg: Config, class_names: Sequence[str]) -> nn.Module:
    """Create the model a config describes, with one logit per class name."""
    from fer_core.models import create_model

    m = cfg.model
    kwargs = dict(m.options)
    if m.weights_path:
        kwargs["weights_path"] = m.weights_path
    pretrained = False if m.init_from else m.pretrained  # init_from sets the backbone; the head starts new
    return create_model(m.name, num_classes=len(class_names), class_names=class_names, pretrained=pretrained,
                        input_size=m.input_size, **kwargs)


def _without_weights(cfg: Config) -> Config:
    """``cfg`` with nothing to download or read: its architecture only (the weights come from elsewhere)."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"pretrained": False, "weights_path": None})})


def check_model(cfg: Config, seen: dict[str, list[str]] | None = None, *,
                root: str | os.PathLike | None = None) -> list[str]:
    """What is wrong with the model a config describes, found before any run exists, one line per problem naming
    the key: options its builder refuses (``model.options: ...``), a method that needs something the model
    lacks (SCN's importance weights, the region-biased loss's part attention), and a ``model.init_from`` that is
    no finished run (under ``root``, default the runs folder) or weights file, or whose backbone does not fit
    (:func:`check_init_from`).

    The model is built once on the ``meta`` device (no memory, no weights), with one logit per class of the
    configured data set (or the model's own head size when only the data set's files tell). ``seen`` caches the
    answer per distinct model section and method, for a sweep's many points.
    """
    import torch

    from fer_core.data import dataset_classes

    m = cfg.model
    needs = ("train.method: scn needs a model with importance weights (model.name: scn)"
             if cfg.train.method.name == "scn" else
             "train.region_bias needs a model with part attention (model.name: region_attention)"
             if cfg.train.region_bias.weight > 0 else None)
    key = json.dumps([m.name, m.input_size, m.options, cfg.data.name, cfg.data.options, needs, m.init_from,
                      None if root is None else str(root)], sort_keys=True, default=str)
    seen = {} if seen is None else seen
    if key in seen:
        return seen[key]
    seen[key] = problems = []
    try:
        classes = dataset_classes(cfg.data.name, cfg.data.options)
    except (TypeError, ValueError):  # bad data options: the launch check reports them on their own
        classes = None
    if classes is None:
        from fer_core.models import model_info

        classes = model_info(m.name).class_names
    try:
        with torch.device("meta"):
            model = model_from_config(_without_weights(cfg), classes)
    except (TypeError, ValueError) as err:
        problems.append(f"model.options: model {m.name} with options {format_value(m.options)}: {err}")
        return problems
    except Exception:  # noqa: BLE001 - a builder that cannot run on meta: the run itself will tell
        return problems
    if needs and not hasattr(model, "forward_attention"):
        problems.append(f"{needs}; model.name is {m.name}")
    if m.init_from:
        problems += check_init_from(model, m.init_from, root)
    return problems


# --------------------------------------------------------------------------------------------- starting from a run
INIT_CHECKPOINT = "best"
"""The checkpoint of a run that ``model.init_from`` starts from: the weights the run was evaluated with."""


@dataclass(frozen=True)
class InitSource:
    """Where ``model.init_from`` points: a finished run's ``checkpoints/best.safetensors`` or a weights file."""

    value: str
    path: Path
    run_dir: Path | None = None

    @property
    def label(self) -> str:
        return f"run {self.run_dir.name}" if self.run_dir is not None else f"weights file {self.path}"


def init_source(value: str, root: str | os.PathLike | None = None) -> InitSource:
    """Resolve ``model.init_from``: a ``.safetensors`` file, else a run (a folder, or an id under ``root``, default
    the runs folder) that is finished and has its best weights.

    Raises:
        FileNotFoundError: no such file or run, or the run has no weights; ValueError: the run is not finished.
    """
    if str(value).endswith(".safetensors"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist; give an existing .safetensors file or a "
                                    "finished run (its id or folder)")
        return InitSource(str(value), path.resolve())
    try:
        run_dir = io.resolve_run_dir(value, root)
    except (FileNotFoundError, ValueError) as err:
        raise FileNotFoundError(f"{err}; give a finished run (its id or folder) or a .safetensors weights "
                                "file") from None
    state = io.run_state(run_dir)
    if state != "done":
        raise ValueError(f"run {run_dir.name} is {state}; start from a finished (done) run")
    path = weights_path(run_dir, INIT_CHECKPOINT)
    if not path.is_file():
        raise FileNotFoundError(f"run {run_dir.name} has no {CHECKPOINTS}/{path.name}; evaluate or retrain it, or "
                                "pick another run")
    return InitSource(str(value), path, run_dir)


def _source_model(source: InitSource) -> nn.Module:
    """The model of a source run, built on the ``meta`` device (its architecture, no memory)."""
    import torch

    cfg = load_config(source.run_dir / "config.yaml")
    classes = checkpoint_class_names(source.path)
    if classes is None:
        from fer_core.data import dataset_classes
        from fer_core.models import model_info

        classes = dataset_classes(cfg.data.name, cfg.data.options) or model_info(cfg.model.name).class_names
    with torch.device("meta"):
        return model_from_config(_without_weights(cfg), classes)


def _source_backbone(source: InitSource, keys: Sequence[str], *, read: bool) -> tuple[dict, list[str], bool, str]:
    """The source's backbone: ``(tensors by relative key, or their shapes when not ``read``; the source's keys not
    used; whether the source's backbone must fit exactly; its description)``.

    A run's backbone is what its model declares (:func:`fer_core.models.weights.backbone_state`), and all of it must
    find a place here; a file says nothing about its model, so its tensors are looked up by key
    (:func:`~fer_core.models.weights.pick_backbone`) and the rest is reported as not used.
    """
    from fer_core.models.weights import backbone_location, backbone_name, backbone_state, pick_backbone, read_state_dict

    if source.run_dir is not None:
        model = _source_model(source)
        label = f"{source.label} ({backbone_name(model)})"
        if not read:
            return backbone_state(model), [], True, label
        state = read_state_dict(source.path)
        found = backbone_state(model, state)
        prefix = backbone_location(model)[0]
        unused = sorted(k for k in state if not (k.startswith(prefix) and k[len(prefix):] in found))
        return found, unused, True, label
    if read:
        found, unused = pick_backbone(read_state_dict(source.path), keys)
        return found, unused, False, source.label
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(source.path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read {source.path} ({err}): is it a complete .safetensors file?") from None
    found, unused = pick_backbone(shapes, keys)
    return found, unused, False, source.label


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_INIT_ADVICE = ("Start from a run (or file) with the same backbone: the same model.name (model.options.backbone for "
                "scn and the region nets) and options; or unset model.init_from")


def _misfit(label: str, model: nn.Module, problem: str) -> str:
    from fer_core.models.weights import backbone_name

    return f"model.init_from: the backbone of {label} does not fit this model's ({backbone_name(model)}): {problem}. " \
           f"{_INIT_ADVICE}"


def check_init_from(model: nn.Module, value: str, root: str | os.PathLike | None = None) -> list[str]:
    """What keeps ``model.init_from: value`` from initialising ``model``'s backbone, found before any run exists
    (``model`` may be on the ``meta`` device): a missing file or run, a run not finished, a backbone that does not
    fit. One line per problem, naming the key."""
    from fer_core.models.weights import WeightsMismatchError, backbone_location, backbone_mismatch, backbone_state

    if not backbone_location(model)[1]:
        return [f"model.init_from: model {model.cfg.name} declares no backbone (ModelConfig.backbone), so it cannot "
                "start from another run; unset model.init_from"]
    target = backbone_state(model)
    try:
        source = init_source(value, root)
        found, _, exact, label = _source_backbone(source, list(target), read=False)
    except (FileNotFoundError, ValueError, WeightsMismatchError) as err:  # CheckpointError, ConfigError are ValueErrors
        return [f"model.init_from: {err}"]
    problem = backbone_mismatch(target, found, exact=exact)
    return [_misfit(label, model, problem)] if problem else []


def init_backbone(model: nn.Module, value: str, root: str | os.PathLike | None = None) -> LoadReport:
    """Initialise ``model``'s backbone from ``model.init_from``'s source, strictly, and return the
    :class:`~fer_core.models.weights.LoadReport` (the trainer logs it as ``model.load_report``).

    The rule: take the source's backbone tensors (for a run, the keys under its model's ``cfg.backbone``, looked
    through a wrapper such as SCN or the region nets to the registered model inside, ``backbone.``; for a file, each
    key ``k`` of this backbone as ``k`` or ``backbone.k``) and put them under this model's backbone (behind
    ``backbone.`` when this model is such a wrapper). Every tensor of this backbone must come from the source with
    its shape, and every tensor of a run's backbone must find its place here; the head stays new, and what the
    source holds besides (its head) is reported as not used. The source's SHA-256 is in the report's source.

    Raises:
        FileNotFoundError, ValueError: as :func:`init_source`.
        WeightsMismatchError: the backbones do not fit; the message lists the keys.
    """
    from fer_core.models.weights import WeightsMismatchError, backbone_mismatch, backbone_state, load_backbone

    source = init_source(value, root)
    target = backbone_state(model)
    found, unused, exact, label = _source_backbone(source, list(target), read=True)
    problem = backbone_mismatch(target, found, exact=exact)
    if problem:
        raise WeightsMismatchError(_misfit(label, model, problem))
    digest = _sha256(source.path)
    report = load_backbone(model, found, source_name=f"{label}, {source.path.name} sha256 {digest[:16]}",
                           unused=unused, exact=exact)
    logger.info("model.init_from %s: %d backbone tensors from %s (sha256 %s); new (the head): %s; not used from the "
                "source: %s", value, len(report.matched), source.path, digest, ", ".join(report.new) or "none",
                ", ".join(report.dropped) or "none")
    return report


def load_run_model(run: str | os.PathLike, *, weights: str = "best", device: str | torch.device = "cpu") -> nn.Module:
    """The model of a run (a folder or an id under the runs folder) with its ``checkpoints/<weights>`` loaded
    strictly, in eval mode on ``device``; ``model.cfg.class_names`` are the run's classes."""
    import torch

    run_dir = io.resolve_run_dir(run)
    cfg = load_config(run_dir / "config.yaml")
    path = weights_path(run_dir, weights)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; the run has no {weights!r} weights yet")
    classes = checkpoint_class_names(path)
    if classes is None:  # weights saved without metadata: ask the data set
        from fer_core.data import build_dataset

        classes = build_dataset(cfg.data.name, root=cfg.data.root, split="train", **cfg.data.options).classes
    model = model_from_config(_without_weights(cfg), classes)
    load_weights(model, path)
    model.to(device, memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format)
    return model.eval()


# --------------------------------------------------------------------------------------------- calibration
def weights_digest(run_dir: str | os.PathLike, weights: str = "best") -> str:
    """SHA-256 of a run's ``checkpoints/<weights>.safetensors`` (``calibration.json`` records it, so a temperature
    is never applied to weights it was not fitted for)."""
    return _sha256(weights_path(run_dir, weights))


def stored_temperature(run: str | os.PathLike, weights: str = "best", *, required: bool = False) -> float | None:
    """The temperature in a run's ``calibration.json`` for its ``weights``.

    Without ``required``, None when the run has none, or when it was fitted for other weights (a warning is logged);
    with ``required`` those cases raise, saying to run ``python -m fer_core calibrate RUN``.

    Raises:
        FileNotFoundError: ``required`` and the run has no ``calibration.json``.
        ValueError: ``required`` and the temperature was fitted for another weights file (another tag, or weights
            written since), or ``calibration.json`` cannot be read.
    """
    run_dir = io.resolve_run_dir(run)
    found = io.read_calibration(run_dir)
    fix = f"run `python -m fer_core calibrate {run_dir.name}`" + ("" if weights == "best" else f" --weights {weights}")
    if found is None:
        if required:
            raise FileNotFoundError(f"run {run_dir.name} has no {io.CALIBRATION} (no temperature fitted yet); {fix} to "
                                    "fit one on its validation split")
        return None
    problem = None
    if found.get("weights", "best") != weights:
        problem = f"was fitted for its {found.get('weights')!r} weights, not {weights!r}"
    elif found.get("weights_sha256") and weights_path(run_dir, weights).exists() \
            and found["weights_sha256"] != weights_digest(run_dir, weights):
        problem = f"was fitted for other {weights!r} weights than the run has now"
    if problem:
        message = f"the temperature in {io.calibration_path(run_dir)} {problem}; {fix} to fit it again"
        if required:
            raise ValueError(message)
        logger.warning("%s", message)
        return None
    return float(found["temperature"])
