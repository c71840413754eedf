"""Run the authors' own code of SCN, RAN and PAtt-Lite on fixed inputs and weights and store what it computes.

FER Lab re-implements these methods (``fer_core/models/scn.py`` + ``fer_core.methods.SCNTraining``,
``fer_core/models/ran.py`` + ``fer_core.losses.region_biased_loss``, ``fer_core/models/patt_lite.py``);
``tests/test_parity.py`` checks them against the numbers this tool writes, so the tests need neither the authors'
code nor TensorFlow. **None of the authors' code is copied into FER Lab**: this tool imports it from a checkout
given on the command line and runs it there, with the small shims that old code needs on current libraries (each
named below); the lines it runs from inside a training loop are extracted from the checkout's own file at run time.

Inputs and weights are not stored: every array is regenerated from a name and a seed by :func:`fixed_array` and
:func:`fixed_state` (numpy's PCG64), which the test imports from this file; the files store checksums of them so a
change of numpy's streams would show. Weights follow the authors' state-dict keys and shapes; the test maps the
keys onto FER Lab's (see ``tests/test_parity.py``).

Commands (commits checked when these files were written; another commit is accepted and recorded in the file)::

    # SCN: github.com/kaiwang960112/Self-Cure-Network @ 9f4c3ad80ff29c7eaaac3d1b283a456d3f23a587 (src/train.py)
    git clone https://github.com/kaiwang960112/Self-Cure-Network /tmp/parity/Self-Cure-Network
    .venv/bin/python tools/parity_reference.py scn /tmp/parity/Self-Cure-Network

    # RAN: github.com/kaiwang960112/Challenge-condition-FER-dataset @ e43d7a06e696f3f87feb3cbced739a286bc08679
    # (FERplus_dir/attention_rank_loss.py, FERplus_dir/train_attention_rank_loss.py,
    #  AffectNet_dir/simple_sample/part_attentioon_sample_fly.py)
    git clone https://github.com/kaiwang960112/Challenge-condition-FER-dataset /tmp/parity/Challenge-condition-FER
    .venv/bin/python tools/parity_reference.py ran /tmp/parity/Challenge-condition-FER

    # PAtt-Lite: github.com/JLREx/PAtt-Lite @ cae0e53b50323ec971517cd21c76309da90432c2 (patt-lite-notebook.ipynb).
    # TensorFlow is not a FER Lab dependency: a throw-away venv. The notebook is Keras 2 code
    # (tf.keras.layers.experimental.preprocessing, Attention on a 2-D tensor), so tf-keras runs it.
    python3 -m venv /tmp/parity/tfvenv
    /tmp/parity/tfvenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0
    git clone https://github.com/JLREx/PAtt-Lite /tmp/parity/PAtt-Lite
    TF_USE_LEGACY_KERAS=1 /tmp/parity/tfvenv/bin/python tools/parity_reference.py patt_lite /tmp/parity/PAtt-Lite

SCN and RAN run under FER Lab's own venv (torch, torchvision, opencv, pandas, Pillow) without importing
``fer_core``. Each writes ``tests/data/parity_<name>_reference.npz`` (``--out`` to change), with ``provenance``:
the commit, the sha256 of each file run, the lines run, the library versions and the shims.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
COMMITS = {"scn": "9f4c3ad80ff29c7eaaac3d1b283a456d3f23a587", "ran": "e43d7a06e696f3f87feb3cbced739a286bc08679",
           "patt_lite": "cae0e53b50323ec971517cd21c76309da90432c2"}
SEED = 20240601
SAMPLES = 32  # entries of a large gradient stored (at fixed flat positions), besides its norm


# -- fixed inputs and weights (imported by tests/test_parity.py) ---------------------------------------------------

def fixed_array(name: str, shape: tuple[int, ...], kind: str = "normal", seed: int = SEED) -> np.ndarray:
    """A float32 array determined by ``name`` and ``seed`` alone: ``normal`` (standard normal) or ``uniform``
    ([0, 1)), from PCG64 seeded with ``(seed, crc32(name))``."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    raise ValueError(f"unknown kind {kind!r}")


def fixed_tensor_value(key: str, shape: tuple[int, ...], gain: float = 1.0, seed: int = SEED) -> np.ndarray:
    """The fixed value of one state-dict entry, by its key (the authors' name) and shape.

    Conv kernels (4-D, out x in x kh x kw): He normal over the fan-in. Dense weights (2-D, out x in): normal over
    sqrt(fan-in), times ``gain``. 1-D ``weight`` (BatchNorm scale): 1 + 0.1 N; ``bias``: 0.1 N; ``running_mean``:
    0.1 N; ``running_var``: exp(0.2 N). Keys are the authors' PyTorch names, so both sides draw the same numbers.
    """
    z = fixed_array(key, shape, seed=seed) if shape else fixed_array(key, (1,), seed=seed).reshape(())
    leaf = key.rsplit(".", 1)[-1]
    if len(shape) == 4:
        return z * np.float32(np.sqrt(2.0 / (shape[1] * shape[2] * shape[3])))
    if len(shape) == 2:
        return z * np.float32(gain / np.sqrt(shape[1]))
    if leaf == "running_var":
        return np.exp(np.float32(0.2) * z).astype(np.float32)
    if leaf == "weight":
        return np.float32(1.0) + np.float32(0.1) * z
    if leaf in ("bias", "running_mean"):
        return np.float32(0.1) * z
    raise ValueError(f"no fixed-value rule for {key} {shape}")


