"""Losses and training methods against the papers' formulas; every method trains end to end on tiny SynthFACS."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fer_core import io
from fer_core.config import ConfigError, load_config
from fer_core.distributed import SINGLE_PROCESS
from fer_core.losses import (
    balanced_class_weights,
    inject_label_noise,
    kl_to_targets,
    rank_regularization,
    region_biased_loss,
    soft_target_cross_entropy,
)
from fer_core.methods import SCNTraining, TrainData
from fer_core.models import AttentionOutput
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


# --------------------------------------------------------------------------------------------- losses
def test_soft_target_losses_follow_their_formulas():
    torch.manual_seed(0)
    logits, q = torch.randn(5, 7), F.softmax(torch.randn(5, 7), 1)
    p = F.softmax(logits, 1)
    ce = -(q * p.log()).sum(1).mean()
    assert soft_target_cross_entropy(logits, q) == pytest.approx(float(ce), rel=1e-5)
    entropy = -(q * q.log()).sum(1).mean()
    assert kl_to_targets(logits, q) == pytest.approx(float(ce - entropy), rel=1e-4)
    one_hot = F.one_hot(torch.tensor([1, 2, 3, 4, 5]), 7).float()
    assert soft_target_cross_entropy(logits, one_hot) == pytest.approx(
        float(F.cross_entropy(logits, torch.tensor([1, 2, 3, 4, 5]))), rel=1e-5)


def test_rank_regularization_splits_at_beta_and_applies_the_margin():
    w = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5, 0.05])
    loss, low = rank_regularization(w, beta=0.7, margin=0.15)
    assert low.tolist() == [False, True, False, True, False, False, False, False, False, True]  # bottom 3
    high_mean, low_mean = w[~low].mean(), w[low].mean()
    assert float(loss) == pytest.approx(max(0.0, 0.15 - float(high_mean - low_mean)))
    far = torch.tensor([1.0, 1.0, 0.0])
    assert float(rank_regularization(far, 0.7, 0.15)[0]) == 0.0          # groups already far apart
    same = torch.full((4,), 0.5)
    assert float(rank_regularization(same, 0.7, 0.15)[0]) == pytest.approx(0.15)


def test_region_biased_loss_pushes_a_region_above_the_face():
    weights = torch.tensor([[0.5, 0.7, 0.2, 0.1, 0.1],     # best region beats the face by 0.2 > m: no loss
                            [0.6, 0.62, 0.3, 0.3, 0.3]])   # by 0.02 < 0.1: loss 0.08
    assert float(region_biased_loss(weights, 0.1)) == pytest.approx(0.04)


def test_balanced_class_weights_and_label_noise_protocol():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    w = balanced_class_weights(labels, 4)
    assert torch.allclose(w, torch.tensor([10 / 24, 10 / 12, 10 / 4, 0.0]))
    clean = torch.randint(0, 7, (20000,), generator=torch.Generator().manual_seed(0))
    noisy = inject_label_noise(clean, 0.3, 7, seed=5)
    flipped = noisy != clean
    assert 0.29 < float(flipped.float().mean()) < 0.31                 # flip probability p
    assert torch.equal(noisy, inject_label_noise(clean, 0.3, 7, seed=5))  # deterministic in the seed
    shift = (noisy[flipped] - clean[flipped]) % 7                       # always to a *different* class,
    counts = torch.bincount(shift, minlength=7)[1:]                     # uniformly among the other six
    assert counts.min() > 0.9 * counts.float().mean() and torch.bincount(shift, minlength=7)[0] == 0
    assert torch.equal(inject_label_noise(clean, 0.0, 7, seed=5), clean)


def test_scn_relabels_only_confident_low_importance_samples(tmp_path):
    cfg = load_config(None, ["model.name=scn", "train.method.name=scn", "train.method.relabel_epoch=0"])
    n = 4
    data = TrainData(images=torch.zeros(n, 3, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 0, 0, 0]),
                     clean_labels=torch.tensor([1, 0, 0, 0]), class_names=["neutral", "happy", "sad"])
    method = SCNTraining(cfg, data, tmp_path, torch.device("cpu"))
    logits = torch.tensor([[0.0, 5.0, 0.0],    # low group, P(happy) - P(neutral) >> 0.2: relabelled to happy
                           [0.0, 0.3, 0.0],    # low group, margin too small: kept
                           [0.0, 5.0, 0.0],    # high group: never relabelled
                           [5.0, 0.0, 0.0]])   # low group, already argmax: kept
    low = torch.tensor([True, True, False, True])
    y = method.labels[:4].clone()
    method._pending.append((torch.arange(4), torch.full((4,), 0.5), low, y, method.relabel_mask(logits, y, low)))
    assert method.labels.tolist() == [0, 0, 0, 0]  # applied once per epoch, not per batch
    method.flush()
    assert method.labels.tolist() == [1, 0, 0, 0] and method._low.tolist() == low.tolist()
    row = method.end_epoch(0)
    assert row["scn_relabelled"] == 1 and row["scn_relabel_fixed"] == 1 and row["scn_relabel_broke"] == 0
    with open(tmp_path / "scn" / "relabels_000.csv") as f:
        assert list(csv.DictReader(f)) == [{"index": "0", "old_label": "0", "new_label": "1", "clean_label": "1"}]


class _FixedImportance:
    """Stands in for the SCN model: the same logits and importance weights for every batch of four."""

    def __init__(self, logits: torch.Tensor, weights: torch.Tensor):
        self.logits, self.weights = logits, weights

    def forward_attention(self, x: torch.Tensor) -> AttentionOutput:
        return AttentionOutput(self.logits, self.weights.view(-1, 1), self.logits.unsqueeze(1))


def _relabel_rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scn_relabels_first_at_relabel_epoch_not_before_or_after(tmp_path):
    """``relabel_epoch`` is 0-based, numbered as the trainer passes epochs to ``step()``/``end_epoch()`` (which write
    ``scn/relabels_NNN.csv`` with that number; metrics.jsonl's ``epoch`` is one more). With relabel_epoch 2 a sample
    that is relabelled as soon as relabelling is allowed keeps its label through epochs 0 and 1 and changes in 2."""
    cfg = load_config(None, ["model.name=scn", "train.method={name: scn, relabel_epoch: 2}"])
    data = TrainData(images=torch.zeros(4, 3, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 0, 0, 0]),
                     clean_labels=torch.tensor([1, 0, 0, 0]), class_names=["neutral", "happy", "sad"])
    method = SCNTraining(cfg, data, tmp_path, torch.device("cpu"))
    # beta 0.7 of 4: samples 1 and 2 are the high group, 0 and 3 the low; sample 0 is sure to be relabelled to
    # happy (P(happy) - P(neutral) is about 0.98 > margin_2 0.2), sample 3 already has its argmax
    model = _FixedImportance(torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]),
                             torch.tensor([0.1, 0.9, 0.8, 0.7]))
    rows = []
    for epoch in range(4):
        method.step(model, torch.zeros(4, 3, 8, 8), torch.arange(4), epoch)
        method.synchronize(SINGLE_PROCESS)
        rows.append(method.end_epoch(epoch))
    assert [r["scn_relabelled"] for r in rows] == [0, 0, 1, 0]
    assert [r["scn_relabel_fixed"] for r in rows] == [0, 0, 1, 0]
    assert [len(_relabel_rows(tmp_path / "scn" / f"relabels_{e:03d}.csv")) for e in range(4)] == [0, 0, 1, 0]
    assert _relabel_rows(tmp_path / "scn" / "relabels_002.csv") == [
        {"index": "0", "old_label": "0", "new_label": "1", "clean_label": "1"}]
    assert method.labels.tolist() == [1, 0, 0, 0]


def _scn(tmp_path: Path, method: str, labels=(0, 0, 0, 0), clean=(1, 1, 0, 0)) -> SCNTraining:
    cfg = load_config(None, ["model.name=scn", f"train.method={method}"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = TrainData(images=torch.zeros(len(labels), 3, 8, 8, dtype=torch.uint8), labels=torch.tensor(labels),
                     clean_labels=torch.tensor(clean), class_names=["neutral", "happy", "sad"])
    return SCNTraining(cfg, data, tmp_path, torch.device("cpu"))


def _reference_relabel(logits: torch.Tensor, y: torch.Tensor, margin_2: float) -> torch.Tensor:
    """The authors' train.py rule restated: ``softmax(outputs)``, ``Pmax - Pgt > margin_2`` over the whole batch."""
    sm = torch.softmax(logits, dim=1)
    return sm.max(1).values - sm.gather(1, y.view(-1, 1)).squeeze(1) > margin_2


def test_scn_relabel_scope_low_is_the_paper_and_all_is_the_authors_code(tmp_path):
    # beta 0.7 of 4: samples 1 and 2 are the high group, 0 and 3 the low
    logits = torch.tensor([[0.0, 5.0, 0.0],    # low, far past the margin
                           [0.0, 5.0, 0.0],    # high, far past the margin: relabelled by the code, not the paper
                           [0.0, 0.3, 0.0],    # high, margin too small: never
                           [5.0, 0.0, 0.0]])   # low, already its argmax: never
    model = _FixedImportance(logits, torch.tensor([0.1, 0.9, 0.8, 0.7]))
    decided = {}
    for scope in ("low", "all"):
        method = _scn(tmp_path / scope, f"{{name: scn, relabel_epoch: 0, relabel_scope: {scope}}}")
        method.step(model, torch.zeros(4, 3, 8, 8), torch.arange(4), 0)
        row = method.end_epoch(0)
        decided[scope] = method.labels.tolist()
        assert row["scn_relabel_active"] == 1.0
    assert decided == {"low": [1, 0, 0, 0], "all": [1, 1, 0, 0]}
    expected = _reference_relabel(logits, torch.zeros(4, dtype=torch.long), 0.2)
    assert [new != 0 for new in decided["all"]] == expected.tolist()
    assert _relabel_rows(tmp_path / "all" / "scn" / "relabels_000.csv") == [
        {"index": "0", "old_label": "0", "new_label": "1", "clean_label": "1"},
        {"index": "1", "old_label": "0", "new_label": "1", "clean_label": "1"}]


def test_scn_relabel_rule_reads_the_softmax_of_the_weighted_logits(tmp_path):
    """As the authors' code (``torch.softmax(outputs)``, outputs = alpha * fc(x)): the same unweighted logits
    relabel with an importance near 1 and do not with one near 0 (softmax of nearly flat logits)."""
    from fer_core.models import create_model

    torch.manual_seed(0)
    model = create_model("scn", num_classes=3, backbone="small_cnn", input_size=16).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))          # raw logits favour class 1 for every face
        model.alpha[0].weight.zero_()
    x = torch.randn(4, 3, 16, 16)
    got = {}
    for bias in (-4.0, 4.0):
        with torch.no_grad():
            model.alpha[0].bias.fill_(bias)
        method = _scn(tmp_path / str(bias), "{name: scn, relabel_epoch: 0, relabel_scope: all}")
        out = model.forward_attention(x)
        expected = _reference_relabel(out.logits, torch.zeros(4, dtype=torch.long), 0.2)
        method.step(model, x, torch.arange(4), 0)
        method.flush()
        got[bias] = method.labels.tolist()
        assert [new != 0 for new in got[bias]] == expected.tolist()
    assert got == {-4.0: [0, 0, 0, 0], 4.0: [1, 1, 1, 1]}


