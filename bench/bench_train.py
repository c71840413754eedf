"""Training speed: FER Lab's path against a reference-style pipeline, a RAF-DB-sized job, evaluation, scaling.

Everything below is measured in one run, on one device, so the ratios carry over to other machines.

1. **Throughput** (images/s in the steady state: after warm-up batches; CUDA timing is synchronised) of
   ``small_cnn``, ``mini_xception``, ``resnet18`` and ``patt_lite`` at their default input sizes, random init:

   * *FER Lab*: the training faces as one uint8 tensor (``materialize`` of SynthFACS at 100 x 100, like RAF-DB's
     aligned faces; moved to the GPU on CUDA), batches indexed from it, augmented on the device by
     ``BatchTransform`` and trained by ``fer_core.train.train_one_epoch`` with the method ``build_method`` makes
     and the optimiser ``build_optimizer`` makes, as the engine does (channels-last, as the engine's default);
   * *reference*: the SCN code's way: the same faces written once as JPEG files, a Dataset that opens each with
     PIL and applies torchvision transforms (Resize, RandomHorizontalFlip, ToTensor, Normalize,
     RandomErasing(scale=(0.02, 0.25))), a shuffling DataLoader with ``--workers`` processes (pinned memory on
     CUDA) and a plain loop (forward, cross-entropy, backward, ``torch.optim.SGD`` step).

   Same model, batch size, optimiser settings (SGD lr 0.01, momentum 0.9, weight decay 5e-4), augmentations
   (horizontal flip, random erasing with p 0.5 and the same scale) and precision (bf16 autocast on CUDA, fp32 on
   the CPU). Also measured, to say what limits each number: each path's parts alone (FER Lab's augmentation;
   the reference's DataLoader) and each path's model step alone on one fixed batch (its ceiling), and the share
   of the reference loop's time spent blocked waiting for the next batch. The paths and ceilings are measured in
   alternation over ``--rounds`` rounds, each keeping its best, so a neighbour's load hits them alike.
2. **A RAF-DB-sized job** through ``fer_core.train.train`` in a child process: 12,271 training faces (1,534 val,
   3,068 test) rendered at 100 x 100 and resized to 224 by the transform, with the batch size, optimiser,
   augmentation and schedule of ``configs/recipes/scn_rafdb.yaml``; ResNet-18 (and on CUDA also the recipe's own
   SCN model and method). A few epochs are measured and the recipe's epoch count extrapolated from them; the
   achieved model FLOP/s (training = 3 x forward FLOPs, forward = 2 x the MACs of ``fer_core.models.profile``)
   against the GPU's dense bf16 peak. On the CPU this runs at a tiny size unless ``--full``.
3. **Evaluation** of the test split and its subsets (clean, occlusion, pose30, pose45, ambiguous) with the
   engine's ``evaluate_model`` (and ``predict_logits`` alone), and the peak memory of the training run of 2
   (its process's peak RSS, ``VmHWM``: see :func:`peak_rss_kb`; ``torch.cuda.max_memory_allocated`` on CUDA).
4. **Scaling** of the FER Lab path with the batch size and with the data set size (one model).
5. **Profile** (``torch.profiler``) of a few FER Lab batches: the top operators by self time.

::

    python bench/bench_train.py [--device cpu|cuda] [--quick] [--full] [--out bench/results/train_<device>.md]

``--quick`` (about a minute on a 2-core CPU) uses small counts and the small models only: a smoke run, not a
measurement. One-off costs (rendering or reading the SynthFACS cache, writing the JPEGs) are reported but are in
none of the numbers. The header says whether other processes used the CPU during the run (from ``/proc/stat``):
on a shared CPU every number is a lower bound.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fer_core.config import TrainConfig, load_config  # noqa: E402
from fer_core.data import build_dataset, materialize  # noqa: E402
from fer_core.evaluate import evaluate_model, predict_logits  # noqa: E402
from fer_core.methods import TrainData, build_method  # noqa: E402
from fer_core.models import create_model, model_info  # noqa: E402
from fer_core.models.profile import count_macs  # noqa: E402
from fer_core.optim import build_optimizer  # noqa: E402
from fer_core.runs import load_split  # noqa: E402
from fer_core.train import Precision, train, train_one_epoch  # noqa: E402
from fer_core.transforms import BatchTransform  # noqa: E402

RECIPE = ROOT / "configs" / "recipes" / "scn_rafdb.yaml"
FACE_SIZE = 100  # RAF-DB's aligned faces are 100 x 100
RAFDB_SIZES = {"train": 12271, "val": 1534, "test": 3068}
SMALL_MODELS = ("small_cnn", "mini_xception")
ALL_MODELS = ("small_cnn", "mini_xception", "resnet18", "patt_lite")
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4
ERASING = (0.5, (0.02, 0.25))  # probability, area fraction range: FER Lab and torchvision alike
# Dense bf16 tensor-core peaks (TFLOP/s) by device name, most specific first; --peak-tflops overrides.
PEAK_BF16_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 80GB HBM3", 989.0), ("H100 SXM", 989.0),
                    ("A100", 312.0))
GOAL_CPU_RATIO = 2.0
GOAL_H100_RATE, GOAL_H100_RATIO = 8000.0, 3.0


# --------------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    """What to run; defaults depend on the device and --quick / --full, and any flag overrides them."""

    device: torch.device
    quick: bool
    full: bool
    models: list[str]
    batch_size: int
    workers: int
    warmup: int            # batches before timing starts (heavy models on the CPU: 1)
    min_steps: int         # timed batches at least
    max_steps: int         # timed batches at most
    target_s: float        # timed seconds per measurement (stops after min_steps once this is reached)
    rounds: int            # section 1: rounds of alternating measurements, the best kept (224 x 224 on CPU: <= 2)
    train_faces: int       # faces in the throughput runs' split (the largest scaling size is added if larger)
    test_faces: int
    scaling_model: str
    scaling_batches: list[int]
    scaling_sizes: list[int]
    job_models: list[str]
    job_faces: dict[str, int]
    job_epochs: int        # epochs measured
    job_total_epochs: int  # epochs extrapolated to (the recipe's)
    eval_models: list[str]
    profile_model: str
    profile_steps: int
    compile: bool
    sections: list[str]
    peak_tflops: float | None
    workdir: Path | None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def heavy(self, input_size: tuple[int, ...]) -> bool:
        """A model too slow on the CPU for more than one warm-up and two timed batches (224 x 224 input)."""
        return not self.cuda and not self.quick and input_size[-1] >= 160


SECTIONS = ("throughput", "job", "eval", "scaling", "profile")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    ap.add_argument("--quick", action="store_true", help="small counts, small models, few batches (~1 min on CPU)")
    ap.add_argument("--full", action="store_true", help="on the CPU: the RAF-DB-sized job at full size (hours), "
                                                        "ResNet-18 in the evaluation")
    ap.add_argument("--out", type=Path, default=None, help="markdown file (default bench/results/train_<device>"
                                                           "[_quick].md)")
    ap.add_argument("--models", default=None, help="comma-separated models for the throughput section")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="reference DataLoader workers (default: CPU cores)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up batches before timing")
    ap.add_argument("--min-steps", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--target-seconds", type=float, default=None, help="timed seconds per measurement")
    ap.add_argument("--rounds", type=int, default=None, help="section 1: rounds of alternating measurements, best "
                                                              "kept (default 3; 1 with --quick)")
    ap.add_argument("--train-faces", type=int, default=None)
    ap.add_argument("--test-faces", type=int, default=None)
    ap.add_argument("--job-epochs", type=int, default=None, help="epochs of the RAF-DB-sized job to measure (>= 2)")
    ap.add_argument("--extrapolate-epochs", type=int, default=None, help="default: the SCN recipe's epochs")
    ap.add_argument("--job-models", default=None)
    ap.add_argument("--job-faces", default=None, help="TRAIN,VAL,TEST faces of the job (default: RAF-DB's on CUDA "
                                                      "and with --full, a tiny size on the CPU)")
    ap.add_argument("--eval-models", default=None)
    ap.add_argument("--scaling-batches", default=None, help="comma-separated batch sizes")
    ap.add_argument("--scaling-sizes", default=None, help="comma-separated data set sizes")
    ap.add_argument("--compile", action="store_true", help="FER Lab path and job with torch.compile (if the engine "
                                                           "offers train.compile)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, if not in the table")
    ap.add_argument("--workdir", type=Path, default=None, help="folder for the JPEGs and runs (default: a temp dir)")
    ap.add_argument("--job-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.job_child is not None:
        return args, None  # type: ignore[return-value]
    name = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but this torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        ap.error(f"--device must be cpu or cuda[:N] (got {name!r})")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    recipe = load_config(RECIPE)
    cuda = device.type == "cuda"

    def ints(text: str | None, default: list[int]) -> list[int]:
        return [int(v) for v in text.split(",")] if text else default

    def names(text: str | None, default: list[str]) -> list[str]:
        return [v.strip() for v in text.split(",") if v.strip()] if text else default

    if args.quick:
        d = dict(models=list(SMALL_MODELS), batch_size=32, warmup=1, min_steps=2, max_steps=40 if cuda else 6,
                 target_s=0.5, train_faces=512, test_faces=128, scaling_model="small_cnn", scaling_batches=[16, 32],
                 scaling_sizes=[128, 512], job_models=["small_cnn"],
                 job_faces={"train": 128, "val": 32, "test": 64}, job_epochs=2, eval_models=["small_cnn"],
                 profile_model="small_cnn", profile_steps=2)
    elif cuda:
        d = dict(models=list(ALL_MODELS), batch_size=recipe.train.batch_size, warmup=10, min_steps=20,
                 max_steps=1000, target_s=2.0, train_faces=RAFDB_SIZES["train"], test_faces=RAFDB_SIZES["test"],
                 scaling_model="resnet18", scaling_batches=[32, 64, 128, 256],
                 scaling_sizes=[1000, 4000, RAFDB_SIZES["train"]], job_models=["resnet18", "scn"],
                 job_faces=dict(RAFDB_SIZES), job_epochs=3, eval_models=["resnet18"], profile_model="resnet18",
                 profile_steps=20)
    else:
        d = dict(models=list(ALL_MODELS), batch_size=recipe.train.batch_size, warmup=2, min_steps=3, max_steps=200,
                 target_s=2.0, train_faces=RAFDB_SIZES["train"], test_faces=RAFDB_SIZES["test"],
                 scaling_model="small_cnn", scaling_batches=[32, 64, 128, 256],
                 scaling_sizes=[1000, 4000, RAFDB_SIZES["train"]], job_models=["resnet18"],
                 job_faces=dict(RAFDB_SIZES) if args.full else {"train": 128, "val": 64, "test": 64},
                 job_epochs=2, eval_models=["small_cnn", "resnet18"] if args.full else ["small_cnn"],
                 profile_model="small_cnn", profile_steps=5)
    s = Settings(
        device=device, quick=args.quick, full=args.full, models=names(args.models, d["models"]),
        batch_size=args.batch_size or d["batch_size"], workers=cores if args.workers is None else args.workers,
        warmup=d["warmup"] if args.warmup is None else args.warmup,
        min_steps=args.min_steps or d["min_steps"], max_steps=args.max_steps or d["max_steps"],
        target_s=d["target_s"] if args.target_seconds is None else args.target_seconds,
        rounds=args.rounds or (1 if args.quick else 3),
        train_faces=args.train_faces or d["train_faces"], test_faces=args.test_faces or d["test_faces"],
        scaling_model=d["scaling_model"], scaling_batches=ints(args.scaling_batches, d["scaling_batches"]),
        scaling_sizes=ints(args.scaling_sizes, d["scaling_sizes"]),
        job_models=names(args.job_models, d["job_models"]),
        job_faces=dict(zip(("train", "val", "test"), ints(args.job_faces, []), strict=True)) if args.job_faces
        else d["job_faces"],
        job_epochs=args.job_epochs or d["job_epochs"],
        job_total_epochs=args.extrapolate_epochs or recipe.train.total_epochs,
        eval_models=names(args.eval_models, d["eval_models"]), profile_model=d["profile_model"],
        profile_steps=d["profile_steps"], compile=args.compile,
        sections=names(args.only, list(SECTIONS)), peak_tflops=args.peak_tflops, workdir=args.workdir)
    if args.train_faces and not args.scaling_sizes:
        s.scaling_sizes = sorted({min(n, args.train_faces) for n in s.scaling_sizes})
    bad = [x for x in s.sections if x not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {bad}; valid: {', '.join(SECTIONS)}")
    if s.job_epochs < 2:
        ap.error("--job-epochs must be >= 2 (the check that the job trained compares the weights after epoch 1 "
                 "with the last ones)")
    if s.compile and "compile" not in TrainConfig.model_fields:
        ap.error("--compile: this engine has no train.compile")
    if args.out is None:
        args.out = ROOT / "bench" / "results" / f"train_{device.type}{'_quick' if args.quick else ''}.md"
    return args, s


# --------------------------------------------------------------------------------------------- machine
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


class CpuShare:
    """How much of the machine's CPU time other processes used between construction and :meth:`others`:
    ``/proc/stat`` busy time (steal included) minus this process's and its reaped children's CPU time."""

    def __init__(self):
        self.load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        except (OSError, ValueError, IndexError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        own = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for f in ("ru_utime", "ru_stime"))
        total = sum(values) / tick
        return total, (sum(values) - values[3] - values[4]) / tick, own

    def others(self) -> float | None:
        """Fraction of the machine's CPU capacity used by other processes (None where unknown)."""
        end = self._read()
        if self.start is None or end is None or end[0] <= self.start[0]:
            return None
        busy = end[1] - self.start[1]
        own = end[2] - self.start[2]
        return max(0.0, busy - own) / (end[0] - self.start[0])