def fixed_state(shapes: dict[str, tuple[int, ...]], gains: dict[str, float] | None = None,
                seed: int = SEED) -> dict[str, np.ndarray]:
    """:func:`fixed_tensor_value` for every key of ``shapes`` except ``num_batches_tracked`` (integers, kept)."""
    gains = gains or {}
    return {k: fixed_tensor_value(k, tuple(s), gains.get(k, 1.0), seed) for k, s in shapes.items()
            if not k.endswith("num_batches_tracked")}


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the keys (sorted) and the float32 bytes of ``arrays``."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def sample_positions(numel: int, count: int = SAMPLES) -> np.ndarray:
    """The flat positions at which a large gradient's entries are stored."""
    return np.unique(np.linspace(0, numel - 1, count).round().astype(np.int64))


def summarise_grads(prefix: str, grads: dict[str, np.ndarray], out: dict[str, np.ndarray],
                    full_upto: int = 4096) -> None:
    """Store ``{prefix}norm/{key}`` (float64 norm) for every gradient, the whole gradient (``{prefix}full/{key}``)
    when it has at most ``full_upto`` entries, else ``{prefix}sample/{key}`` at :func:`sample_positions`."""
    for k, g in grads.items():
        g = np.array(g, dtype=np.float32)  # a copy: the tensor behind it may change later
        out[f"{prefix}norm/{k}"] = np.float64(np.linalg.norm(g.astype(np.float64)))
        if g.size <= full_upto:
            out[f"{prefix}full/{k}"] = g
        else:
            out[f"{prefix}sample/{k}"] = g.reshape(-1)[sample_positions(g.size)]


# -- provenance ----------------------------------------------------------------------------------------------------

def _commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=True, capture_output=True,
                              text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def _provenance(name: str, checkout: Path, files: list[str], lines: dict[str, str], shims: list[str],
                versions: dict[str, str]) -> str:
    commit = _commit(checkout)
    if commit != COMMITS[name]:
        print(f"note: {checkout} is at {commit}, these files were last written from {COMMITS[name]}",
              file=sys.stderr)
    return json.dumps({"commit": commit, "files": {f: hashlib.sha256((checkout / f).read_bytes()).hexdigest()
                                                   for f in files},
                       "lines_run": lines, "shims": shims, "versions": versions, "seed": SEED}, indent=1)


def _function_body(path: Path, function: str, loop_target: str) -> tuple[str, str]:
    """The source of the body of the ``for`` loop over ``loop_target`` inside ``function`` (dedented) and its line
    range ``path:first-last``, read from the authors' file."""
    source = path.read_text()
    fn = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef) and n.name == function)
    loop = next(n for n in ast.walk(fn) if isinstance(n, ast.For) and loop_target in ast.unparse(n.iter))
    first, last = loop.body[0].lineno, loop.body[-1].end_lineno
    lines = source.splitlines()[first - 1:last]
    return textwrap.dedent("\n".join(lines)), f"{path.name}:{first}-{last}"


def _find_lines(path: Path, starts: list[str]) -> tuple[str, str]:
    """The lines of ``path`` that start (after indentation) with each of ``starts``, dedented, and their numbers."""
    lines = path.read_text().splitlines()
    found = []
    for start in starts:
        hits = [i for i, line in enumerate(lines) if line.strip().startswith(start)]
        if not hits:
            raise RuntimeError(f"{path}: no line starts with {start!r}")
        found.append(hits[0])
    return "\n".join(lines[i].strip() for i in found), f"{path.name}:" + ",".join(str(i + 1) for i in found)


@contextlib.contextmanager
def _torch_shims(retain_graph: bool = False):
    """``.cuda()`` on tensors and modules returns them unchanged (the authors' code runs on a GPU; here the CPU);
    with ``retain_graph`` every ``backward()`` keeps its graph, so a term's gradient can be taken afterwards."""
    import torch

    saved = torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.backward
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    if retain_graph:
        backward = saved[2]
        torch.Tensor.backward = lambda self, *a, **k: backward(self, *a, **{**k, "retain_graph": True})
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.Tensor.backward = saved