def test_scn_loss_paper_weighs_by_gamma_and_code_adds_the_terms(tmp_path):
    torch.manual_seed(0)
    logits, weights = torch.randn(8, 3), torch.rand(8)
    y = torch.randint(0, 3, (8,))
    model = _FixedImportance(logits, weights)
    # the authors' terms restated: CrossEntropyLoss on the outputs, RR on topk(int(B * beta)) vs the rest
    tops = int(8 * 0.7)
    high, low = weights.topk(tops).values, weights.topk(8 - tops, largest=False).values
    rr = max(low.mean() - high.mean() + 0.15, torch.tensor(0.0))
    ce = F.cross_entropy(logits, y)
    for form, gamma, expected in (("paper", 0.5, 0.5 * rr + 0.5 * ce), ("paper", 0.3, 0.3 * rr + 0.7 * ce),
                                  ("code", 0.3, ce + rr)):
        method = _scn(tmp_path / f"{form}{gamma}", f"{{name: scn, loss: {form}, gamma: {gamma}}}",
                      labels=tuple(y.tolist()), clean=tuple(y.tolist()))
        result = method.step(model, torch.zeros(8, 3, 8, 8), torch.arange(8), 0)
        assert float(result.loss) == pytest.approx(float(expected), rel=1e-6), form
        assert float(result.stats["rr_loss"]) == pytest.approx(float(rr), rel=1e-6)


