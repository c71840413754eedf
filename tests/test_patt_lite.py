"""PAtt-Lite: the reference's parameter count, the published attention's batch mixing, strict ImageNet loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from fer_core.models import count_params, create_model
from fer_core.models.patt_lite import MIN_PATCH_INPUT, NEW, patch_grid
from fer_core.models.weights import WeightsMismatchError

VARIANTS = ("patt_lite", "patt_lite_patch")
SMOKE = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def timm_state() -> dict[str, torch.Tensor]:
    """A stand-in for timm's ImageNet ``mobilenetv1_100`` state dict (random weights, same keys and shapes)."""
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in timm.create_model("mobilenetv1_100", pretrained=False).state_dict().items()}


@pytest.mark.parametrize("name", VARIANTS)
def test_parameter_count_matches_the_keras_reference(name):
    model = create_model(name, num_classes=8)
    assert count_params(model, with_bn_stats=True) == 1_102_697      # Keras model.summary() "Total params"
    assert count_params(model) == 1_093_033
    assert count_params(create_model(name, num_classes=7), with_bn_stats=True) == 1_102_664


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the largest value (randomly initialised logits are tiny)."""
    return ((a - b).abs().max() / a.abs().max()).item()


def test_published_attention_mixes_the_batch_and_patch_attention_does_not():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 224, 224)
    published, patch = (create_model(n, num_classes=7).eval() for n in VARIANTS)
    with torch.no_grad():
        for model in (published, patch):
            feats = model.forward_features(x)                   # per sample: the head is where batches can mix
            assert feats.shape == (3, 256, 2, 2)
            assert _rel(model(x[[0, 1]]), model.forward_head(feats[[0, 1]])) < 1e-5
            # sample 0 next to sample 1, then next to sample 2, then alone
            with_1, with_2, alone = (model.forward_head(feats[i])[0] for i in ([0, 1], [0, 2], [0]))
            if model is published:                              # it changes its mind about sample 0
                assert _rel(with_1, with_2) > 0.05 and _rel(with_1, alone) > 0.05
            else:
                assert _rel(with_1, with_2) < 1e-5 and _rel(with_1, alone) < 1e-5
        assert published.attention_weights(x[:2]).shape == (2, 2)
        weights = patch.attention_weights(x[:2])
    assert weights.shape == (2, 4, 4)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4))


def test_a_training_batch_of_one_runs():
    model = create_model("patt_lite", num_classes=7).train()
    before = model.pre_bn.running_var.clone()
    assert model(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    assert torch.equal(model.pre_bn.running_var, before)


def test_published_attention_of_a_batch_of_one_is_the_identity():
    torch.manual_seed(0)
    model = create_model("patt_lite", num_classes=7).eval()
    x = torch.randn(1, 3, 224, 224)
    seen = []
    handle = model.pre_bn.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        attended = model.forward_head(model.forward_features(x), pre_logits=True)
        assert model.attention_weights(x).tolist() == [[1.0]]
    handle.remove()
    assert _rel(attended, seen[0]) < 1e-6


def test_pretrained_from_a_local_file_loads_strictly_and_reports(tmp_path, timm_state):
    path = tmp_path / "mobilenetv1_100.safetensors"
    state = dict(timm_state, **{"blocks.3.3.conv_dw.weight": torch.full((512, 1, 3, 3), 0.25)})
    save_file(state, str(path))
    model = create_model("patt_lite_patch", num_classes=7, pretrained=True, weights_path=str(path))
    report = model.load_report
    own = model.state_dict()
    assert torch.equal(own["blocks.3.3.conv_dw.weight"], state["blocks.3.3.conv_dw.weight"])
    assert torch.equal(own["blocks.0.0.bn1.running_var"], state["blocks.0.0.bn1.running_var"])
    assert report.source == str(path)
    assert report.new == sorted(k for k in own if k.startswith(NEW))
    assert report.matched == sorted(k for k in own if not k.startswith(NEW))
    assert {"blocks.3.3.conv_pw.weight", "blocks.3.3.bn2.running_var", "blocks.3.5.conv_dw.weight",
            "blocks.4.1.bn2.bias", "classifier.weight"} <= set(report.dropped)
    assert len(report.matched) + len(report.dropped) == len(state)
    assert not any(k.startswith(("blocks.3.2.", "blocks.3.3.conv_dw", "blocks.3.3.bn1")) for k in report.dropped)


def test_a_wrong_file_is_refused_with_the_key_names(tmp_path, timm_state):
    state = dict(timm_state)
    state["stem.weight"] = state.pop("conv_stem.weight")
    state["blocks.0.0.bn1.weight"] = torch.ones(7)
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsMismatchError, match=r"missing from the file \(1\): conv_stem\.weight.*"
                                                   r"unexpected in the file \(1\): stem\.weight.*"
                                                   r"blocks\.0\.0\.bn1\.weight \(7,\) vs model \(32,\)"):
        create_model("patt_lite", num_classes=7, pretrained=True, weights_path=str(path))
    with pytest.raises(ValueError, match="pretrained is false"):
        create_model("patt_lite", num_classes=7, weights_path=str(path))


def test_pretrained_offline_fails_with_what_to_do(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match=r"mobilenetv1_100\.ra4_e3600_r224_in1k \(OSError: no network\).*"
                                           r"huggingface\.co/timm/mobilenetv1_100\.ra4_e3600_r224_in1k.*"
                                           r"model\.weights_path"):
        create_model("patt_lite", num_classes=7, pretrained=True)


def test_options_are_checked_and_dropouts_switch():
    with pytest.raises(ValueError, match="unknown attention 'tokens'; valid: published, patch"):
        create_model("patt_lite", num_classes=7, attention="tokens")
    model = create_model("patt_lite", num_classes=7)
    assert (model.head_drop.p, model.patch_drop.p, model.attn_drop.p) == (0.1, 0.0, 0.0)
    model.set_drop_rates()
    assert (model.head_drop.p, model.patch_drop.p, model.attn_drop.p) == (0.2, 0.2, 0.2)


def test_the_patch_map_is_2x2_from_193_px_and_the_patch_variant_refuses_less():
    """The backbone's stride 16, then the k4 s4 'same' and k2 s2 'valid' separable convs: 1x1 up to 192 px (one
    token: patch attention would be the identity), 2x2 from 193. The published variant pools the map, so it keeps
    taking small inputs (zero-padded below 65 px, where Keras would raise)."""
    assert MIN_PATCH_INPUT == 193
    model = create_model("patt_lite", num_classes=7).eval()
    with torch.no_grad():
        for size in (32, 64, 65, 96, 192, 193, 224):
            assert model.forward_features(torch.zeros(1, 3, size, size)).shape[-2:] == (patch_grid(size),) * 2
    assert [patch_grid(n) for n in (80, 96, 160, 192, 193, 224)] == [1, 1, 1, 1, 2, 2]
    for size in (80, 96, 192):
        with pytest.raises(ValueError, match=rf"model.input_size {size}x{size} gives a 1x1 patch map.*at least 193 px"):
            create_model("patt_lite_patch", num_classes=7, input_size=size)
    assert create_model("patt_lite_patch", num_classes=7, input_size=193).cfg.input_size == (3, 193, 193)
    assert create_model("patt_lite", num_classes=7, input_size=96)(torch.randn(2, 3, 96, 96)).shape == (2, 7)


def test_a_one_token_config_is_refused_before_a_run_exists(runs_root, capsys):
    from fer_core.cli import main
    from fer_core.config import ConfigError, load_config
    from fer_core.runs import check_model
    from fer_core.sweep import parse_variant, plan_sweep

    cfg = load_config(SMOKE, ["model.name=patt_lite_patch", "model.input_size=96"])
    assert check_model(cfg) == [
        "model.options: model patt_lite_patch with options {}: model.input_size 96x96 gives a 1x1 patch map: the "
        "patch attention would attend over one token (the identity); it needs at least 193 px for the 2x2 map (the "
        "reference resizes its 120 px faces to 224): set model.input_size to 193 or more, or use model.name: "
        "patt_lite (the published variant pools the map)"]
    assert main(["train", "--config", str(SMOKE), "--set", "model.name=patt_lite_patch",
                 "--set", "model.input_size=96"]) == 2
    assert "at least 193 px" in capsys.readouterr().err
    assert list(runs_root.iterdir()) == []
    with pytest.raises(ConfigError, match="point variant=patch .*at least 193 px"):
        plan_sweep(load_config(SMOKE, ["model.input_size=96"]),
                   variants=[parse_variant("published:model.name=patt_lite"),
                             parse_variant("patch:model.name=patt_lite_patch")])


def test_the_no_attention_ablation_differs_from_the_patch_variant_only_by_the_attention_step():
    """``attention: none`` is the patch variant's ablation baseline: same parameters (a patch variant's weights
    load into it), tokens pooled as they are instead of attended."""
    torch.manual_seed(0)
    patch = create_model("patt_lite_patch", num_classes=7).eval()
    none = create_model("patt_lite_patch", num_classes=7, attention="none").eval()
    none.load_state_dict(patch.state_dict(), strict=True)
    with torch.no_grad():
        patch.pre_fc.weight.mul_(1e4)  # large tokens, a sharp attention: attending visibly differs from pooling
        none.pre_fc.weight.copy_(patch.pre_fc.weight)
        x = torch.randn(2, 3, 224, 224)
        feats = patch.forward_features(x)
        tokens = feats.flatten(2).transpose(1, 2)
        b, n, _ = tokens.shape
        tokens = torch.relu(patch.pre_fc(tokens))
        tokens = patch.pre_bn(tokens.reshape(b * n, -1)).reshape(b, n, -1)
        expected = none.head(tokens.mean(1))
        assert torch.allclose(none(x), expected, rtol=1e-5, atol=1e-6)
        assert (patch(x) - expected).abs().max() > 0.1 * expected.abs().max()