def sync_fn(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def param_vector(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().float().reshape(-1).cpu() for p in model.parameters()])


def check_trained(what: str, before: torch.Tensor, model: nn.Module, loss: float) -> None:
    """Fail loudly if a measured run did not really train: a non-finite loss or unchanged weights."""
    if not math.isfinite(loss):
        raise AssertionError(f"{what}: the loss is {loss}")
    if torch.equal(before, param_vector(model)):
        raise AssertionError(f"{what}: no parameter changed: nothing was trained")


# --------------------------------------------------------------------------------------------- data
@dataclass
class Faces:
    images: torch.Tensor          # uint8 N x 3 x 100 x 100 on the host
    labels: torch.Tensor          # int64 N
    class_names: list[str]
    paths: list[Path] = field(default_factory=list)  # the same faces as JPEG files (reference pipeline)


def synth_split(split: str, n: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    ds = build_dataset("synthfaces", split=split, image_size=FACE_SIZE, **{f"{split}_size": n})
    images, labels = materialize(ds)
    return ds, images, labels


def write_jpegs(images: torch.Tensor, folder: Path) -> list[Path]:
    """The faces as RAF-DB-style aligned JPEGs (quality 95), written once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images.permute(0, 2, 3, 1).numpy()):
        path = folder / f"train_{i + 1:05d}_aligned.jpg"
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths


class JpegFaces(Dataset):
    """The reference pipelines' Dataset: open each JPEG with PIL, apply torchvision transforms."""

    def __init__(self, paths: list[Path], labels: list[int], transform: Callable):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            image = im.convert("RGB")
        return self.transform(image), self.labels[i]


def reference_transform(model_cfg) -> Callable:
    """SCN's training transforms (ToPILImage aside), with the flip as torchvision does it; grey models convert
    to one channel first."""
    from torchvision import transforms as T

    channels, h, w = model_cfg.input_size
    steps = [T.Grayscale(num_output_channels=1)] if channels == 1 else []
    steps += [T.Resize((h, w)), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(model_cfg.mean, model_cfg.std),
              T.RandomErasing(p=ERASING[0], scale=ERASING[1])]
    return T.Compose(steps)


# --------------------------------------------------------------------------------------------- measuring
@dataclass
class Rate:
    images: int
    seconds: float
    wait_s: float | None = None  # reference: host time blocked in next(loader)

    @property
    def per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def wait_share(self) -> float | None:
        return None if self.wait_s is None else self.wait_s / self.seconds


def timed_steps(s: Settings, step: Callable[[], Any], batch: int, min_steps: int, target_s: float,
                max_steps: int, waits: list[float] | None = None) -> Rate:
    """Time ``step`` (one batch) until ``target_s`` has passed (at least ``min_steps``, at most ``max_steps``
    batches), synchronised before and after on CUDA."""
    sync = sync_fn(s.device)
    sync()
    if waits is not None:
        waits.clear()
    t0 = time.perf_counter()
    steps = 0
    while True:
        step()
        steps += 1
        if steps >= max_steps or (steps >= min_steps and time.perf_counter() - t0 >= target_s):
            break
    sync()
    return Rate(steps * batch, time.perf_counter() - t0, None if waits is None else sum(waits))


class Runner:
    """One thing measured in section 1: ``warm()`` once, then ``measure()`` once per round, ``check()`` at the end
    (that it really trained). Runners stay alive across rounds, so rounds need no new warm-up."""

    def __init__(self, s: Settings, heavy: bool):
        self.s, self.heavy = s, heavy
        self.warmup, self.min_steps = (1, 1) if heavy else (s.warmup, s.min_steps)

    def warm(self) -> None:
        raise NotImplementedError

    def measure(self) -> Rate:
        raise NotImplementedError

    def check(self) -> None:
        pass


class FerLabPath(Runner):
    """FER Lab's training path for one model, as ``fer_core.train._train`` builds it: the split as one uint8
    tensor (on the GPU for a CUDA run), ``build_method``, ``build_optimizer``, ``Precision``,
    ``BatchTransform.from_config`` and ``train_one_epoch``."""

    def __init__(self, s: Settings, name: str, faces: Faces, batch_size: int, workdir: Path, heavy: bool = False):
        super().__init__(s, heavy)
        self.name, self.batch_size = name, batch_size
        self.cfg = bench_config(s, name, batch_size)
        torch.manual_seed(0)
        model = create_model(name, num_classes=len(faces.class_names), class_names=faces.class_names,
                             pretrained=False)
        self.memory_format = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        self.model = model.to(s.device, memory_format=self.memory_format)
        self.images = faces.images.to(s.device) if s.cuda else faces.images
        data = TrainData(images=self.images, labels=faces.labels, clean_labels=faces.labels,
                         class_names=faces.class_names)
        self.method = build_method(self.cfg, data, workdir, s.device, None, write_files=False)
        self.optimizer = build_optimizer(self.model, self.cfg.train.optimizer)
        self.precision = Precision(self.cfg.train.precision, s.device)
        self.transform = BatchTransform.from_config(self.model.cfg, self.cfg.train.augment, device=s.device,
                                                    channels_last=self.cfg.train.channels_last)
        self.net = None
        if s.compile:
            from fer_core.distributed import SINGLE_PROCESS
            from fer_core.train import TrainNet

            self.net = TrainNet(self.model, SINGLE_PROCESS, s.device, compile=True)
        self.epoch = 0
        self.before = param_vector(self.model)
        self.last_loss = float("nan")
        self.available = len(self.images) // batch_size
        if self.available < 1:
            raise ValueError(f"{len(self.images)} faces are fewer than one batch of {batch_size}")

    def run(self, n_images: int) -> None:
        """One call of ``train_one_epoch`` over the first ``n_images`` faces (their order drawn at random)."""
        gen = torch.Generator().manual_seed(1000 + self.epoch)
        out = train_one_epoch(self.model, self.method, self.optimizer, self.images[:n_images], self.transform,
                              batch_size=self.batch_size, generator=gen, epoch=self.epoch, precision=self.precision,
                              net=self.net)
        self.epoch += 1
        self.last_loss = out["train_loss"]

    def warm(self) -> None:
        if self.warmup:
            self.run(min(self.warmup, self.available) * self.batch_size)
        sync_fn(self.s.device)()

    def measure(self) -> Rate:
        """Calls of whole batches until ``target_s`` (synchronised after each call)."""
        sync = sync_fn(self.s.device)
        s, bs = self.s, self.batch_size
        sync()
        steps, seconds = 0, 0.0
        chunk = min(self.min_steps, self.available)
        while True:
            t = time.perf_counter()
            self.run(chunk * bs)
            sync()
            seconds += time.perf_counter() - t
            steps += chunk
            if seconds >= s.target_s or steps >= s.max_steps:
                break
            per = seconds / steps
            chunk = int(min(self.available, s.max_steps - steps, max(1, math.ceil((s.target_s - seconds) / per))))
        return Rate(steps * bs, seconds)

    def measure_epoch(self, n_images: int) -> Rate:
        """One whole epoch over ``n_images`` faces, after a warm-up call that has the same last-batch size."""
        bs = self.batch_size
        tail = n_images % bs
        self.run(min(n_images, max(1, self.s.warmup) * bs + tail))
        sync = sync_fn(self.s.device)
        sync()
        t = time.perf_counter()
        self.run(n_images)
        sync()
        return Rate(n_images, time.perf_counter() - t)

    def check(self) -> None:
        check_trained(f"{self.name} FER Lab path", self.before, self.model, self.last_loss)


def bench_config(s: Settings, name: str, batch_size: int):
    """The run config of the FER Lab path: the same augmentation and optimiser as the reference pipeline."""
    train_section: dict[str, Any] = {
        "batch_size": batch_size, "device": str(s.device), "precision": "bf16" if s.cuda else "fp32",
        "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY},
        "augment": {"hflip": True, "crop_padding": 0, "random_erasing": ERASING[0],
                    "erasing_scale": list(ERASING[1])},
    }
    if s.compile:
        train_section["compile"] = True
    return load_config({"name": "bench", "model": {"name": name, "pretrained": False}, "train": train_section})


class StepRunner(Runner):
    """A plain training loop: ``batch()`` gives (x, y) on the device; forward, cross-entropy, backward, step."""

    def __init__(self, s: Settings, name: str, faces: Faces, heavy: bool, *, engine: bool):
        super().__init__(s, heavy)
        self.name, self.engine = name, engine
        torch.manual_seed(0)
        model = create_model(name, num_classes=len(faces.class_names), class_names=faces.class_names,
                             pretrained=False)
        if engine:  # FER Lab's setup: the config's memory format, build_optimizer, Precision
            cfg = bench_config(s, name, s.batch_size)
            self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
            self.model = model.to(s.device, memory_format=self.memory_format)
            self.optimizer = build_optimizer(self.model, cfg.train.optimizer)
            self.autocast = Precision(cfg.train.precision, s.device).autocast
        else:  # the reference's: contiguous, torch.optim.SGD over every parameter, plain autocast
            self.memory_format = torch.contiguous_format
            self.model = model.to(s.device)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM,
                                             weight_decay=WEIGHT_DECAY)
            self.autocast = lambda: torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.cuda)
        self.model.train()
        self.before = param_vector(self.model)
        self.loss: torch.Tensor | None = None
        self.waits: list[float] | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def step(self) -> None:
        x, y = self.batch()
        with self.autocast():
            loss = F.cross_entropy(self.model(x).float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss = loss.detach()

    def warm(self) -> None:
        for _ in range(self.warmup):
            self.step()
        sync_fn(self.s.device)()

    def measure(self) -> Rate:
        return timed_steps(self.s, self.step, self.s.batch_size, self.min_steps, self.s.target_s, self.s.max_steps,
                           self.waits)

    def check(self) -> None:
        what = f"{self.name} {type(self).__name__} ({'FER Lab' if self.engine else 'reference'} setup)"
        check_trained(what, self.before, self.model, float(self.loss) if self.loss is not None else float("nan"))


class ComputeOnly(StepRunner):
    """The model step alone on one fixed, already augmented batch on the device: a path's ceiling."""

    def __init__(self, s: Settings, name: str, faces: Faces, heavy: bool, x: torch.Tensor, y: torch.Tensor, *,
                 engine: bool):
        super().__init__(s, name, faces, heavy, engine=engine)
        self.x, self.y = x.contiguous(memory_format=self.memory_format), y

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def reference_loader(s: Settings, faces: Faces, model_cfg, batches: int, seed: int) -> DataLoader:
    """The reference's DataLoader: shuffled (a RandomSampler, which is what ``shuffle=True`` makes, drawing
    ``batches`` batches), ``--workers`` processes, pinned memory on CUDA."""
    ds = JpegFaces(faces.paths, faces.labels.tolist(), reference_transform(model_cfg))
    sampler = RandomSampler(ds, num_samples=batches * s.batch_size, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, batch_size=s.batch_size, sampler=sampler, num_workers=s.workers, pin_memory=s.cuda,
                      drop_last=True)


class ReferencePath(StepRunner):
    """The reference pipeline: JPEG files, PIL + torchvision transforms in DataLoader workers, a plain loop.

    The iterator (and its workers) lives across rounds. Between rounds the workers fill their prefetch queues while
    the others are measured, so each round first trains on as many batches as the queues hold (unless the model
    is slow enough for the queues to stay full anyway): the timed batches then see the pipeline's steady state."""

    def __init__(self, s: Settings, name: str, faces: Faces, heavy: bool, rounds: int):
        super().__init__(s, name, faces, heavy, engine=False)
        self.depth = max(1, s.workers) * 2  # batches the workers prefetch (prefetch_factor 2)
        batches = self.warmup + rounds * (s.max_steps + (0 if heavy else self.depth))
        self.loader = reference_loader(s, faces, self.model.cfg, batches, seed=0)
        self.iterator = iter(self.loader)
        self.waits = []
        self.measured = 0

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        t = time.perf_counter()
        x, y = next(self.iterator)
        if self.waits is not None:
            self.waits.append(time.perf_counter() - t)
        return x.to(self.s.device, non_blocking=True), y.to(self.s.device, non_blocking=True)

    def measure(self) -> Rate:
        if self.measured and not self.heavy:
            for _ in range(self.depth):
                self.step()
        self.measured += 1
        return super().measure()

    def close(self) -> None:
        self.iterator = None  # the iterator's end stops the workers


def augment_only(s: Settings, fer: FerLabPath) -> Rate:
    """FER Lab's data work alone: index a batch from the uint8 tensor and run ``BatchTransform`` on it."""
    gen = torch.Generator().manual_seed(7)
    n = len(fer.images)

    def step():
        idx = torch.randint(0, n, (fer.batch_size,), generator=gen)
        fer.transform(fer.images[idx], gen)

    step()
    return timed_steps(s, step, fer.batch_size, 2, s.target_s / 2, s.max_steps)


def loader_only(s: Settings, faces: Faces, model_cfg) -> Rate:
    """The reference's data work alone: its DataLoader (decode, transforms, collate, pin) and the copy."""
    loader = reference_loader(s, faces, model_cfg, 2 + s.max_steps, seed=1)
    batches = {"it": iter(loader)}

    def step():
        x, y = next(batches["it"])
        x.to(s.device, non_blocking=True)
        y.to(s.device, non_blocking=True)

    try:
        step()
        step()  # the workers have started
        return timed_steps(s, step, s.batch_size, 2, s.target_s / 2, s.max_steps)
    finally:
        batches.clear()


_MACS: dict[str, int] = {}


def forward_macs(name: str, num_classes: int = 7) -> int:
    if name not in _MACS:
        torch.manual_seed(0)
        model = create_model(name, num_classes=num_classes, pretrained=False)
        _MACS[name] = count_macs(model, tuple(model.cfg.input_size))
    return _MACS[name]


def train_flops_per_image(name: str) -> float:
    """Training FLOPs per image: 3 x the forward pass's (2 FLOPs per MAC)."""
    return 3 * 2 * forward_macs(name)


def free_memory(s: Settings) -> None:
    import gc

    gc.collect()
    if s.cuda:
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------------- sections
def section_throughput(s: Settings, faces: Faces, workdir: Path) -> list[dict]:
    """Per model: the FER Lab path, both ceilings and the reference, measured in alternation over ``s.rounds``
    rounds (fewer for the 224 x 224 models on the CPU), each keeping its best round; then each path's data work
    alone."""
    rows = []
    for name in s.models:
        t0 = time.perf_counter()
        size = tuple(model_info(name).input_size)
        heavy = s.heavy(size)
        rounds = min(s.rounds, 2) if heavy else s.rounds
        fer = FerLabPath(s, name, faces, s.batch_size, workdir, heavy)
        gen = torch.Generator().manual_seed(3)
        idx = torch.randperm(len(fer.images), generator=gen)[:s.batch_size]
        x = fer.transform(fer.images[idx], gen)  # one augmented batch for the ceilings
        y = faces.labels[idx.cpu()].to(s.device)
        runners: dict[str, Runner] = {
            "fer": fer, "ceil_fer": ComputeOnly(s, name, faces, heavy, x, y, engine=True),
            "ceil_ref": ComputeOnly(s, name, faces, heavy, x, y, engine=False),
            "ref": ReferencePath(s, name, faces, heavy, rounds)}
        best: dict[str, Rate] = {}
        try:
            for runner in runners.values():
                runner.warm()
            for _ in range(rounds):
                for key, runner in runners.items():
                    rate = runner.measure()
                    if key not in best or rate.per_s > best[key].per_s:
                        best[key] = rate
            for runner in runners.values():
                runner.check()
        finally:
            runners["ref"].close()  # type: ignore[attr-defined]
        best["aug"] = augment_only(s, fer)
        model_cfg = fer.model.cfg
        del runners, fer, x, y
        free_memory(s)
        best["loader"] = loader_only(s, faces, model_cfg)
        free_memory(s)
        rows.append({"model": name, "input": "x".join(map(str, size)), "macs": forward_macs(name), "rounds": rounds,
                     **best, "seconds": time.perf_counter() - t0})
        print(f"  {name}: FER Lab {best['fer'].per_s:,.1f} img/s, reference {best['ref'].per_s:,.1f} img/s "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return rows


def section_scaling(s: Settings, faces: Faces, workdir: Path) -> dict:
    name = s.scaling_model
    batches = []
    for bs in s.scaling_batches:
        if bs > len(faces.images):
            continue
        fer = FerLabPath(s, name, faces, bs, workdir, s.heavy(tuple(model_info(name).input_size)))
        fer.warm()
        rate = fer.measure()
        fer.check()
        batches.append((bs, rate))
        del fer
        free_memory(s)
        print(f"  {name} batch {bs}: {rate.per_s:,.1f} img/s", flush=True)
    sizes = []
    for n in s.scaling_sizes:
        n = min(n, len(faces.images))
        fer = FerLabPath(s, name, faces, s.batch_size, workdir)
        rate = fer.measure_epoch(n)
        fer.check()
        sizes.append((n, rate))
        del fer
        free_memory(s)
        print(f"  {name} {n} faces: epoch {rate.seconds:.2f} s", flush=True)
    return {"model": name, "batches": batches, "sizes": sizes}


def section_profile(s: Settings, faces: Faces, workdir: Path) -> dict:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    name = s.profile_model
    fer = FerLabPath(s, name, faces, s.batch_size, workdir)
    steps = max(1, min(s.profile_steps, len(fer.images) // s.batch_size))
    fer.run(max(1, s.warmup) * s.batch_size)
    sync = sync_fn(s.device)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.cuda else [])
    t = time.perf_counter()
    with profile(activities=activities) as prof:
        fer.run(steps * s.batch_size)
        sync()
    wall = time.perf_counter() - t
    fer.check()
    events = list(prof.key_averages())

    def dev(e) -> float:
        return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0)

    # operators are CPU-side events; with CUDA the kernels are separate device-side events, and an operator's self
    # CUDA time is that of the kernels it launched: the total GPU time sums the kernels only (as torch's own table)
    ops = [e for e in events if e.device_type == DeviceType.CPU]
    kernels = [e for e in events if e.device_type != DeviceType.CPU and not getattr(e, "is_user", False)]
    cpu_total = sum(e.self_cpu_time_total for e in ops)
    dev_total = sum(dev(e) for e in kernels) or sum(dev(e) for e in ops)
    top_cpu = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    top_dev = []
    if s.cuda:  # the operators by the time of their kernels (the kernels themselves where that is not recorded)
        top_dev = sorted(ops if any(dev(e) > 0 for e in ops) else kernels, key=dev, reverse=True)[:10]
    out = {"model": name, "batch": s.batch_size, "steps": steps, "wall_s": wall, "cpu_total_us": cpu_total,
           "dev_total_us": dev_total,
           "top_cpu": [(e.key, e.count, e.self_cpu_time_total, dev(e)) for e in top_cpu],
           "top_dev": [(e.key, e.count, e.self_cpu_time_total, dev(e)) for e in top_dev]}
    del fer
    free_memory(s)
    return out


def section_eval(s: Settings, class_names: list[str], workdir: Path) -> list[dict]:
    out = []
    for name in s.eval_models:
        cfg = load_config({"name": "bench-eval", "data": {"name": "synthfaces", "options": {
            "image_size": FACE_SIZE, "test_size": s.test_faces}}, "model": {"name": name, "pretrained": False},
            "train": {"device": str(s.device), "batch_size": s.batch_size}, "eval": {"splits": ["test"]}})
        torch.manual_seed(0)
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model = create_model(name, num_classes=len(class_names), class_names=class_names, pretrained=False)
        model = model.to(s.device, memory_format=fmt).eval()
        transform = BatchTransform(model.cfg, device=s.device, channels_last=cfg.train.channels_last)
        batch = max(cfg.train.batch_size, 128)
        _, warm, _ = load_split(cfg.data, "test")
        predict_logits(model, warm[:batch], transform, batch)  # warm-up (and the cuDNN algorithm search)
        sync_fn(s.device)()
        t = time.perf_counter()
        results = evaluate_model(model, cfg, workdir / f"eval-{name}", device=str(s.device))
        total = time.perf_counter() - t
        subsets = []
        for key, r in results.items():
            subset = key.split("/", 1)[1]
            _, images, _ = load_split(cfg.data, "test", subset)
            t = time.perf_counter()
            logits = predict_logits(model, images, transform, batch)
            seconds = time.perf_counter() - t
            if len(logits) != r["n"] or not torch.isfinite(logits).all():
                raise AssertionError(f"evaluation of {name} on test/{subset}: bad logits")
            subsets.append((subset, r["n"], seconds))
        out.append({"model": name, "input": "x".join(map(str, model.cfg.input_size)), "total_s": total,
                    "subsets": subsets})
        print(f"  {name}: test + subsets in {total:.1f} s", flush=True)
        del model
        free_memory(s)
    return out


# --------------------------------------------------------------------------------------------- the job
def job_config(s: Settings, name: str) -> dict:
    """The SCN recipe's training section (batch, optimiser, schedule, augmentation), on SynthFACS at 100 x 100."""
    recipe = load_config(RECIPE)
    train_section = recipe.train.model_dump(mode="json")
    train_section.update(epochs=s.job_epochs, device=str(s.device), precision="bf16" if s.cuda else "fp32")
    if s.quick:
        train_section["batch_size"] = s.batch_size
    if name != recipe.model.name:
        train_section["method"] = {"name": "standard"}
    if s.compile:
        train_section["compile"] = True
    faces = s.job_faces
    return {"name": f"bench-job-{name}", "seed": 0,
            "data": {"name": "synthfaces", "options": {"image_size": FACE_SIZE, "train_size": faces["train"],
                                                       "val_size": faces["val"], "test_size": faces["test"]}},
            "model": {"name": name, "pretrained": False}, "train": train_section, "eval": {"splits": ["test"]}}


def peak_rss_kb() -> int:
    """This process's peak resident memory (KiB). Linux: ``VmHWM`` of ``/proc/self/status``, the peak of this
    address space: ``getrusage(RUSAGE_SELF).ru_maxrss`` would do elsewhere, but on Linux it survives ``exec`` and so
    starts a child process at its parent's resident size at the fork."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def run_job_child(spec: dict) -> dict:
    """In the child process: train the job with ``fer_core.train.train`` and time its phases from the progress
    events; return the timings, its metrics and the process's peak memory."""
    from safetensors.torch import load_file

    device = torch.device(spec["device"])
    if device.type == "cuda":
        if device.index is not None:  # set_device refuses a bare "cuda"
            torch.cuda.set_device(device)
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = peak_rss_kb()  # after the imports, before any data
    run_dir = Path(spec["run_dir"])
    marks: dict[str, Any] = {"phase": {}, "epochs": [], "last_batch": [], "snapshot_s": 0.0}
    snapshot: dict[str, torch.Tensor] = {}

    def weights() -> dict[str, torch.Tensor]:
        state = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
        return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}

    def progress(event: dict) -> None:
        now = time.perf_counter()
        kind = event.get("event")
        if kind == "phase":
            marks["phase"][event["phase"]] = now
        elif kind == "batch" and event.get("batch") == event.get("batches"):
            marks["last_batch"].append(now)
        elif kind == "epoch":
            marks["epochs"].append(now)
            if len(marks["epochs"]) == 1:  # the weights after epoch 1, to check that later epochs change them
                snapshot.update(weights())
                marks["snapshot_s"] = time.perf_counter() - now
        elif kind == "done":
            marks["done"] = now

    start = time.perf_counter()
    result = train(spec["config"], run_dir, progress=progress)
    end = time.perf_counter()
    if result.get("state") != "done":
        raise AssertionError(f"the job ended {result.get('state')}")
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    losses = [m["train_loss"] for m in metrics]
    if len(metrics) != spec["config"]["train"]["epochs"] or not all(math.isfinite(v) for v in losses):
        raise AssertionError(f"the job's training losses are {losses}")
    final = weights()
    if all(torch.equal(final[k], snapshot[k]) for k in snapshot):
        raise AssertionError("the job's weights did not change after epoch 1: nothing was trained")
    out = {"start": start, "end": end, "marks": marks, "metrics": metrics,
           "test_acc": result.get("results", {}).get("test/all", {}).get("accuracy"),
           "eval_n": {k: r["n"] for k, r in result.get("results", {}).items()},
           "max_rss_kb": peak_rss_kb(), "rss_before_kb": rss_before}
    if device.type == "cuda":
        out["cuda_max_allocated"] = torch.cuda.max_memory_allocated(device)
        out["cuda_max_reserved"] = torch.cuda.max_memory_reserved(device)
    return out


def section_job(s: Settings, workdir: Path) -> list[dict]:
    out = []
    for name in s.job_models:
        cfg = job_config(s, name)
        spec = {"device": str(s.device), "run_dir": str(workdir / f"job-{name}"), "config": cfg}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--job-child", json.dumps(spec),
               "--threads", str(torch.get_num_threads())]  # the same torch thread count as this process
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("JOB_RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise RuntimeError(f"the {name} job failed (exit code {proc.returncode}); its output is above")
        r = json.loads(lines[-1][len("JOB_RESULT "):])
        marks = r["marks"]
        train_start = marks["phase"]["train"]
        ends = marks["epochs"]
        epochs = [ends[0] - train_start] + [b - a for a, b in zip(ends[:-1], ends[1:], strict=True)]
        starts = [train_start, *ends[:-1]]
        train_parts = [b - a for a, b in zip(starts, marks["last_batch"], strict=False)]
        epochs[1] -= marks["snapshot_s"]  # the bench's own read of the checkpoint after epoch 1
        if len(train_parts) > 1:
            train_parts[1] -= marks["snapshot_s"]
        steady = epochs[1:]
        row = {"model": name, "faces": s.job_faces, "batch": cfg["train"]["batch_size"],
               "optimizer": cfg["train"]["optimizer"]["name"], "method": cfg["train"]["method"]["name"],
               "epochs": epochs, "train_parts": train_parts,
               "metric_seconds": [m.get("seconds") for m in r["metrics"]],
               "setup_s": train_start - r["start"], "eval_s": marks.get("done", r["end"]) - marks["phase"]["eval"],
               "total_s": r["end"] - r["start"], "process_s": wall, "steady_s": sum(steady) / len(steady),
               "steady_train_s": (sum(train_parts[1:]) / len(train_parts[1:])) if len(train_parts) > 1 else None,
               "max_rss_kb": r["max_rss_kb"], "rss_before_kb": r["rss_before_kb"],
               "cuda_max_allocated": r.get("cuda_max_allocated"),
               "cuda_max_reserved": r.get("cuda_max_reserved"), "eval_n": r["eval_n"], "macs": forward_macs(name),
               "losses": [m["train_loss"] for m in r["metrics"]]}
        e = s.job_total_epochs
        row["extrapolated_s"] = row["setup_s"] + epochs[0] + (e - 1) * row["steady_s"] + row["eval_s"]
        f = s.job_faces
        if f != RAFDB_SIZES:  # a tiny job: scale its per-face times to RAF-DB's sizes (rough: linear in faces)
            t_train = row["steady_train_s"] or row["steady_s"]
            epoch = (t_train * RAFDB_SIZES["train"] / f["train"]
                     + (row["steady_s"] - t_train) * RAFDB_SIZES["val"] / f["val"])
            row["scaled_s"] = row["setup_s"] + e * epoch + row["eval_s"] * RAFDB_SIZES["test"] / f["test"]
        out.append(row)
        print(f"  job {name}: epochs {', '.join(f'{x:.1f}' for x in epochs)} s; {e} epochs ~ "
              f"{row['extrapolated_s'] / 60:.1f} min", flush=True)
    return out


# --------------------------------------------------------------------------------------------- report
def fmt_rate(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def fmt_s(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x >= 3600:
        return f"{x / 3600:,.1f} h"
    if x >= 120:
        return f"{x / 60:.1f} min"
    return f"{x:.2f} s" if x < 10 else f"{x:.1f} s"


def fmt_ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:,.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.2f} ms"


def pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def flops_s(rate: float, name: str) -> float:
    return rate * train_flops_per_image(name)


def report(s: Settings, args: argparse.Namespace, argv: list[str], info: dict, results: dict) -> str:
    dev = s.device
    peak = peak_tflops(dev, s.peak_tflops)
    L: list[str] = []
    L.append(f"# Training speed on {dev.type.upper()}: FER Lab's path against a reference-style pipeline"
             + (" (quick smoke run)" if s.quick else ""))
    L.append("")
    cmd = "python bench/bench_train.py" + "".join(" " + shlex.quote(a) for a in argv)
    env = os.environ.get("OMP_NUM_THREADS")
    L.append(f"Command: `{'OMP_NUM_THREADS=' + env + ' ' if env else ''}{cmd}`, {info['date']}.")
    L.append("")
    dev_line = f"Device: {device_name(dev)}" + (f" (CPU: {cpu_name()})" if s.cuda else "")
    threads = torch.get_num_threads()
    L.append(f"{dev_line}; {info['cores']} CPU cores; torch {torch.__version__}, {threads} torch "
             f"thread{'s' if threads != 1 else ''}; Python {platform.python_version()}; reference DataLoader "
             f"workers: {s.workers}; batch {s.batch_size}; precision {'bf16 autocast' if s.cuda else 'fp32'}"
             + ("; cuDNN benchmark on" if s.cuda else "") + ("; torch.compile on the FER Lab path and the job"
                                                             if s.compile else "") + ".")
    L.append("")
    others = info["others"]
    shared = info["shared"]
    L.append(f"CPU shared: **{'yes' if shared else 'no'}**: other processes used "
             f"{pct(others) if others is not None else 'an unknown share'} of the machine's CPU time during the "
             f"run (load average {info['load_start']:.2f} at the start, {info['load_end']:.2f} at the end)."
             + (" Every number below is a lower bound, and ratios are noisy." if shared else ""))
    if s.quick:
        L.append("")
        L.append("**Quick mode**: small counts, small models and few batches: it checks that the bench runs; its "
                 "numbers are not measurements.")
    neutral = {"--device", "--out", "--workdir", "--threads", "--full", "--peak-tflops", "--workers"}
    changed = sorted({a.split("=", 1)[0] for a in argv if a.startswith("--")} - neutral - {"--quick"})
    if changed and not s.quick:
        L.append("")
        L.append(f"**Reduced run** ({', '.join(changed)} changed from the defaults): the full run is "
                 f"`python bench/bench_train.py --device {dev.type}{' --full' if s.full else ''}`.")
    L.append("")
    L.append(f"One-off costs, in none of the numbers: {info['data_note']}.")
    goals: list[str] = []

    rows = results.get("throughput")
    if rows:
        any_heavy = any(s.heavy(tuple(int(v) for v in r["input"].split("x"))) for r in rows)
        heavy_note = ((" (1 for the 224 x 224 models)", " (1 for them)", " (at most 2 for them)") if any_heavy
                      else ("", "", ""))
        L += ["", "## 1. Training throughput (images/s, steady state)", "",
              f"The FER Lab path, the two model-step-alone ceilings (below) and the reference are measured in "
              f"alternation, {s.rounds} round{'s' if s.rounds != 1 else ''}{heavy_note[2]}, and each keeps its "
              f"best round. Per measurement: {s.warmup} warm-up batch{'es' if s.warmup != 1 else ''}{heavy_note[0]} "
              "before the first round, "
              f"then at least {s.min_steps} timed batches{heavy_note[1]} and about {s.target_s:g} s"
              f"{' (synchronised before and after)' if s.cuda else ''}; the reference first trains on as many "
              "batches as its workers prefetch between rounds. Models randomly initialised; both paths checked to "
              "have trained (finite loss, changed weights). *Waits for data*: the share of the reference loop's "
              "time spent blocked in `next(loader)`"
              + (" (host time: on CUDA the GPU may still be busy with queued work then)" if s.cuda else "") + ".",
              "",
              "| model | input | GMACs | FER Lab | reference | FER Lab / reference | reference waits for data "
              f"| FER Lab {'TFLOP/s' if s.cuda else 'GFLOP/s'} | goal |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            ratio = r["fer"].per_s / r["ref"].per_s
            achieved = flops_s(r["fer"].per_s, r["model"]) / (1e12 if s.cuda else 1e9)
            goal = "-"
            if not s.cuda and r["model"] in SMALL_MODELS:
                met = ratio >= GOAL_CPU_RATIO
                goal = f"≥ {GOAL_CPU_RATIO:g}x: **{'met' if met else 'missed'}**"
                goals.append(f"CPU, {r['model']}: FER Lab ≥ {GOAL_CPU_RATIO:g}x the reference: "
                             f"**{'met' if met else 'missed'}** ({ratio:.2f}x)")
            if s.cuda and r["model"] == "resnet18":
                met_rate, met_ratio = r["fer"].per_s >= GOAL_H100_RATE, ratio >= GOAL_H100_RATIO
                goal = (f"≥ {GOAL_H100_RATE:,.0f} img/s: **{'met' if met_rate else 'missed'}**; ≥ "
                        f"{GOAL_H100_RATIO:g}x: **{'met' if met_ratio else 'missed'}**")
                h100 = "H100" in device_name(dev)
                goals.append(f"H100, ResNet-18@224 ≥ {GOAL_H100_RATE:,.0f} img/s and ≥ {GOAL_H100_RATIO:g}x the "
                             f"reference: {'met' if met_rate else 'missed'} ({fmt_rate(r['fer'].per_s)} img/s), "
                             f"{'met' if met_ratio else 'missed'} ({ratio:.2f}x)"
                             + ("" if h100 else f" (measured on {device_name(dev)}, not an H100)"))
            L.append(f"| {r['model']} | {r['input']} | {r['macs'] / 1e9:.3f} | {fmt_rate(r['fer'].per_s)} "
                     f"| {fmt_rate(r['ref'].per_s)} | **{ratio:.2f}x** | {pct(r['ref'].wait_share)} "
                     f"| {achieved:,.1f} | {goal} |")
        if not s.cuda:
            goals.append(f"H100, ResNet-18@224 ≥ {GOAL_H100_RATE:,.0f} img/s and ≥ {GOAL_H100_RATIO:g}x the "
                         "reference: not measured here (run with `--device cuda`)")
        L += ["", "Where the time goes: each path's parts alone (images/s). *Data alone*: FER Lab's index + "
              "`BatchTransform` on the device; the reference's DataLoader (decode, transforms, collate"
              + (", pin, copy" if s.cuda else "") + f") with {s.workers} worker{'s' if s.workers != 1 else ''}. "
              "*Model step alone*: forward, loss, backward and optimiser step on one fixed augmented batch "
              "already on the device, in each path's own setup (FER Lab: channels-last as the engine's default, "
              "`build_optimizer`; reference: contiguous, `torch.optim.SGD`). *Of its ceiling*: the path's rate over "
              "its model step alone.", "",
              "| model | FER Lab: data alone | FER Lab: model step alone | FER Lab: of its ceiling "
              "| reference: data alone | reference: model step alone | reference: of its ceiling |",
              "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            L.append(f"| {r['model']} | {fmt_rate(r['aug'].per_s)} | {fmt_rate(r['ceil_fer'].per_s)} "
                     f"| {pct(r['fer'].per_s / r['ceil_fer'].per_s)} | {fmt_rate(r['loader'].per_s)} "
                     f"| {fmt_rate(r['ceil_ref'].per_s)} | {pct(r['ref'].per_s / r['ceil_ref'].per_s)} |")

    jobs = results.get("job")
    if jobs:
        f0 = jobs[0]["faces"]
        tiny = f0["train"] < RAFDB_SIZES["train"]
        L += ["", "## 2. A RAF-DB-sized job", "",
              f"`fer_core.train.train` in a child process: SynthFACS at {FACE_SIZE} x {FACE_SIZE} "
              f"({f0['train']:,} train / {f0['val']:,} val / {f0['test']:,} test faces"
              + (", **a tiny size: run with `--full` for RAF-DB's**" if tiny else ", RAF-DB's sizes")
              + f"), resized to the model's input by the transform; batch, optimiser, schedule and augmentation "
              f"of `configs/recipes/scn_rafdb.yaml`{' (batch from --batch-size in quick mode)' if s.quick else ''}; "
              f"validation every epoch and the final test evaluation with subsets, as the engine does. "
              f"{s.job_epochs} epochs measured; the recipe's {s.job_total_epochs} epochs **extrapolated** as setup "
              f"+ epoch 1 + {s.job_total_epochs - 1} x "
              f"{'epoch 2' if s.job_epochs == 2 else f'the mean of epochs 2-{s.job_epochs}'} + final evaluation. "
              "An epoch's wall time includes validation, checkpoints and logs; *training part* runs to the last "
              "batch's progress event" + (" (host time, approximate on CUDA)" if s.cuda else "") + ".", "",
              "| model (method, optimiser) | batch | setup | epoch 1 | later epochs (mean) | training part "
              f"| final evaluation | {s.job_epochs} epochs, measured | **{s.job_total_epochs} epochs, extrapolated** |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for j in jobs:
            L.append(f"| {j['model']} ({j['method']}, {j['optimizer']}) | {j['batch']} | {fmt_s(j['setup_s'])} "
                     f"| {fmt_s(j['epochs'][0])} | {fmt_s(j['steady_s'])} | {fmt_s(j['steady_train_s'])} "
                     f"| {fmt_s(j['eval_s'])} | {fmt_s(j['total_s'])} | **{fmt_s(j['extrapolated_s'])}** |")
        scaled = [j for j in jobs if j.get("scaled_s")]
        if scaled:
            L += ["", f"At RAF-DB's sizes ({RAFDB_SIZES['train']:,} / {RAFDB_SIZES['val']:,} / "
                  f"{RAFDB_SIZES['test']:,} faces) the {s.job_total_epochs} epochs would take about "
                  + ", ".join(f"**{fmt_s(j['scaled_s'])}** ({j['model']})" for j in scaled)
                  + ": the tiny job's training, validation and evaluation times per face, scaled linearly (rough)."]
        L += ["", "Achieved model FLOP/s (training = 3 x forward; forward = 2 x MACs of "
              "`fer_core.models.profile.count_macs`)"
              + (f" against this GPU's dense bf16 peak of {peak:,.0f} TFLOP/s" if peak else
                 (" (CPU: no peak given)" if not s.cuda else " (this GPU's peak is not in the table: pass "
                                                             "--peak-tflops)")) + ":", "",
              "| what | images/s | " + ("TFLOP/s" if s.cuda else "GFLOP/s") + (" | of peak |" if peak else " |"),
              "|---|---:|---:|" + ("---:|" if peak else "")]
        scale = 1e12 if s.cuda else 1e9

        def flop_row(label: str, rate: float | None, name: str) -> str:
            if rate is None or not math.isfinite(rate):
                return f"| {label} | - | - |" + (" - |" if peak else "")
            f = flops_s(rate, name)
            return (f"| {label} | {fmt_rate(rate)} | {f / scale:,.2f} |"
                    + (f" {100 * f / (peak * 1e12):.1f}% |" if peak else ""))

        for j in jobs:
            n = j["faces"]["train"]
            L.append(flop_row(f"{j['model']} job: training part of an epoch", n / j["steady_train_s"]
                              if j["steady_train_s"] else None, j["model"]))
            L.append(flop_row(f"{j['model']} job: whole epochs (with validation)", n / j["steady_s"], j["model"]))
            L.append(flop_row(f"{j['model']} job: whole job, extrapolated",
                              n * s.job_total_epochs / j["extrapolated_s"], j["model"]))
        for r in rows or []:
            if r["model"] in {j["model"] for j in jobs}:
                L.append(flop_row(f"{r['model']} training steps alone (section 1, FER Lab path, batch "
                                  f"{s.batch_size})", r["fer"].per_s, r["model"]))

    evals = results.get("eval")
    if evals or jobs:
        L += ["", "## 3. Evaluation and memory", ""]
    if evals:
        L += [f"`fer_core.evaluate.evaluate_model` on the SynthFACS test split ({s.test_faces:,} faces at "
              f"{FACE_SIZE} x {FACE_SIZE}) and each subset, as a run's final evaluation does (it loads the split "
              "once, picks each subset out of it, predicts, writes `eval/` files), after one warm-up batch; "
              "*predicting alone*: `predict_logits` on the subset already in memory.", "",
              "| model | input | subset | faces | predicting alone | images/s |", "|---|---|---|---:|---:|---:|"]
        for ev in evals:
            for subset, n, secs in ev["subsets"]:
                L.append(f"| {ev['model']} | {ev['input']} | {subset} | {n:,} | {fmt_s(secs) if n else '-'} "
                         f"| {fmt_rate(n / secs) if n and secs else '-'} |")
            n_all = sum(n for _, n, _ in ev["subsets"])
            pred = sum(x for _, _, x in ev["subsets"])
            L.append(f"| **{ev['model']}** | | **evaluate_model, test + all subsets** | {n_all:,} "
                     f"| **{fmt_s(ev['total_s'])}** (predicting {fmt_s(pred)}) | {fmt_rate(n_all / ev['total_s'])} |")
    if jobs:
        L += ["", "Peak memory of the training runs of section 2 (the child process: imports, data, model, "
              "training and the final evaluation):", "",
              "| run | peak RSS | RSS after imports |" + (" CUDA max allocated | CUDA max reserved |" if s.cuda
                                                            else ""),
              "|---|---:|---:|" + ("---:|---:|" if s.cuda else "")]
        for j in jobs:
            f = j["faces"]
            line = (f"| {j['model']}, {f['train']:,} train faces | {j['max_rss_kb'] / 1024:,.0f} MiB "
                    f"| {j['rss_before_kb'] / 1024:,.0f} MiB |")
            if s.cuda:
                line += f" {j['cuda_max_allocated'] / 2**20:,.0f} MiB | {j['cuda_max_reserved'] / 2**20:,.0f} MiB |"
            L.append(line)
        n = jobs[0]["faces"]["train"]
        L.append("")
        L.append(f"For scale: {n:,} training faces as uint8 at {FACE_SIZE} x {FACE_SIZE} take "
                 f"{n * 3 * FACE_SIZE * FACE_SIZE / 2**20:,.1f} MiB.")

    sc = results.get("scaling")
    if sc:
        L += ["", f"## 4. How the FER Lab path scales ({sc['model']})", "",
              "Against the batch size (steady state, as in section 1):", "",
              "| batch | images/s |", "|---:|---:|"]
        L += [f"| {bs} | {fmt_rate(r.per_s)} |" for bs, r in sc["batches"]]
        L += ["", f"Against the data set size: one whole epoch (batch {s.batch_size}), after a warm-up call:", "",
              "| faces | epoch | images/s |", "|---:|---:|---:|"]
        L += [f"| {n:,} | {fmt_s(r.seconds)} | {fmt_rate(r.per_s)} |" for n, r in sc["sizes"]]

    pr = results.get("profile")
    if pr:
        L += ["", f"## 5. Profile: {pr['model']}, FER Lab path, batch {pr['batch']}, {pr['steps']} batches", "",
              f"`torch.profiler` over {pr['steps']} batches after warm-up: wall {fmt_s(pr['wall_s'])}; self CPU "
              f"time of all operators {fmt_s(pr['cpu_total_us'] / 1e6)} (more than the wall time when "
              "operators use several threads)"
              + (f"; GPU kernel time {fmt_s(pr['dev_total_us'] / 1e6)}, so the GPU was busy "
                 f"{pct(pr['dev_total_us'] / 1e6 / pr['wall_s'])} of the wall time" if s.cuda else "") + ".", ""]

        def table(title: str, items: list) -> None:
            nonlocal L
            L += [title, "", "| operator | calls | self CPU | of all self CPU |"
                  + (" self CUDA | of all GPU time |" if s.cuda else ""),
                  "|---|---:|---:|---:|" + ("---:|---:|" if s.cuda else "")]
            for key, count, cpu_us, dev_us in items:
                key = key if len(key) <= 70 else key[:67] + "..."
                key = key.replace("|", "\\|")
                line = f"| `{key}` | {count} | {fmt_ms(cpu_us)} | {pct(cpu_us / pr['cpu_total_us'])} |"
                if s.cuda:
                    line += f" {fmt_ms(dev_us)} | {pct(dev_us / pr['dev_total_us'] if pr['dev_total_us'] else None)} |"
                L.append(line)
            L.append("")

        if s.cuda:
            table("Top 10 by self CUDA time:", pr["top_dev"])
        table("Top 10 by self CPU time:", pr["top_cpu"])
        if L[-1] == "":
            L.pop()

    L += ["", "## Goals", ""]
    L += [f"- {g}" for g in goals] or ["- (no throughput section in this run)"]
    limits = what_limits(s, results)
    if limits:
        L += ["", "## What limits the numbers", ""] + [f"- {x}" for x in limits]
    return "\n".join(L) + "\n"


def what_limits(s: Settings, results: dict) -> list[str]:
    out = []
    for r in results.get("throughput") or []:
        fer, ceil, aug = r["fer"].per_s, r["ceil_fer"].per_s, r["aug"].per_s
        share_aug = fer / aug  # the augmentation's share of the FER Lab path's time if it runs serially
        text = (f"{r['model']}: FER Lab reaches {pct(fer / ceil)} of its model step alone; its data work alone "
                f"would take about {pct(share_aug)} of its time")
        ref, ceil_ref = r["ref"].per_s, r["ceil_ref"].per_s
        text += (f". The reference reaches {pct(ref / ceil_ref)} of its model step alone and waits for data "
                 f"{pct(r['ref'].wait_share)} of its time")
        if ref / ceil_ref < 0.7:
            text += " (it is bound by its data pipeline"
            text += f": {s.workers} workers deliver {fmt_rate(r['loader'].per_s)} img/s)"
        if ceil / ceil_ref > 1.15 or ceil / ceil_ref < 0.87:
            text += (f"; FER Lab's model step alone is {ceil / ceil_ref:.2f}x the reference's (memory format and "
                     "optimiser)")
        out.append(text + ".")
    pr = results.get("profile")
    if pr:
        items = pr["top_dev"] if s.cuda else pr["top_cpu"]
        if items:
            total = pr["dev_total_us"] if s.cuda else pr["cpu_total_us"]
            key, _, cpu_us, dev_us = items[0]
            out.append(f"Profile of {pr['model']}: the largest self {'CUDA' if s.cuda else 'CPU'} time is "
                       f"`{key[:60]}` ({pct((dev_us if s.cuda else cpu_us) / total)})"
                       + (f"; the GPU was busy {pct(pr['dev_total_us'] / 1e6 / pr['wall_s'])} of the wall time"
                          if s.cuda else "") + ".")
    return out


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    args, s = parse_args(argv)
    if args.job_child is not None:
        out = run_job_child(json.loads(args.job_child))
        print("JOB_RESULT " + json.dumps(out), flush=True)
        return ""
    share = CpuShare()
    if s.cuda:
        torch.backends.cudnn.benchmark = True  # as fer_core.train.seed_everything does for non-deterministic runs
    info: dict[str, Any] = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else os.cpu_count(), "load_start": share.load_start}
    with contextlib.ExitStack() as stack:
        if s.workdir:
            workdir = s.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_train_")))
        results: dict[str, Any] = {}
        notes = []
        need = s.train_faces
        if "scaling" in s.sections:
            need = max(need, *s.scaling_sizes)
        t = time.perf_counter()
        ds, images, labels = synth_split("train", need)
        faces = Faces(images, labels, list(ds.classes))
        notes.append(f"{need:,} training faces rendered or read from the SynthFACS cache in "
                     f"{fmt_s(time.perf_counter() - t)}")
        if "job" in s.sections:
            t = time.perf_counter()
            for split in ("train", "val", "test"):  # the job's child process then reads them from the cache
                synth_split(split, max(s.job_faces[split], need if split == "train" else 0))
            notes.append(f"the job's splits cached in {fmt_s(time.perf_counter() - t)}")
        if "eval" in s.sections:
            t = time.perf_counter()
            synth_split("test", s.test_faces)
            notes.append(f"{s.test_faces:,} test faces cached in {fmt_s(time.perf_counter() - t)}")
        if "throughput" in s.sections:
            t = time.perf_counter()
            faces.paths = write_jpegs(faces.images[:s.train_faces], workdir / "jpeg")
            faces_ref = Faces(faces.images[:s.train_faces], faces.labels[:s.train_faces], faces.class_names,
                              faces.paths)
            notes.append(f"{len(faces.paths):,} JPEGs written in {fmt_s(time.perf_counter() - t)}")
        info["data_note"] = "; ".join(notes)
        for name in s.models + s.job_models:
            forward_macs(name)
        if "throughput" in s.sections:
            print("1. throughput", flush=True)
            results["throughput"] = section_throughput(s, faces_ref, workdir)
        if "job" in s.sections:
            print("2. RAF-DB-sized job", flush=True)
            results["job"] = section_job(s, workdir)
        if "eval" in s.sections:
            print("3. evaluation", flush=True)
            results["eval"] = section_eval(s, faces.class_names, workdir)
        if "scaling" in s.sections:
            print("4. scaling", flush=True)
            results["scaling"] = section_scaling(s, faces, workdir)
        if "profile" in s.sections:
            print("5. profile", flush=True)
            results["profile"] = section_profile(s, faces, workdir)
    info["others"] = share.others()
    info["load_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    info["shared"] = (info["others"] is not None and info["others"] > 0.1) or info["load_start"] > 0.5 * info["cores"]
    text = report(s, args, argv, info, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print()
    print(text)
    return text


if __name__ == "__main__":
    main()