def test_scn_relabel_start_plateau_waits_for_validation_to_stop_improving(tmp_path):
    """Validation accuracy after each 0-based epoch: best 0.6 after epoch 1, then 0.6 (not better) and 0.59: with
    patience 2 relabelling starts with epoch 4, stays on when accuracy improves again, and a method rebuilt from
    any epoch's state_dict (a resumed run) decides exactly the same."""
    method_cfg = "{name: scn, relabel_start: plateau, relabel_patience: 2, relabel_epoch: 0}"
    accs = [0.5, 0.6, 0.6, 0.59, 0.7, 0.4]
    model = _FixedImportance(torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [5.0, 0.0, 0.0]]),
                             torch.tensor([0.1, 0.9, 0.8, 0.7]))
    method = _scn(tmp_path / "straight", method_cfg)
    active, relabelled, states = [], [], []
    for epoch, acc in enumerate(accs):
        method.step(model, torch.zeros(4, 3, 8, 8), torch.arange(4), epoch)
        method.synchronize(SINGLE_PROCESS)
        row = method.end_epoch(epoch)
        active.append(row["scn_relabel_active"])
        relabelled.append(row["scn_relabelled"])
        assert method.observe_validation(epoch, acc) == {}
        states.append(method.state_dict())
    assert active == [0, 0, 0, 0, 1, 1] and relabelled == [0, 0, 0, 0, 1, 0]   # relabel_epoch 0 is not used
    assert method.relabel_from == 4
    for stop in range(len(accs)):                                             # resumed after each epoch
        resumed = _scn(tmp_path / f"resumed{stop}", method_cfg)
        resumed.load_state_dict(states[stop])
        for epoch in range(stop + 1, len(accs)):
            resumed.observe_validation(epoch, accs[epoch])
        assert resumed.relabel_from == 4, stop
        assert [resumed.relabels_in(e) for e in range(6)] == [False] * 4 + [True] * 2
    by_epoch = _scn(tmp_path / "by_epoch", "{name: scn, relabel_epoch: 2}")
    for epoch, acc in enumerate(accs):                                        # relabel_start epoch ignores it
        by_epoch.observe_validation(epoch, acc)
    assert by_epoch.relabel_from == 2 and not by_epoch.relabels_in(1) and by_epoch.relabels_in(2)


