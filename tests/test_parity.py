"""Parity with the authors' code: SCN (``src/train.py``), RAN (``attention_rank_loss.py`` and its training script)
and PAtt-Lite (the Keras notebook), on fixed inputs and weights.

The reference numbers were computed by the authors' own code, run outside FER Lab by ``tools/parity_reference.py``
(commits, files and lines in each file's ``provenance``); inputs and weights are regenerated here from the same
seeds by that tool's :func:`fixed_array` / :func:`fixed_state` and checked against stored checksums. Tolerances:
1e-5 against PyTorch code (absolute on outputs, losses, gradient entries; relative on gradient norms), 1e-4 against
Keras. What is and is not compared is in ``docs/PARITY.md``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_core.config import load_config
from fer_core.losses import rank_regularization
from fer_core.methods import SCNTraining, TrainData
from fer_core.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
TOL = 1e-5
KERAS_TOL = 1e-4

_spec = importlib.util.spec_from_file_location("parity_reference", ROOT / "tools" / "parity_reference.py")
ref_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref_tool)


def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"parity_{name}_reference.npz") as f:
        return {k: f[k] for k in f.files}


def _fixed_weights(model: torch.nn.Module, their_key, gains: dict[str, float]) -> str:
    """Load the tool's fixed weights into ``model`` (keys drawn under the authors' names, ``their_key(ours)``),
    strictly; returns their checksum."""
    state = model.state_dict()
    theirs = {their_key(k): k for k in state if not k.endswith("num_batches_tracked")}
    values = ref_tool.fixed_state({t: tuple(state[o].shape) for t, o in theirs.items()}, gains)
    model.load_state_dict({**state, **{o: torch.from_numpy(values[t]) for t, o in theirs.items()}}, strict=True)
    return ref_tool.checksum(values)


def _close(name: str, ours, theirs, tol: float = TOL) -> float:
    """Max |ours - theirs| after asserting it is within ``tol``."""
    ours = np.asarray(ours.detach() if torch.is_tensor(ours) else ours, dtype=np.float64)
    theirs = np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, f"{name}: shape {ours.shape} vs {theirs.shape}"
    diff = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    assert diff <= tol, f"{name}: max |ours - theirs| = {diff:.3g} > {tol:g}"
    return diff


def _check_grads(prefix: str, ref: dict, grads: dict[str, np.ndarray]) -> float:
    """Compare ``grads`` (keyed by the authors' names) with the stored norms (relative ``TOL``), whole small
    gradients and sampled entries of large ones (absolute ``TOL``); returns the largest absolute entry difference."""
    worst = 0.0
    stored = {k.split("/", 2)[2] for k in ref if k.startswith(prefix)}
    assert stored == set(grads), f"{prefix}: parameters differ: {sorted(stored ^ set(grads))}"
    for key, g in grads.items():
        if f"{prefix}norm/{key}" in ref:
            norm, theirs = float(np.linalg.norm(g.astype(np.float64))), float(ref[f"{prefix}norm/{key}"])
            assert abs(norm - theirs) <= TOL * max(1.0, theirs), f"{prefix}{key}: norm {norm} vs {theirs}"
        if f"{prefix}full/{key}" in ref:
            worst = max(worst, _close(f"{prefix}{key}", g, ref[f"{prefix}full/{key}"]))
        elif f"{prefix}sample/{key}" in ref:
            pos = ref_tool.sample_positions(g.size)
            worst = max(worst, _close(f"{prefix}{key}", g.reshape(-1)[pos], ref[f"{prefix}sample/{key}"]))
    return worst


def _stored_grads(ref: dict, prefix: str, key: str) -> np.ndarray:
    return ref.get(f"{prefix}full/{key}", ref.get(f"{prefix}sample/{key}"))


def _our_entries(g: np.ndarray, ref: dict, prefix: str, key: str) -> np.ndarray:
    return g if f"{prefix}full/{key}" in ref else g.reshape(-1)[ref_tool.sample_positions(g.size)]


# -- SCN: src/train.py ---------------------------------------------------------------------------------------------

SCN_KEYS = {"features.0.": "backbone.conv1.", "features.1.": "backbone.bn1.", "features.4.": "backbone.layer1.",
            "features.5.": "backbone.layer2.", "features.6.": "backbone.layer3.", "features.7.": "backbone.layer4."}


def scn_their_key(ours: str) -> str:
    """FER Lab's SCN key -> ``Res18Feature``'s (``features`` is torchvision's ResNet-18 children up to avgpool)."""
    for theirs, mine in SCN_KEYS.items():
        if ours.startswith(mine):
            return theirs + ours[len(mine):]
    return ours  # fc, alpha.0


@pytest.fixture(scope="module")
def scn_ref():
    return _reference("scn")


def _scn_model(ref: dict) -> torch.nn.Module:
    model = create_model("scn", num_classes=7, drop_rate=0.0)
    assert _fixed_weights(model, scn_their_key, ref_tool.SCN_GAINS) == str(ref["checksum/weights"])
    return model


def _scn_batch(ref: dict) -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = ref_tool.scn_inputs()
    assert ref_tool.checksum({"inputs": x}) == str(ref["checksum/inputs"])
    return torch.from_numpy(x), torch.from_numpy(ref["batch_index"])


def _scn_method(tmp_path: Path, ref: dict, spec: str) -> SCNTraining:
    cfg = load_config(None, ["model.name=scn", f"train.method={{name: scn, {spec}}}"])
    labels = torch.from_numpy(ref["labels_before"])
    data = TrainData(images=torch.zeros(len(labels), 3, 8, 8, dtype=torch.uint8), labels=labels,
                     clean_labels=labels.clone(), class_names=[f"c{i}" for i in range(7)])
    return SCNTraining(cfg, data, tmp_path, torch.device("cpu"))


def _scn_step(model, method: SCNTraining, x, idx, epoch: int):
    """One training step; returns the result, the importance weights it used and the gradients by their keys."""
    seen = []
    hook = model.alpha.register_forward_hook(lambda m, i, o: seen.append(o.detach().reshape(-1)))
    model.train()
    model.zero_grad(set_to_none=True)
    try:
        result = method.step(model, x, idx, epoch)
    finally:
        hook.remove()
    result.loss.backward()
    grads = {scn_their_key(k): p.grad.numpy().copy() for k, p in model.named_parameters()}
    return result, seen[0], grads


def test_scn_forward_matches_res18feature(scn_ref):
    """Eval mode, after the running statistics were set by one training pass at momentum 1 (the fixed ones would
    saturate the sigmoid): logits ``alpha * fc(x)`` and importance weights."""
    model, (x, _) = _scn_model(scn_ref), _scn_batch(scn_ref)
    ref_tool.calibrate(model, lambda: model(x))
    with torch.no_grad():
        out = model.forward_attention(x)
        logits = model(x)
    _close("eval logits", out.logits, scn_ref["eval/outputs"])
    _close("eval weights", out.weights, scn_ref["eval/weights"])
    assert torch.equal(logits, out.logits)


def test_scn_code_loss_gradients_and_relabels_scope_all(scn_ref, tmp_path):
    """``loss: code`` and ``relabel_scope: all`` against the batch body of ``run_training`` (train.py:216-258):
    outputs and weights in training mode, the low group of the rank regularisation, CE, RR and their sum,
    the gradient of every parameter, the relabel decisions and the label table they leave."""
    model, (x, idx) = _scn_model(scn_ref), _scn_batch(scn_ref)
    epoch = ref_tool.SCN_RELABEL_EPOCH - 1                                   # they count epochs from 1
    method = _scn_method(tmp_path, scn_ref, f"loss: code, relabel_scope: all, relabel_epoch: {epoch}")
    result, weights, grads = _scn_step(model, method, x, idx, epoch)
    _close("train logits", result.logits, scn_ref["train/outputs"])
    _close("train weights", weights, scn_ref["train/weights"])
    _, low = rank_regularization(weights, 0.7, 0.15)
    assert low.tolist() == scn_ref["train/low"].tolist()
    _close("loss", result.loss, scn_ref["loss/total"])
    _close("rr loss", result.stats["rr_loss"], scn_ref["loss/rr"])
    _close("wce loss", result.stats["wce_loss"], scn_ref["loss/ce"])
    _check_grads("grad_total/", scn_ref, grads)

    mask, arg = method.relabel_mask(result.logits.detach(), result.targets, low)
    assert mask.tolist() == scn_ref["train/decide"].tolist()
    assert arg[mask].tolist() == scn_ref["train/predicted"][scn_ref["train/decide"]].tolist()
    method.flush()
    assert method.labels.tolist() == scn_ref["labels_after"].tolist()
    assert method.labels.tolist() != scn_ref["labels_before"].tolist()

    before = _scn_method(tmp_path / "before", scn_ref, f"loss: code, relabel_scope: all, relabel_epoch: {epoch}")
    _scn_step(model, before, x, idx, epoch - 1)                              # the epoch before relabelling starts
    before.flush()
    assert before.labels.tolist() == scn_ref["labels_before_start"].tolist() == scn_ref["labels_before"].tolist()


@pytest.mark.parametrize("gamma", [0.5, 0.25])
def test_scn_paper_loss_and_low_scope(scn_ref, tmp_path, gamma):
    """``loss: paper`` (``gamma * L_RR + (1 - gamma) * L_WCE``) and ``relabel_scope: low``, neither of which
    train.py implements: compared with train.py's own CE and RR terms and their gradients, weighted, and with its
    relabel decisions restricted to its low-importance group (``down_idx``)."""
    model, (x, idx) = _scn_model(scn_ref), _scn_batch(scn_ref)
    epoch = ref_tool.SCN_RELABEL_EPOCH - 1
    method = _scn_method(tmp_path, scn_ref,
                         f"loss: paper, gamma: {gamma}, relabel_scope: low, relabel_epoch: {epoch}")
    result, _, grads = _scn_step(model, method, x, idx, epoch)
    _close("paper loss", result.loss, gamma * scn_ref["loss/rr"] + (1 - gamma) * scn_ref["loss/ce"])
    for key, g in grads.items():
        theirs = (gamma * _stored_grads(scn_ref, "grad_rr/", key)
                  + (1 - gamma) * _stored_grads(scn_ref, "grad_ce/", key))
        _close(f"paper grad {key}", _our_entries(g, scn_ref, "grad_rr/", key), theirs)

    method.flush()
    decide, low = scn_ref["train/decide"], scn_ref["train/low"]
    assert (decide & ~low).any() and (decide & low).any()                    # the scopes differ on this batch
    expected = scn_ref["labels_before"].copy()
    chosen = decide & low
    expected[scn_ref["batch_index"][chosen]] = scn_ref["train/predicted"][chosen]
    assert method.labels.tolist() == expected.tolist()


def test_scn_reference_provenance(scn_ref):
    prov = json.loads(str(scn_ref["provenance"]))
    assert prov["commit"] == ref_tool.COMMITS["scn"]
    assert prov["lines_run"]["batch body of run_training"] == "src/train.py:216-258"


# -- RAN: attention_rank_loss.py, train_attention_rank_loss.py, part_attentioon_sample_fly.py ----------------------

PARTS = [5, 0, 1, 2, 3, 4]  # FER Lab's part order (face first) in the authors' (crops 0-4, the face last)


def ran_their_key(ours: str) -> str:
    """FER Lab's RAN key -> the authors' ``ResNet`` (backbone layers at the top level; alpha, beta, fc alike)."""
    return ours.removeprefix("backbone.")


@pytest.fixture(scope="module")
def ran_ref():
    return _reference("ran")


def _ran_model(ref: dict):
    model = create_model("ran", num_classes=8)
    assert _fixed_weights(model, ran_their_key, ref_tool.RAN_GAINS) == str(ref["checksum/weights"])
    x, y = ref_tool.ran_inputs()
    assert ref_tool.checksum({"inputs": x}) == str(ref["checksum/inputs"])
    assert y.tolist() == ref["labels"].tolist()
    x = torch.from_numpy(x)
    return model, x[..., 5], [x[..., i] for i in range(5)], torch.from_numpy(y)


def _ran_compare(prefix: str, ref: dict, t) -> float:
    """The head's outputs against what ``ResNet.forward`` computed (alphas and betas reordered face first)."""
    return max(_close(f"{prefix} pred_score", t.logits, ref[f"{prefix}/pred_score"]),
               _close(f"{prefix} alphas_part_max", t.alpha[:, 1:].max(1).values, ref[f"{prefix}/alphas_part_max"]),
               _close(f"{prefix} alphas_org", t.alpha[:, 0], ref[f"{prefix}/alphas_org"]),
               _close(f"{prefix} alpha", t.alpha, ref[f"{prefix}/alphas"][:, PARTS]),
               _close(f"{prefix} beta", t.beta, ref[f"{prefix}/betas"][:, PARTS]),
               _close(f"{prefix} fused", t.fused, ref[f"{prefix}/fused"]))


def test_ran_training_step_matches_authors_code(ran_ref):
    """Training mode: the six parts through the shared backbone (per-part batch statistics), alpha, beta, the
    fused feature and logits of ``ResNet.forward``; the loss of train_attention_rank_loss.py
    (``CrossEntropyLoss + MyLoss``, weight 1, margin 0.1) and its gradient for every parameter; the BatchNorm running
    statistics the six passes leave (crops first, the face last)."""
    import torch.nn.functional as F

    from fer_core.losses import region_biased_loss

    model, face, crops, y = _ran_model(ran_ref)
    model.train()
    t = model.attend(model.encode(face, crops))
    _ran_compare("train", ran_ref, t)
    region = region_biased_loss(t.alpha, 0.1)
    loss = F.cross_entropy(t.logits, y) + region
    _close("MyLoss", region, ran_ref["loss/my_loss"])
    _close("loss", loss, ran_ref["loss/total"])
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    _check_grads("grad/", ran_ref, {ran_their_key(k): g.numpy() for k, g in zip(params, grads, strict=True)})
    for layer in ref_tool.RAN_RUNNING:
        bn = model.backbone.get_submodule(layer)
        _close(f"{layer}.running_mean", bn.running_mean, ran_ref[f"running/{layer}.running_mean"])
        _close(f"{layer}.running_var", bn.running_var, ran_ref[f"running/{layer}.running_var"])


def test_ran_eval_forward_matches_authors_code(ran_ref):
    """Eval mode, after the running statistics were set by one training pass at momentum 1 (those of the last
    part the backbone saw: the face, in both)."""
    model, face, crops, _ = _ran_model(ran_ref)
    ref_tool.calibrate(model, lambda: model.encode(face, crops))
    with torch.no_grad():
        _ran_compare("eval", ran_ref, model.attend(model.encode(face, crops)))


@pytest.mark.parametrize("size", ref_tool.RAN_CROP_SIZES)
def test_ran_crops_are_the_samplers_boxes(ran_ref, size):
    """``ran_crops`` cuts the five boxes of the on-the-fly sampler (``MsCelebDataset.__getitem__``: centre-down,
    top-left, top-right, 0.9 and 0.8 centre crops, ``int()`` of the fractions), pixel for pixel, on square faces.
    The sampler's sixth part (a 0.75 centre crop its comment calls the original image) is not FER Lab's face part,
    which is the whole face; see docs/PARITY.md."""
    from fer_core.models.ran import ran_crops

    face = ref_tool.ran_face(size)
    x = torch.from_numpy(face).permute(2, 0, 1)[None].float()
    boxes = ran_ref[f"crops/boxes{size}"]
    for i, (left, top, right, bottom) in enumerate(boxes[:5]):
        crop = ran_crops(x, size=(bottom - top, right - left))[i]  # at its own size the crop is not resized
        assert torch.equal(crop, x[..., top:bottom, left:right]), f"crop {i} at {size} px: box {boxes[i]}"
    assert boxes[5].tolist() != [0, 0, size, size]                       # their sixth part: not the whole face


def test_ran_reference_provenance(ran_ref):
    prov = json.loads(str(ran_ref["provenance"]))
    assert prov["commit"] == ref_tool.COMMITS["ran"]
    assert prov["lines_run"]["loss (training script)"] == "FERplus_dir/train_attention_rank_loss.py:255,258,259"


# -- PAtt-Lite: patt-lite-notebook.ipynb (Keras) -------------------------------------------------------------------

def _to_port(name: str, value: np.ndarray) -> np.ndarray:
    """A Keras-layout head weight in the port's layout."""
    if name.endswith(("depthwise",)):
        return value.transpose(2, 3, 0, 1)                     # kh x kw x C x 1 -> C x 1 x kh x kw
    if name.endswith(("pointwise", "conv.kernel")):
        return value.transpose(3, 2, 0, 1)                     # kh x kw x in x out -> out x in x kh x kw
    if name.endswith(("dense.kernel", "head.kernel")):
        return value.T
    return value


PATT_PARAMS = {"sep1.depthwise": "patch.sep1.conv_dw.weight", "sep1.pointwise": "patch.sep1.conv_pw.weight",
               "sep1.bias": "patch.sep1.conv_pw.bias", "sep2.depthwise": "patch.sep2.conv_dw.weight",
               "sep2.pointwise": "patch.sep2.conv_pw.weight", "sep2.bias": "patch.sep2.conv_pw.bias",
               "conv.kernel": "patch.conv.weight", "conv.bias": "patch.conv.bias", "dense.kernel": "pre_fc.weight",
               "dense.bias": "pre_fc.bias", "bn.gamma": "pre_bn.weight", "bn.beta": "pre_bn.bias",
               "bn.moving_mean": "pre_bn.running_mean", "bn.moving_variance": "pre_bn.running_var",
               "attention.scale": "attn.scale", "head.kernel": "head.weight", "head.bias": "head.bias"}


@pytest.fixture(scope="module")
def patt_ref():
    return _reference("patt_lite")


def _patt_model(ref: dict, name: str = "patt_lite"):
    model = create_model(name, num_classes=8, drop_rate=0.0)
    weights = ref_tool.patt_lite_head_weights()
    assert ref_tool.checksum(weights) == str(ref["checksum/weights"])
    state = model.state_dict()
    for keras_name, port_name in PATT_PARAMS.items():
        value = torch.tensor(_to_port(keras_name, weights[keras_name]))
        assert value.shape == state[port_name].shape, (keras_name, value.shape, state[port_name].shape)
        state[port_name] = value
    model.load_state_dict(state, strict=True)
    feats, y = ref_tool.patt_lite_inputs()
    assert ref_tool.checksum({"features": feats}) == str(ref["checksum/inputs"])
    assert y.tolist() == ref["labels"].tolist()
    return model, torch.from_numpy(feats).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


def test_patt_lite_head_matches_keras_notebook_inference(patt_ref):
    """The notebook's stage-1 head (patch extraction, GAP, Dropout, Dense(32, ReLU) + BatchNorm, Attention across
    the batch, Dense + softmax) in inference mode on fixed backbone features, and its compiled
    sparse-categorical cross-entropy."""
    import torch.nn.functional as F

    model, feats, y = _patt_model(patt_ref)
    with torch.no_grad():
        logits = model.eval().forward_head(model.patch(feats))     # patch block, then the head
    _close("eval probs", logits.softmax(1), patt_ref["eval/probs"], KERAS_TOL)
    _close("eval loss", F.cross_entropy(logits, y), patt_ref["eval/loss"], KERAS_TOL)


def test_patt_lite_head_matches_keras_notebook_training(patt_ref):
    """Training mode (BatchNorm on batch statistics; Dropout at 0 on both sides): probabilities, loss, the gradient
    of every head weight and of the input features, and the BatchNorm moving mean."""
    import torch.nn.functional as F

    model, feats, y = _patt_model(patt_ref)
    feats.requires_grad_(True)
    logits = model.train().forward_head(model.patch(feats))
    loss = F.cross_entropy(logits, y)
    _close("train probs", logits.softmax(1), patt_ref["train/probs"], KERAS_TOL)
    _close("train loss", loss, patt_ref["train/loss"], KERAS_TOL)
    loss.backward()
    params = dict(model.named_parameters())
    for keras_name, port_name in PATT_PARAMS.items():
        if keras_name.startswith("bn.moving"):
            continue
        ours = _to_keras(keras_name, params[port_name].grad.numpy())
        assert abs(np.linalg.norm(ours) - float(patt_ref[f"grad/norm/{keras_name}"])) <= KERAS_TOL * max(
            1.0, float(patt_ref[f"grad/norm/{keras_name}"])), keras_name
        stored = patt_ref.get(f"grad/full/{keras_name}")
        if stored is None:
            ours, stored = ours.reshape(-1)[ref_tool.sample_positions(ours.size)], patt_ref[f"grad/sample/{keras_name}"]
        _close(f"grad {keras_name}", ours, stored, KERAS_TOL)
    g = feats.grad.permute(0, 2, 3, 1).numpy()
    _close("grad features", g.reshape(-1)[ref_tool.sample_positions(g.size)], patt_ref["grad/sample/features"],
           KERAS_TOL)
    assert abs(np.linalg.norm(g) - float(patt_ref["grad/norm/features"])) <= KERAS_TOL * max(
        1.0, float(patt_ref["grad/norm/features"]))
    _close("moving mean", model.pre_bn.running_mean, patt_ref["train/moving_mean"], KERAS_TOL)
    _close("moving variance", model.pre_bn.running_var, patt_ref["train/moving_variance"], KERAS_TOL)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_patt_lite_patch_attention_matches_the_notebooks_layers_on_tokens(patt_ref, mode):
    """``patt_lite_patch`` against the notebook's own layer objects (same weights) applied to the 2x2 patch tokens:
    Dense(32, ReLU) + BatchNorm per token (statistics over batch and tokens), Attention across the 4 tokens, mean
    over tokens, Dense + softmax. Not the authors' code (they attend across the batch): the paper's description
    in Keras's semantics, with the port's mean over tokens."""
    model, feats, _ = _patt_model(patt_ref, "patt_lite_patch")
    model.train(mode == "train")
    with torch.no_grad():
        probs = model.forward_head(model.patch(feats)).softmax(1)
    _close(f"{mode} token probs", probs, patt_ref[f"tokens_{mode}/probs"], KERAS_TOL)


def test_patt_lite_cut_preprocessing_and_size_match_the_notebook(patt_ref):
    """The backbone cut (``backbone.layers[-29]``, 14x14x512 at 224), ``mobilenet.preprocess_input`` against the
    model's mean/std 0.5, and Keras's ``count_params()`` of the notebook's stage-1 model (8 classes)."""
    from fer_core.models import count_params

    model = create_model("patt_lite", num_classes=8)
    assert str(patt_ref["cut/name"]) == "conv_dw_9_relu"                  # the port's docstring names this cut
    with torch.no_grad():
        assert tuple(model.forward_backbone(torch.zeros(1, 3, 224, 224)).shape[1:]) == (512, 14, 14)
    assert tuple(patt_ref["cut/shape"]) == (14, 14, 512)
    mean, std = np.array(model.cfg.mean[0]), np.array(model.cfg.std[0])
    _close("preprocess", (patt_ref["preprocess/pixels"] / 255.0 - mean) / std, patt_ref["preprocess/values"], 1e-6)
    assert count_params(model, with_bn_stats=True) == int(patt_ref["count_params"])


def _keras_weighted_ce(logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """What ``fit(class_weight=...)`` minimises: ``mean_i w[y_i] * CE_i`` (Keras's sum-over-batch-size reduction)."""
    import torch.nn.functional as F

    return (class_weights[y] * F.cross_entropy(logits, y, reduction="none")).mean()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_patt_lite_class_weighted_loss_is_kerass_batch_mean(patt_ref, mode):
    """The notebook trains stage 1 with ``class_weight``; Keras then averages ``w[y_i] * CE_i`` over the batch."""
    model, feats, y = _patt_model(patt_ref)
    model.train(mode == "train")
    logits = model.forward_head(model.patch(feats))
    w = torch.from_numpy(patt_ref["class_weights"])
    loss = _keras_weighted_ce(logits, y, w)
    _close(f"{mode} weighted loss", loss, patt_ref[f"{mode}/loss_weighted"], KERAS_TOL)
    if mode == "train":
        loss.backward()
        for keras_name, port_name in PATT_PARAMS.items():
            if not keras_name.startswith("bn.moving"):
                ours = np.linalg.norm(model.get_parameter(port_name).grad.numpy())
                theirs = float(patt_ref[f"grad_weighted/norm/{keras_name}"])
                assert abs(ours - theirs) <= KERAS_TOL * max(1.0, theirs), (keras_name, ours, theirs)


@pytest.mark.xfail(strict=True, reason="known difference, reported: fer_core's class-weighted cross-entropy divides "
                   "by the batch's sum of weights (PyTorch), Keras by the batch size (x1.325 on this batch)")
def test_patt_lite_training_loss_with_balanced_weights_matches_keras(patt_ref, tmp_path):
    from fer_core.methods import StandardTraining

    model, feats, y = _patt_model(patt_ref)
    w = torch.from_numpy(patt_ref["class_weights"])
    cfg = load_config(None, ["model.name=patt_lite", "train.class_weights=balanced"])
    data = TrainData(images=torch.zeros(len(y), 3, 8, 8, dtype=torch.uint8), labels=y, clean_labels=y,
                     class_names=[f"c{i}" for i in range(8)])
    method = StandardTraining(cfg, data, tmp_path, torch.device("cpu"), class_weights=w)
    with torch.no_grad():
        loss = method.hard_loss(model.eval().forward_head(model.patch(feats)), y)
    _close("weighted loss", loss, patt_ref["eval/loss_weighted"], KERAS_TOL)


def test_patt_lite_reference_provenance(patt_ref):
    prov = json.loads(str(patt_ref["provenance"]))
    assert prov["commit"] == ref_tool.COMMITS["patt_lite"]
    assert prov["lines_run"]["head"] == "patt-lite-notebook.ipynb cell 3 lines 28-33"


def _to_keras(name: str, value: np.ndarray) -> np.ndarray:
    """A port gradient in the Keras layout of ``name``."""
    if name.endswith("depthwise"):
        return value.transpose(2, 3, 0, 1)                     # C x 1 x kh x kw -> kh x kw x C x 1
    if name.endswith(("pointwise", "conv.kernel")):
        return value.transpose(2, 3, 1, 0)                     # out x in x kh x kw -> kh x kw x in x out
    if name.endswith(("dense.kernel", "head.kernel")):
        return value.T
    return value