def _load_module(name: str, path: Path, extra_path: Path | None = None):
    if extra_path is not None:
        sys.path.insert(0, str(extra_path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_fixed(model, gains: dict[str, float]) -> dict[str, np.ndarray]:
    import torch

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = fixed_state(shapes, gains)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [k for k in shapes if k not in state and not k.endswith("num_batches_tracked")]
    assert not missing, missing
    return state


def calibrate(net, forward) -> None:
    """Set every BatchNorm's running statistics to those of one training-mode ``forward()`` (momentum 1; RAN's
    backbone runs once per part, so the last part's), then put ``net`` in eval mode. The fixed running statistics
    are far from the activations of random weights, which would saturate the sigmoids of eval mode."""
    import torch

    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    net.train()
    with torch.no_grad():
        forward()
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    net.eval()


def _versions(*modules: str) -> dict[str, str]:
    import importlib

    return {m: getattr(importlib.import_module(m), "__version__", "?") for m in modules}


# -- SCN -----------------------------------------------------------------------------------------------------------

SCN_SHAPE = dict(batch=10, size=64, classes=7, table=16)
SCN_GAINS = {"fc.weight": 8.0, "alpha.0.weight": 0.5}
SCN_RELABEL_EPOCH = 2  # theirs (counted from 1); FER Lab's relabel_epoch is 1 (0-based)
SCN_BATCH_INDEX = np.array([13, 2, 7, 11, 0, 5, 14, 9, 3, 8])  # positions in the label table of the batch's samples


def scn_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The fixed SCN batch ``B x 3 x 64 x 64`` and the initial label table (16 samples, 7 classes)."""
    s = SCN_SHAPE
    x = fixed_array("scn.inputs", (s["batch"], 3, s["size"], s["size"]))
    table = (fixed_array("scn.labels", (s["table"],), "uniform") * s["classes"]).astype(np.int64)
    return x, table


def scn(checkout: Path, out: Path) -> None:
    """Res18Feature and the batch body of ``run_training`` (rank regularisation, loss, relabelling)."""
    import torch
    import torchvision

    train_py = checkout / "src" / "train.py"
    train = _load_module("scn_train", train_py, checkout / "src")
    # shim: torchvision >= 0.13 has no positional ``pretrained``; Res18Feature(pretrained=False) -> weights=None
    train.models = SimpleNamespace(resnet18=lambda pretrained: torchvision.models.resnet18(
        weights="IMAGENET1K_V1" if pretrained else None))
    body, body_lines = _function_body(train_py, "run_training", "train_loader")

    torch.manual_seed(0)
    net = train.Res18Feature(pretrained=False, num_classes=SCN_SHAPE["classes"], drop_rate=0)
    state = _load_fixed(net, SCN_GAINS)
    x_np, table = scn_inputs()
    x = torch.from_numpy(x_np)
    idx = torch.from_numpy(SCN_BATCH_INDEX)
    res: dict[str, np.ndarray] = {}

    # Labels of the batch chosen, from a forward in training mode, so that relabelling happens in both importance
    # groups and not everywhere: "far" = the least likely class (relabelled), "kept" = the most likely (never),
    # "border" = a class whose P_max - P_given is under margin_2 on the weighted logits alpha * fc(x) (what train.py
    # reads) but over it on the unweighted fc(x): a rule that took the softmax of fc(x) would relabel it.
    probe = train.Res18Feature(pretrained=False, num_classes=SCN_SHAPE["classes"], drop_rate=0)
    probe.load_state_dict(net.state_dict())
    with torch.no_grad():
        p_alpha, p_out = probe.train()(x)
    weighted, raw = p_out.softmax(1), (p_out / p_alpha).softmax(1)
    kinds = ["far", "kept", "border", "far", "border", "far", "kept", "kept", "far", "border"]
    for row, kind in enumerate(kinds):
        if kind == "border":
            gap_w, gap_r = weighted[row].max() - weighted[row], raw[row].max() - raw[row]
            border = ((gap_w > 0.02) & (gap_w < 0.18) & (gap_r > 0.22)).nonzero().flatten()
            label = border[0] if len(border) else weighted[row].argmax()  # none: kept
            kinds[row] = kind if len(border) else "kept"
        else:
            label = weighted[row].argmin() if kind == "far" else weighted[row].argmax()
        table[SCN_BATCH_INDEX[row]] = int(label)
    assert kinds.count("border") >= 2, kinds
    res["labels_before"] = table.copy()

    def run_body(epoch: int, labels: np.ndarray) -> dict:
        ns = dict(torch=torch, np=np, res18=net, imgs=x.clone(), targets=torch.from_numpy(labels[SCN_BATCH_INDEX]),
                  indexes=idx.clone(), criterion=torch.nn.CrossEntropyLoss(), margin_1=0.15, margin_2=0.2, beta=0.7,
                  args=SimpleNamespace(relabel_epoch=SCN_RELABEL_EPOCH), i=epoch, iter_cnt=0, running_loss=0.0,
                  correct_sum=0, train_loader=SimpleNamespace(dataset=SimpleNamespace(label=labels)),
                  # shim: no weight update, so the gradients of this batch can be read after the body ran
                  optimizer=SimpleNamespace(zero_grad=lambda: net.zero_grad(set_to_none=True), step=lambda: None))
        net.train()
        with _torch_shims(retain_graph=True):
            exec(compile(body, f"{train_py}:{body_lines}", "exec"), ns)
        return ns

    ns = run_body(SCN_RELABEL_EPOCH, table.copy())
    params = dict(net.named_parameters())
    weights = ns["attention_weights"].detach().reshape(-1)
    gaps = weights.sort().values.diff()
    assert float(gaps.min()) > 1e-4, f"importance weights too close to each other for topk: {float(gaps.min())}"
    margin = (ns["Pmax"] - ns["Pgt"] - 0.2).abs().min().detach()
    assert float(margin) > 1e-3, f"a sample is within {float(margin)} of margin_2"
    low = torch.zeros(len(weights), dtype=torch.bool)
    low[ns["down_idx"]] = True
    decide = ns["true_or_false"]
    assert (decide & low).any() and (decide & ~low).any() and (~decide).any(), (
        f"relabel mix not reached: low {low.tolist()} decide {decide.tolist()} w {weights.tolist()} "
        f"p {ns['sm'].tolist()}")
    assert torch.is_tensor(ns["RR_loss"]) and float(ns["RR_loss"].detach()) > 0, "rank regularisation inactive"
    res.update({"train/weights": weights.numpy(), "train/outputs": ns["outputs"].detach().numpy(),
                "train/low": low.numpy(), "train/decide": decide.numpy(),
                "train/predicted": ns["predicted_labels"].numpy(), "loss/total": np.float64(ns["loss"].item()),
                "loss/rr": np.float64(ns["RR_loss"].item()), "labels_after": ns["train_loader"].dataset.label})
    ce = ns["criterion"](ns["outputs"], ns["targets"])  # the first term of their ``loss`` line, taken alone
    res["loss/ce"] = np.float64(ce.item())
    summarise_grads("grad_total/", {k: p.grad.numpy() for k, p in params.items()}, res)
    names = list(params)
    for term, value in (("ce", ce), ("rr", ns["RR_loss"])):
        grads = torch.autograd.grad(value, [params[k] for k in names], allow_unused=True, retain_graph=True)
        summarise_grads(f"grad_{term}/", {k: (torch.zeros_like(params[k]) if g is None else g).numpy()
                                          for k, g in zip(names, grads, strict=True)}, res)
    res["labels_before_start"] = run_body(SCN_RELABEL_EPOCH - 1, table.copy())["train_loader"].dataset.label

    calibrate(net, lambda: net(x))
    with torch.no_grad():
        w_eval, out_eval = net(x)
    res["eval/weights"], res["eval/outputs"] = w_eval.numpy(), out_eval.numpy()

    x_sum = {"inputs": x_np}
    res["provenance"] = np.array(_provenance(
        "scn", checkout, ["src/train.py"],
        {"Res18Feature": "src/train.py:81-103 (imported)", "batch body of run_training": f"src/{body_lines}"},
        ["torchvision.models.resnet18(pretrained) -> resnet18(weights=None)",
         "Tensor.cuda / Module.cuda -> identity (CPU)", "optimizer -> zero_grad only, no step",
         "backward(retain_graph=True) to take each loss term's gradient afterwards"],
        _versions("torch", "torchvision", "numpy")))
    res["checksum/inputs"] = np.array(checksum(x_sum))
    res["checksum/weights"] = np.array(checksum(state))
    res["batch_index"] = SCN_BATCH_INDEX
    _save(out, res)


# -- RAN -----------------------------------------------------------------------------------------------------------

RAN_SHAPE = dict(batch=4, size=64, parts=6, classes=8)
RAN_GAINS = {"alpha.0.weight": 10.0, "beta.0.weight": 1.0, "fc.weight": 2.0}
RAN_CROP_SIZES = (100, 112, 224)
RAN_RUNNING = ("bn1", "layer1.0.bn1", "layer4.1.bn2")  # BatchNorm layers whose running statistics are stored


def ran_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The fixed RAN batch in the authors' layout ``B x 3 x H x W x 6`` (parts 0-4 the crops, 5 the face) and its
    labels (8 classes)."""
    s = RAN_SHAPE
    x = fixed_array("ran.inputs", (s["batch"], 3, s["size"], s["size"], s["parts"]))
    y = (fixed_array("ran.labels", (s["batch"],), "uniform") * s["classes"]).astype(np.int64)
    return x, y


def ran_face(size: int) -> np.ndarray:
    """A fixed ``size x size`` RGB uint8 image for the crop boxes."""
    return (fixed_array(f"ran.face{size}", (size, size, 3), "uniform") * 256).astype(np.uint8)


class _Recorder:
    """Stands for ``torch.nn.functional`` inside the authors' module and keeps every ``softmax`` output."""

    def __init__(self, functional):
        self._f, self.softmax_outputs = functional, []

    def __getattr__(self, name):
        return getattr(self._f, name)

    def softmax(self, *args, **kwargs):
        out = self._f.softmax(*args, **kwargs)
        self.softmax_outputs.append(out)
        return out


def _ran_forward(arl, net, run):
    """Run ``run()`` (a forward of the authors' net) and return its result, the softmaxed alphas and betas
    (``B x 1 x 6``, their part order) and the fused feature entering ``fc``."""
    recorder, fused = _Recorder(arl.F), []
    hook = net.fc.register_forward_pre_hook(lambda m, args: fused.append(args[0]))
    arl.F = recorder
    try:
        result = run()
    finally:
        arl.F = recorder._f
        hook.remove()
    alphas, betas = recorder.softmax_outputs
    return result, alphas, betas, fused[0]


def _crop_boxes(image: np.ndarray, crop: np.ndarray) -> tuple[int, int, int, int]:
    """Where ``crop`` lies in ``image``: (left, top, right, bottom) in pixels (the first exact match)."""
    h, w = crop.shape[:2]
    for top in range(image.shape[0] - h + 1):
        for left in range(image.shape[1] - w + 1):
            if np.array_equal(image[top:top + h, left:left + w], crop):
                return left, top, left + w, top + h
    raise RuntimeError("crop not found in the image")


def ran(checkout: Path, out: Path) -> None:
    """RAN's ResNet forward (``attention_rank_loss.py``), the loss line of its training script and the crop boxes
    of the on-the-fly part sampler."""
    import tempfile

    import torch
    from PIL import Image

    arl_py = checkout / "FERplus_dir" / "attention_rank_loss.py"
    train_py = checkout / "FERplus_dir" / "train_attention_rank_loss.py"
    sampler_py = checkout / "AffectNet_dir" / "simple_sample" / "part_attentioon_sample_fly.py"
    arl = _load_module("attention_rank_loss", arl_py)
    loss_src, loss_lines = _find_lines(train_py, ["pred_score, alphas_part_max, alphas_org = model(input_var)",
                                                  "loss = criterion(pred_score, target_var) + criterion1(",
                                                  "weights_loss = criterion1("])
    torch.manual_seed(0)
    net = arl.resnet18(end2end=True)
    state = _load_fixed(net, RAN_GAINS)
    x_np, y_np = ran_inputs()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    res: dict[str, np.ndarray] = {"labels": y_np}

    net.train()
    ns = dict(model=net, input_var=x.clone(), target_var=y.clone(), criterion=torch.nn.CrossEntropyLoss(),
              criterion1=arl.MyLoss())
    with _torch_shims():
        _, alphas, betas, fused = _ran_forward(arl, net, lambda: exec(compile(loss_src, str(train_py), "exec"), ns))
    a_max, a_org = ns["alphas_part_max"].detach().reshape(-1), ns["alphas_org"].detach().reshape(-1)
    active = 0.1 - (a_max - a_org) > 0
    assert active.any() and (~active).any(), f"MyLoss's margin active for {active.tolist()}: want a mix"
    assert float((0.1 - (a_max - a_org)).abs().min()) > 1e-4, "a face is too close to MyLoss's margin"
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(ns["loss"].sum(), list(params.values()))
    summarise_grads("grad/", {k: g.numpy() for k, g in zip(params, grads, strict=True)}, res)
    res.update({"train/pred_score": ns["pred_score"].detach().numpy(), "train/alphas_part_max": a_max.numpy(),
                "train/alphas_org": a_org.numpy(), "train/alphas": alphas[:, 0].detach().numpy(),
                "train/betas": betas[:, 0].detach().numpy(), "train/fused": fused.detach().numpy(),
                "loss/total": np.float64(ns["loss"].item()), "loss/my_loss": np.float64(ns["weights_loss"].item())})
    for layer in RAN_RUNNING:
        bn = net.get_submodule(layer)
        res[f"running/{layer}.running_mean"] = bn.running_mean.numpy().copy()  # calibrate() changes them below
        res[f"running/{layer}.running_var"] = bn.running_var.numpy().copy()

    calibrate(net, lambda: net(x))
    with torch.no_grad():
        (score, part_max, org), alphas, betas, fused = _ran_forward(arl, net, lambda: net(x))
    res.update({"eval/pred_score": score.numpy(), "eval/alphas_part_max": part_max.reshape(-1).numpy(),
                "eval/alphas_org": org.reshape(-1).numpy(), "eval/alphas": alphas[:, 0].numpy(),
                "eval/betas": betas[:, 0].numpy(), "eval/fused": fused.numpy()})

    # crop boxes: MsCelebDataset.__getitem__ of the on-the-fly sampler on one-image "videos" (no transform)
    sampler = _load_module("part_attentioon_sample_fly", sampler_py)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in RAN_CROP_SIZES:
            (tmp / f"face{size}").mkdir()
            Image.fromarray(ran_face(size)).save(tmp / f"face{size}" / "0.png")
        (tmp / "list.txt").write_text("".join(f"face{size} 1\n" for size in RAN_CROP_SIZES))
        (tmp / "labels.txt").write_text("0\n" * len(RAN_CROP_SIZES))
        dataset = sampler.MsCelebDataset(str(tmp), str(tmp / "list.txt"), str(tmp / "labels.txt"))
        for i, size in enumerate(RAN_CROP_SIZES):
            parts = dataset[i][0::2]  # 8 images: first ... eigth (labels in between)
            res[f"crops/boxes{size}"] = np.array([_crop_boxes(ran_face(size), np.asarray(p)) for p in parts])

    res["provenance"] = np.array(_provenance(
        "ran", checkout, ["FERplus_dir/attention_rank_loss.py", "FERplus_dir/train_attention_rank_loss.py",
                          "AffectNet_dir/simple_sample/part_attentioon_sample_fly.py"],
        {"ResNet.forward, MyLoss": "FERplus_dir/attention_rank_loss.py:155-208, 269-277 (imported)",
         "loss (training script)": f"FERplus_dir/{loss_lines}",
         "crops": "AffectNet_dir/simple_sample/part_attentioon_sample_fly.py:75-161 (MsCelebDataset.__getitem__)"},
        ["Tensor.cuda / Module.cuda -> identity (CPU; MyLoss builds torch.Tensor([0]).cuda())",
         "torch.nn.functional inside attention_rank_loss recorded (softmax outputs), fc input hooked: observed only",
         "MsCelebDataset without a transform (PIL crops compared as pixels)"],
        _versions("torch", "numpy", "PIL")))
    res["checksum/inputs"] = np.array(checksum({"inputs": x_np}))
    res["checksum/weights"] = np.array(checksum(state))
    _save(out, res)


# -- PAtt-Lite -----------------------------------------------------------------------------------------------------

PATT_SHAPE = dict(batch=8, grid=14, channels=512, classes=8)  # the notebook's BATCH_SIZE and NUM_CLASSES
# the head's weights in Keras's layouts, by a name of this tool's (layer, weight) -> (shape, standard deviation);
# a standard deviation of None marks the BatchNorm and attention-scale rules of patt_lite_head_weights
PATT_WEIGHTS = {
    "sep1.depthwise": ((4, 4, 512, 1), np.sqrt(2 / 16)), "sep1.pointwise": ((1, 1, 512, 256), np.sqrt(2 / 512)),
    "sep1.bias": ((256,), 0.1),
    "sep2.depthwise": ((2, 2, 256, 1), np.sqrt(2 / 4)), "sep2.pointwise": ((1, 1, 256, 256), np.sqrt(2 / 256)),
    "sep2.bias": ((256,), 0.1),
    "conv.kernel": ((1, 1, 256, 256), np.sqrt(2 / 256)), "conv.bias": ((256,), 0.1),
    "dense.kernel": ((256, 32), np.sqrt(2 / 256)), "dense.bias": ((32,), 0.1),
    "bn.gamma": ((32,), None), "bn.beta": ((32,), None), "bn.moving_mean": ((32,), None),
    "bn.moving_variance": ((32,), None), "attention.scale": ((), None),
    "head.kernel": ((32, 8), 2 / np.sqrt(32)), "head.bias": ((8,), 0.1),
}
PATT_CLASS_WEIGHTS = np.array([0.6, 1.4, 0.9, 1.1, 2.0, 0.8, 1.0, 1.7], np.float32)  # a fit(class_weight=...)


def patt_lite_head_weights() -> dict[str, np.ndarray]:
    """The fixed weights of PAtt-Lite's head, Keras layouts (see :data:`PATT_WEIGHTS`)."""
    out = {}
    for name, (shape, std) in PATT_WEIGHTS.items():
        z = fixed_array(f"patt.{name}", shape if shape else (1,)).reshape(shape)
        if name == "bn.gamma":
            out[name] = 1 + np.float32(0.1) * z
        elif name in ("bn.beta", "bn.moving_mean"):
            out[name] = np.float32(0.1) * z
        elif name == "bn.moving_variance":
            out[name] = np.exp(np.float32(0.2) * z).astype(np.float32)
        elif name == "attention.scale":
            out[name] = np.float32(0.05) * (1 + np.float32(0.1) * z)  # about 0.05: a peaked but not one-hot softmax
        else:
            out[name] = z * np.float32(std)
    return out


def patt_lite_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Fixed backbone features ``B x 14 x 14 x 512`` (NHWC; clipped to [0, 6] as after MobileNet's ReLU6) and
    labels. Noise plus an offset per sample and channel and one per 7x7 quadrant, so that pooled features and
    patch tokens differ between samples and patches (pooled i.i.d. noise would be almost the same for all)."""
    s = PATT_SHAPE
    b, g, c = s["batch"], s["grid"], s["channels"]
    noise = fixed_array("patt.features", (b, g, g, c))
    per_sample = fixed_array("patt.features.sample", (b, 1, 1, c))
    per_quadrant = fixed_array("patt.features.quadrant", (b, 2, 2, c)).repeat(g // 2, 1).repeat(g // 2, 2)
    feats = np.clip(noise + per_sample + per_quadrant, 0, 6)
    y = (fixed_array("patt.labels", (s["batch"],), "uniform") * s["classes"]).astype(np.int64)
    return feats, y


def _notebook_code(notebook: Path) -> tuple[dict[str, str], dict[str, str]]:
    """From the notebook: the constants cell, the model-building part of the model cell (up to the first
    ``model.compile``) and the stage-1 head (the lines after ``x = base_model(x, training=False)`` up to
    ``outputs = prediction_layer(x)``), with their cell and line numbers."""
    cells = [("".join(c["source"]), i) for i, c in enumerate(json.loads(notebook.read_text())["cells"])
             if c["cell_type"] == "code"]
    constants, c_idx = next((src, i) for src, i in cells if "NUM_CLASSES =" in src)
    model_cell, m_idx = next((src, i) for src, i in cells if "patch_extraction = " in src)
    lines = model_cell.splitlines()
    compile_at = next(i for i, line in enumerate(lines) if line.startswith("model.compile("))
    base_at = next(i for i, line in enumerate(lines) if line.startswith("x = base_model(x, training=False)"))
    out_at = next(i for i, line in enumerate(lines) if line.startswith("outputs = prediction_layer(x)"))
    code = {"constants": constants, "build": "\n".join(lines[:compile_at + 1]),
            "head": "\n".join(lines[base_at + 1:out_at + 1])}
    where = {"constants": f"cell {c_idx}", "build": f"cell {m_idx} lines 1-{compile_at + 1}",
             "head": f"cell {m_idx} lines {base_at + 2}-{out_at + 1}"}
    return code, where


def patt_lite(checkout: Path, out: Path) -> None:
    """The notebook's PAtt-Lite head (patch extraction, pooling, Dense + BatchNorm, attention, classifier) and its
    compiled loss on fixed backbone features, in inference and in training mode."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit("set TF_USE_LEGACY_KERAS=1: the notebook is Keras 2 code (tf-keras)")
    import tensorflow as tf

    notebook = checkout / "patt-lite-notebook.ipynb"
    code, where = _notebook_code(notebook)
    tf.keras.utils.set_random_seed(0)
    mobilenet = tf.keras.applications.mobilenet
    original = mobilenet.MobileNet
    # shim: no download here; the backbone's weights are not compared (the head runs on fixed features)
    mobilenet.MobileNet = lambda *a, **k: original(*a, **{**k, "weights": None})
    ns: dict = {"tf": tf, "keras": tf.keras, "np": np}
    try:
        exec(compile(code["constants"], f"{notebook}:{where['constants']}", "exec"), ns)
        exec(compile(code["build"], f"{notebook}:{where['build']}", "exec"), ns)
    finally:
        mobilenet.MobileNet = original
    feats_in = tf.keras.Input(shape=(PATT_SHAPE["grid"], PATT_SHAPE["grid"], PATT_SHAPE["channels"]))
    ns["x"] = feats_in
    exec(compile(code["head"], f"{notebook}:{where['head']}", "exec"), ns)
    head = tf.keras.Model(feats_in, ns["outputs"], name="patt-lite-head")
    drops = [layer for layer in head.layers if isinstance(layer, tf.keras.layers.Dropout)]
    assert len(drops) == 1 and abs(drops[0].rate - 0.1) < 1e-9
    compiled = ns["model"]  # the notebook's compiled model: its loss is what training minimised
    weights = patt_lite_head_weights()
    patch, pre, attention, pred = ns["patch_extraction"], ns["pre_classification"], ns["self_attention"], \
        ns["prediction_layer"]

    def assign() -> None:
        sep1, sep2, conv = patch.layers
        dense, bn = pre.layers
        for layer, names in ((sep1, ("sep1.depthwise", "sep1.pointwise", "sep1.bias")),
                             (sep2, ("sep2.depthwise", "sep2.pointwise", "sep2.bias")),
                             (conv, ("conv.kernel", "conv.bias")), (dense, ("dense.kernel", "dense.bias")),
                             (bn, ("bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_variance")),
                             (attention, ("attention.scale",)), (pred, ("head.kernel", "head.bias"))):
            layer.set_weights([weights[n] for n in names])

    def named_variables() -> dict[str, object]:
        sep1, sep2, conv = patch.layers
        dense, bn = pre.layers
        return {"sep1.depthwise": sep1.depthwise_kernel, "sep1.pointwise": sep1.pointwise_kernel,
                "sep1.bias": sep1.bias, "sep2.depthwise": sep2.depthwise_kernel,
                "sep2.pointwise": sep2.pointwise_kernel, "sep2.bias": sep2.bias, "conv.kernel": conv.kernel,
                "conv.bias": conv.bias, "dense.kernel": dense.kernel, "dense.bias": dense.bias, "bn.gamma": bn.gamma,
                "bn.beta": bn.beta, "attention.scale": attention.scale, "head.kernel": pred.kernel,
                "head.bias": pred.bias}

    feats_np, y_np = patt_lite_inputs()
    feats, y = tf.constant(feats_np), tf.constant(y_np)
    sample_weight = tf.constant(PATT_CLASS_WEIGHTS[y_np])  # what fit(class_weight=...) turns the labels into
    res: dict[str, np.ndarray] = {"labels": y_np, "class_weights": PATT_CLASS_WEIGHTS}

    def losses(probs):
        return (compiled.compute_loss(y=y, y_pred=probs),
                compiled.compute_loss(y=y, y_pred=probs, sample_weight=sample_weight))

    assign()
    probs = head(feats, training=False)
    plain, weighted = losses(probs)
    res.update({"eval/probs": probs.numpy(), "eval/loss": np.float64(plain.numpy()),
                "eval/loss_weighted": np.float64(weighted.numpy())})

    # training mode (BatchNorm on batch statistics); shim: the Dropout(0.1) is random, so its rate is set to 0
    drops[0].rate = 0.0
    assign()
    variables = named_variables()
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(feats)
        probs = head(feats, training=True)
        plain, weighted = losses(probs)
    grads = tape.gradient(plain, {**variables, "features": feats})
    summarise_grads("grad/", {k: g.numpy() for k, g in grads.items()}, res)
    grads_w = tape.gradient(weighted, variables)
    res.update({f"grad_weighted/norm/{k}": np.float64(np.linalg.norm(g.numpy().astype(np.float64)))
                for k, g in grads_w.items()})
    bn = pre.layers[1]
    res.update({"train/probs": probs.numpy(), "train/loss": np.float64(plain.numpy()),
                "train/loss_weighted": np.float64(weighted.numpy()),
                "train/moving_mean": np.array(bn.moving_mean), "train/moving_variance": np.array(bn.moving_variance)})

    # the notebook's layers (same weights) on the 2x2 patch tokens: not the authors' code, the paper's attention
    assign()
    b = PATT_SHAPE["batch"]
    tokens = tf.reshape(patch(feats), (b * 4, 256))  # row-major 2x2 grid; the BatchNorm was built for 2-D input
    for mode in ("eval", "train"):
        t = tf.reshape(pre(tokens, training=mode == "train"), (b, 4, 32))
        res[f"tokens_{mode}/probs"] = pred(tf.reduce_mean(attention([t, t]), axis=1)).numpy()
        assign()

    backbone = ns["backbone"]
    pixels = np.arange(256, dtype=np.float32).reshape(1, 1, 16, 16).repeat(3, 1).transpose(0, 2, 3, 1)
    res.update({"cut/name": np.array(backbone.layers[-29].name),
                "cut/shape": np.array(ns["base_model"].output_shape[1:]),
                "preprocess/pixels": pixels[0, ..., 0],
                "preprocess/values": ns["preprocess_input"](pixels.copy())[0, ..., 0],
                "count_params": np.int64(compiled.count_params())})
    res["provenance"] = np.array(_provenance(
        "patt_lite", checkout, ["patt-lite-notebook.ipynb"],
        {k: f"patt-lite-notebook.ipynb {v}" for k, v in where.items()},
        ["MobileNet(weights='imagenet') -> weights=None (no download; the backbone is not compared)",
         "Dropout(0.1) rate set to 0 for the training-mode pass (random masks cannot be matched)",
         "fit(class_weight=...) as sample_weight = class_weight[label] into the compiled loss"],
        {"tensorflow": tf.__version__, "tf_keras": __import__("tf_keras").__version__, "numpy": np.__version__}))
    res["checksum/inputs"] = np.array(checksum({"features": feats_np}))
    res["checksum/weights"] = np.array(checksum(weights))
    _save(out, res)


def _save(out: Path, res: dict[str, np.ndarray]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **res)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB, {len(res)} arrays)")


# -- command line --------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("method", choices=sorted(COMMITS))
    parser.add_argument("checkout", type=Path, help="the authors' repository (a git checkout)")
    parser.add_argument("--out", type=Path, help="default: tests/data/parity_<method>_reference.npz")
    args = parser.parse_args()
    out = args.out or DATA / f"parity_{args.method}_reference.npz"
    {"scn": scn, "ran": ran, "patt_lite": patt_lite}[args.method](args.checkout.resolve(), out)


if __name__ == "__main__":
    main()