# --------------------------------------------------------------------------------------------- configs
def test_method_configs_are_validated_before_anything_runs():
    with pytest.raises(ConfigError, match="train.method.teacher_run: required"):
        load_config(SMOKE, ["train.method.name=pseudo_label"])
    with pytest.raises(ConfigError, match=r"unknown key 'train.method.bta' \(valid: name, beta"):
        load_config(SMOKE, ["train.method={name: scn, bta: 0.7}"])
    with pytest.raises(ConfigError, match=r"train.method.relabel_scope: must be one of 'low' or 'all' \(got 'high'\)"):
        load_config(SMOKE, ["train.method={name: scn, relabel_scope: high}"])
    with pytest.raises(ConfigError, match=r"train.method.relabel_patience: must be >= 1 \(got 0\)"):
        load_config(SMOKE, ["train.method={name: scn, relabel_start: plateau, relabel_patience: 0}"])
    with pytest.raises(ConfigError, match=r"train.method.loss: must be one of 'paper' or 'code'"):
        load_config(SMOKE, ["train.method={name: scn, loss: authors}"])
    with pytest.raises(ConfigError, match="fp16 cannot be combined with SAM"):
        load_config(SMOKE, ["train.precision=fp16", "train.optimizer.sam.enabled=true"])
    cfg = load_config(SMOKE, ["train.stages=[{epochs: 1, freeze: backbone}, {epochs: 2, optimizer: {lr: 0.001}}]"])
    stages = cfg.train.resolved_stages()
    assert [s.epochs for s in stages] == [1, 2] and cfg.train.total_epochs == 3
    assert stages[0].optimizer.lr == cfg.train.optimizer.lr and stages[1].optimizer.lr == 0.001


# --------------------------------------------------------------------------------------------- end to end
def _tiny(*overrides: str):
    return load_config(SMOKE, ["train.epochs=2", "eval.subsets=[all]", *overrides])


