"""RAN as its authors' code defines it: the crops, the order and statistics of the backbone passes, the attention
formulas of ``attention_rank_loss.py`` restated independently, the region-biased loss, and a real run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fer_core import io
from fer_core.config import load_config
from fer_core.losses import region_biased_loss
from fer_core.models import count_params, create_model
from fer_core.models.ran import CROPS, REGION_NAMES, ran_crops
from fer_core.train import train

SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def small_ran():
    torch.manual_seed(0)
    return create_model("ran", num_classes=7, backbone="small_cnn")


def test_crops_are_the_reference_boxes_resized_to_the_input():
    x = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).reshape(2, 3, 64, 64)
    crops = ran_crops(x)
    assert [name for name, _ in CROPS] == list(REGION_NAMES[1:])
    assert all(c.shape == x.shape for c in crops)                       # every part at the input size
    boxes = {name: (int(lf * 64), int(tp * 64), int(rt * 64), int(bt * 64)) for name, (lf, tp, rt, bt) in CROPS}
    assert boxes == {"center_down": (8, 16, 56, 64), "top_left": (0, 0, 48, 48), "top_right": (16, 0, 64, 48),
                     "center_90": (3, 3, 60, 60), "center_80": (6, 6, 57, 57)}
    left, top, right, bottom = boxes["top_left"]
    expected = F.interpolate(x[..., top:bottom, left:right], size=(64, 64), mode="bilinear", align_corners=False,
                             antialias=True)
    assert torch.equal(crops[1], expected)
    y = x.clone()
    y[..., 48:, :] = 0                                                  # below the two top crops
    moved = ran_crops(y)
    assert torch.equal(moved[1], crops[1]) and torch.equal(moved[2], crops[2])
    assert not torch.equal(moved[0], crops[0])                          # the centre-down crop sees it
    assert ran_crops(x, 32)[0].shape[-2:] == (32, 32)


def test_head_follows_the_reference_formulas(small_ran):
    """``attention_rank_loss.py``'s forward restated: alpha = softmax over parts of sigmoid(FC(f_i)); v_m the
    alpha-weighted mean; beta = softmax over parts of sigmoid(FC([f_i; v_m])); output FC of the alpha*beta-weighted
    mean of [f_i; v_m]; the region-biased loss on the softmaxed alphas."""
    model = small_ran.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)                               # B x 6 x d, face first
        out = model.forward_attention(x)
        terms = model.attend(feats)
        logits = model(x)
    assert feats.shape == (3, 6, model.num_features)
    vs = [feats[:, i] for i in range(6)]
    alphas = F.softmax(torch.stack([model.alpha(v) for v in vs], dim=2), dim=2)         # B x 1 x 6
    vm = torch.stack(vs, dim=2).mul(alphas).sum(2).div(alphas.sum(2))
    zs = [torch.cat([v, vm], dim=1) for v in vs]
    betas = F.softmax(torch.stack([model.beta(z) for z in zs], dim=2), dim=2)
    fused = torch.stack(zs, dim=2).mul(betas * alphas).sum(2).div((betas * alphas).sum(2))
    with torch.no_grad():
        expected = model.fc(fused)
    assert torch.allclose(out.logits, expected, atol=1e-6) and torch.allclose(logits, expected, atol=1e-6)
    assert torch.allclose(out.weights, alphas[:, 0], atol=1e-7) and torch.allclose(terms.beta, betas[:, 0], atol=1e-7)
    assert torch.allclose(terms.fused, fused, atol=1e-6)
    assert torch.allclose(out.weights.sum(1), torch.ones(3), atol=1e-6)
    # the part logits add up to the logits with the normalised alpha * beta (FC is affine, the weights sum to 1)
    w = terms.alpha * terms.beta
    assert torch.allclose((out.part_logits * (w / w.sum(1, keepdim=True)).unsqueeze(-1)).sum(1), out.logits,
                          atol=1e-5)
    # MyLoss: mean over faces of max(0, 0.1 - (max of the crops' alpha - the face's alpha))
    a = out.weights
    my_loss = sum(max(0.0, 0.1 - (float(a[i, 1:].max()) - float(a[i, 0]))) for i in range(3)) / 3
    assert float(region_biased_loss(a, 0.1)) == pytest.approx(my_loss, abs=1e-7)


def test_backbone_runs_once_per_part_crops_first_with_their_own_batch_statistics(small_ran):
    """As the reference's loop over ``x[..., i]`` (face last): six passes, each normalised with its own batch
    statistics in training, the running statistics updated in that order."""
    model = copy.deepcopy(small_ran).train()
    reference = copy.deepcopy(small_ran).train()
    x = torch.randn(4, 3, 64, 64)
    seen = []
    first_conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    handle = first_conv.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    feats = model.forward_features(x)
    handle.remove()
    parts = [*ran_crops(x), x]
    assert len(seen) == 6 and all(torch.equal(s, p) for s, p in zip(seen, parts, strict=True))
    bb = reference.backbone
    expected = [bb.forward_head(bb.forward_features(p), pre_logits=True) for p in parts]
    expected = torch.stack([expected[-1], *expected[:-1]], dim=1)
    assert torch.allclose(feats, expected, atol=1e-6)
    for (name, a), b in zip(model.backbone.named_buffers(), reference.backbone.buffers(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name


def test_size_options_and_backbones(small_ran):
    # ResNet-18 without its 7-way fc (11,180,103 - 3,591), FC_alpha 512 -> 1, FC_beta 1024 -> 1, FC 1024 -> 7
    assert count_params(create_model("ran", num_classes=7)) == 11_180_103 - 3_591 + 513 + 1_025 + 7_175
    assert small_ran.cfg.input_size == (3, 64, 64) and small_ran.cfg.mean == (0.5, 0.5, 0.5)
    assert small_ran.cfg.target_layer == "face_map" and small_ran.region_names == REGION_NAMES
    model = create_model("ran", num_classes=5, backbone="small_cnn", input_size=48, drop_rate=0.3)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 5) and model.head_drop.p == 0.3
    with pytest.raises(ValueError, match=r"drop_rate must be in \[0, 1\) \(got 1.5\)"):
        create_model("ran", num_classes=7, backbone="small_cnn", drop_rate=1.5)


def test_ran_trains_with_the_region_biased_loss_of_its_code(tmp_path):
    cfg = load_config(SMOKE, ["train.epochs=2", "eval.subsets=[all]", "model.name=ran",
                              "model.options.backbone=small_cnn", "train.region_bias={weight: 1.0, margin: 0.1}"])
    assert train(cfg, tmp_path / "ran")["state"] == "done"
    rows = io.read_metrics(tmp_path / "ran")
    assert all(0 <= r["region_bias_loss"] <= 0.1 + 1e-6 for r in rows)
    recipe = load_config(Path(SMOKE).parent / "recipes" / "ran_ferplus.yaml")
    assert recipe.model.name == "ran" and recipe.model.input_size == 224
    assert (recipe.train.region_bias.weight, recipe.train.region_bias.margin) == (1.0, 0.1)
    assert recipe.train.scheduler.milestones == [18, 30, 48] and recipe.train.batch_size == 128