def test_scn_run_writes_weights_groups_and_relabels(tmp_path):
    # margin_2 0: every low-importance sample whose argmax is not its label is relabelled, so epoch 1 (0-based, the
    # first that relabel_epoch 1 allows; metrics epoch 2) certainly relabels and epoch 0 (metrics epoch 1) must not
    cfg = _tiny("model.name=scn", "model.input_size=32", "train.method={name: scn, relabel_epoch: 1, margin_2: 0.0}",
                "data.label_noise=0.3")
    result = train(cfg, tmp_path / "scn")
    assert result["state"] == "done"
    rows = io.read_metrics(tmp_path / "scn")
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["scn_relabelled"] == 0 and _relabel_rows(tmp_path / "scn" / "scn" / "relabels_000.csv") == []
    relabelled = _relabel_rows(tmp_path / "scn" / "scn" / "relabels_001.csv")
    assert rows[1]["scn_relabelled"] == len(relabelled) > 0
    assert all(r["old_label"] != r["new_label"] for r in relabelled)
    assert {"rr_loss", "wce_loss", "scn_relabelled", "scn_label_noise", "scn_weight_noisy"} <= set(rows[-1])
    assert rows[0]["scn_label_noise"] == pytest.approx(0.3, abs=0.12)
    with open(tmp_path / "scn" / "scn" / "epoch_001.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 96 and {r["group"] for r in table} == {"high", "low"}
    assert all(0 <= float(r["weight"]) <= 1 for r in table)
    assert sum(r["group"] == "low" for r in table) == pytest.approx(96 * 0.3, abs=6)
    assert "label noise 0.30 (uniform) injected" in (tmp_path / "scn" / "log.txt").read_text()


def _groups_of_relabelled(run_dir: Path, epoch: int) -> list[str]:
    groups = {r["index"]: r["group"] for r in _relabel_rows(run_dir / "scn" / f"epoch_{epoch:03d}.csv")}
    return [groups[r["index"]] for r in _relabel_rows(run_dir / "scn" / f"relabels_{epoch:03d}.csv")]


def test_scn_runs_with_the_papers_and_the_authors_loss_and_scope(tmp_path):
    """margin_2 0 relabels every face of the scope whose argmax is not its label: the paper's scope relabels only
    low-importance faces, the authors' code faces of both groups; train_loss is (1 - gamma) * wce + gamma * rr for
    the paper's loss and wce + rr for the code's, epoch by epoch (each is a per-sample mean of its batch's)."""
    common = ("model.name=scn", "model.options.backbone=small_cnn", "model.input_size=32", "data.label_noise=0.3")
    for form, scope in (("paper", "low"), ("code", "all")):
        run_dir = tmp_path / scope
        cfg = _tiny(*common, f"train.method={{name: scn, loss: {form}, relabel_scope: {scope}, relabel_epoch: 1, "
                             "margin_2: 0.0, gamma: 0.3}")
        assert train(cfg, run_dir)["state"] == "done"
        rows = io.read_metrics(run_dir)
        for row in rows:
            expected = row["wce_loss"] + row["rr_loss"] if form == "code" else 0.7 * row["wce_loss"] + 0.3 * row[
                "rr_loss"]
            assert row["train_loss"] == pytest.approx(expected, rel=1e-5), (form, row["epoch"])
        assert [r["scn_relabel_active"] for r in rows] == [0.0, 1.0]
        groups = _groups_of_relabelled(run_dir, 1)
        assert groups and rows[1]["scn_relabelled"] == len(groups)
        assert set(groups) == ({"low"} if scope == "low" else {"low", "high"}), (scope, groups)


def test_scn_plateau_start_in_a_real_run_and_its_resume(tmp_path):
    """With a learning rate of 1e-12 and the backbone's BatchNorm frozen, validation accuracy stays put: the best is
    epoch 1's, epoch 2 does not improve (patience 1), so relabelling starts with epoch 3 (metrics numbering). A run
    stopped right after that decision and resumed relabels exactly as the uninterrupted one."""
    cfg = _tiny("train.epochs=4", "model.name=scn", "model.options.backbone=small_cnn", "model.input_size=32",
                "data.label_noise=0.3", "train.method={name: scn, relabel_start: plateau, relabel_patience: 1, "
                "margin_2: 0.0}", "train.optimizer={name: adam, lr: 1.0e-12, weight_decay: 0.0}",
                "train.scheduler.name=none", "train.stages=[{epochs: 4, freeze_bn: true}]")
    assert train(cfg, tmp_path / "straight")["state"] == "done"
    expected = io.read_metrics(tmp_path / "straight")
    assert len({r["val_acc"] for r in expected}) == 1
    assert [r["scn_relabel_active"] for r in expected] == [0.0, 0.0, 1.0, 1.0]
    assert expected[1]["scn_relabelled"] == 0 and expected[2]["scn_relabelled"] > 0
    assert "relabelling from epoch 3 on" in (tmp_path / "straight" / "log.txt").read_text()

    def stop_after_epoch_2(event):
        if event["event"] == "epoch" and event["epoch"] == 2:
            raise KeyboardInterrupt  # right after the epoch-2 checkpoint, which holds the decision

    stopped = tmp_path / "stopped"
    assert train(cfg, stopped, progress=stop_after_epoch_2)["state"] == "cancelled"
    assert train(load_config(stopped / "config.yaml"), stopped, resume=True)["state"] == "done"
    resumed = io.read_metrics(stopped)
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(expected, resumed, strict=True):
        for key in ("train_loss", "val_acc", "scn_relabelled", "scn_relabel_active", "scn_relabel_fixed"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["epoch"], key)


def test_label_distribution_and_pseudo_label_runs(tmp_path):
    ldl = train(_tiny("train.method={name: ldl, source: dataset, hard_weight: 0.5}"), tmp_path / "ldl")
    assert ldl["state"] == "done" and "soft_loss" in io.read_metrics(tmp_path / "ldl")[-1]
    teacher = tmp_path / "ldl"
    pl = train(_tiny(f"train.method={{name: pseudo_label, teacher_run: '{teacher}', hard_weight: 0.3}}",
                     "model.name=mini_xception", "model.pretrained=false"), tmp_path / "pl")
    assert pl["state"] == "done"
    log = (tmp_path / "pl" / "log.txt").read_text()
    assert f"soft targets from teacher run {teacher}" in log and "argmax agrees with the training labels" in log


def test_label_distributions_need_soft_labels(tmp_path):
    from fer_core.methods import SoftTargetTraining

    cfg = _tiny("train.method={name: ldl, source: dataset}")
    data = TrainData(images=torch.zeros(2, 3, 8, 8, dtype=torch.uint8), labels=torch.tensor([0, 1]),
                     clean_labels=torch.tensor([0, 1]), class_names=["neutral", "happy"])
    with pytest.raises(ValueError, match="has none; use source: teacher"):
        SoftTargetTraining(cfg, data, tmp_path, torch.device("cpu"))
    with pytest.raises(ValueError, match="teacher_run is required"):
        SoftTargetTraining(_tiny("train.method={name: ldl, source: teacher}"), data, tmp_path, torch.device("cpu"))


def test_two_stage_finetune_freezes_then_unfreezes_with_frozen_batchnorm(tmp_path):
    stages = ("train.stages=[{name: head, epochs: 2, freeze: backbone, early_stopping: {patience: 1}}, "
              "{name: finetune, epochs: 2, freeze: backbone, unfreeze_last: 3, freeze_bn: true, "
              "optimizer: {name: adam, lr: 0.0001}, scheduler: {name: inverse_time, decay_rate: 0.5}}]")
    result = train(_tiny(stages, "train.grad_clip_norm=3", "train.class_weights=balanced"), tmp_path / "two")
    assert result["state"] == "done"
    rows = io.read_metrics(tmp_path / "two")
    assert [r["stage"] for r in rows][-1] == "finetune" and rows[-1]["epoch"] == len(rows)
    log = (tmp_path / "two" / "log.txt").read_text()
    assert "stage 1/2 'head'" in log and "stage 2/2 'finetune'" in log and "BatchNorm layers frozen" in log
    import re

    trainable = [int(n.replace(",", "")) for n in re.findall(r"([\d,]+) of [\d,]+ parameters trainable", log)]
    assert len(trainable) == 2 and 0 < trainable[0] < trainable[1]  # the head, then the head + 3 layers
    assert not (tmp_path / "two" / "checkpoints" / "stage_best.safetensors").exists()


def test_sam_and_every_scheduler_train(tmp_path):
    for name in ("multistep", "plateau", "exponential"):
        result = train(_tiny("train.optimizer.sam.enabled=true", f"train.scheduler.name={name}",
                             "train.augment={rotation: 10, contrast: 0.2, random_erasing: 0.5, "
                             "gaussian_noise: 0.5, flip_or_noise: true}"), tmp_path / name)
        assert result["state"] == "done" and math.isfinite(io.read_metrics(tmp_path / name)[-1]["train_loss"])
    assert "adamw + SAM" in (tmp_path / "plateau" / "log.txt").read_text()


def test_region_attention_with_region_bias_trains(tmp_path):
    result = train(_tiny("model.name=region_attention", "model.input_size=32",
                         "train.region_bias={weight: 1.0, margin: 0.1}"), tmp_path / "ran")
    assert result["state"] == "done" and "region_bias_loss" in io.read_metrics(tmp_path / "ran")[-1]
    with pytest.raises(ValueError, match="needs a model with part attention"):
        train(_tiny("train.region_bias={weight: 1.0}"), tmp_path / "bad")
