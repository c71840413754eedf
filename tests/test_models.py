"""Model registry: every registered model is built, run forward and backward, and its CAM layer resolves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_core.labels import CLASSES
from fer_core.models import (
    ModelConfig,
    count_params,
    create_model,
    get_target_layer,
    list_models,
    model_info,
    register_model,
    registry,
)


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_and_cam_layer(name):
    """At its own input size: forward, backward to every parameter, the timm-style split, and the CAM layer."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, class_names=CLASSES[:5], pretrained=False)
    info = model_info(name)
    assert model.cfg.num_classes == 5 and model.cfg.class_names == CLASSES[:5]
    assert model.cfg.input_size == info.input_size and len(model.cfg.mean) == model.cfg.input_size[0]
    assert info.paper or info.origin == "FER Lab", f"{name} names no paper"
    assert info.licence and info.target_layer
    x = torch.randn(2, *model.cfg.input_size, requires_grad=True)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x), atol=1e-5)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    layer = get_target_layer(model)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    assert len(seen) == 1, "the CAM layer must run exactly once per forward (CAM tools pair it with one gradient)"
    assert len(seen[0]) == 4 and seen[0][-1] > 1, "CAM layer must output a spatial feature map"


def test_registry_refuses_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="'small_cnn' is already registered"):
        register_model(ModelConfig(name="small_cnn"))(lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match=r"unknown model 'nope'; valid: .*resnet18.*small_cnn"):
        create_model("nope", num_classes=7)
    with pytest.raises(ValueError, match="unknown model"):
        model_info("nope")
    with pytest.raises(TypeError, match="declares its config"):
        register_model(lambda **kw: nn.Identity())  # type: ignore[arg-type]


def test_new_registration_is_listed(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model(ModelConfig(name="tiny_test", input_size=(1, 8, 8), mean=(0.5,), std=(0.5,)))(
        lambda *, num_classes, pretrained=False: nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes)))
    assert "tiny_test" in list_models()
    assert create_model("tiny_test", num_classes=3).cfg.input_size == (1, 8, 8)


def test_bad_arguments_are_explained():
    with pytest.raises(ValueError, match="3 class names for 7 classes"):
        create_model("small_cnn", num_classes=7, class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="small_cnn has no pretrained weights"):
        create_model("small_cnn", num_classes=7, pretrained=True)
    with pytest.raises(ValueError, match=r"no module 'nope' in SmallCNN; some valid paths: blocks"):
        get_target_layer(create_model("small_cnn", num_classes=7), "nope")


def test_resnet_pretrained_offline_fails_loudly(monkeypatch):
    import torchvision.models as tvm

    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=r"resnet18-f37072fd\.pth.*model\.weights_path"):
        create_model("resnet18", num_classes=7, pretrained=True)


def test_resnet_pretrained_from_local_file(tmp_path):
    import torchvision.models as tvm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    imagenet = tvm.resnet18(weights=None).state_dict()  # stands in for the downloaded ImageNet file
    pth = tmp_path / "resnet18.pth"
    torch.save(imagenet, pth)
    model = create_model("resnet18", num_classes=7, pretrained=True, weights_path=str(pth))
    assert torch.equal(model.conv1.weight, imagenet["conv1.weight"])
    assert model.fc.out_features == 7
    st = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(st))
    model = create_model("resnet18", num_classes=7, pretrained=True, weights_path=str(st))
    assert torch.equal(model.layer4[1].conv2.weight, imagenet["layer4.1.conv2.weight"])
    with pytest.raises(ValueError, match="do not fit ResNet"):
        create_model("resnet50", num_classes=7, pretrained=True, weights_path=str(pth))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_model("resnet18", num_classes=7, pretrained=True, weights_path=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="pretrained is false"):
        create_model("resnet18", num_classes=7, weights_path=str(pth))


# --------------------------------------------------------------------------------------------- sizes the papers quote
@pytest.mark.parametrize(("name", "params"), [("resnet18", 11_180_103), ("resnet50", 23_522_375),
                                               ("eca_resnet18", 11_180_139), ("scn", 11_180_616),
                                               ("region_attention", 11_180_616), ("ran", 11_185_225)])
def test_parameter_counts(name, params):
    """ResNet-18 with 7 classes is 11.18 M as the LFER-LDL paper lists it; SCN adds the 513-weight importance branch;
    ECA adds one 1-D kernel per block (3 for 64 channels, 5 above)."""
    assert count_params(create_model(name, num_classes=7)) == params


def test_resnet18_macs_match_the_published_figure():
    from fer_core.models.profile import count_macs

    macs = count_macs(create_model("resnet18", num_classes=7), (3, 224, 224))
    assert abs(macs / 1e6 - 1818.56) / 1818.56 < 0.005, macs  # the LFER-LDL table's "1818.56 MFLOPs" are MACs


# --------------------------------------------------------------------------------------------- ECA / Mish, SCN, regions
def test_eca_and_mish_switches():
    from fer_core.models.resnet import ECA

    plain = create_model("resnet18", num_classes=7)
    eca = create_model("eca_resnet18", num_classes=7)
    assert sum(isinstance(m, ECA) for m in eca.modules()) == 8 and not any(isinstance(m, ECA) for m in plain.modules())
    assert not any(isinstance(m, nn.ReLU) for m in eca.modules()) and any(isinstance(m, nn.Mish) for m in eca.modules())
    assert [m.conv.kernel_size[0] for m in eca.modules() if isinstance(m, ECA)] == [3, 3, 5, 5, 5, 5, 5, 5]
    only_eca = create_model("resnet18", num_classes=7, eca=True)
    assert any(isinstance(m, nn.ReLU) for m in only_eca.modules())
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid: relu, mish"):
        create_model("resnet18", num_classes=7, act="gelu")


def test_eca_resnet_loads_imagenet_weights_and_reports_the_new_kernels(tmp_path):
    import torchvision.models as tvm

    pth = tmp_path / "resnet18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), pth)
    model = create_model("eca_resnet18", num_classes=7, pretrained=True, weights_path=str(pth))
    report = model.load_report
    assert len(report.matched) == 120 and report.dropped == ["fc.bias", "fc.weight"]
    assert "fc.weight" in report.new and sum(".eca." in k for k in report.new) == 8
    assert "new (initialised): " in report.summary()


def test_scn_weights_the_logits_by_its_importance():
    torch.manual_seed(0)
    model = create_model("scn", num_classes=7).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        out = model.forward_attention(x)
        logits = model(x)
    assert out.weights.shape == (3, 1) and ((out.weights > 0) & (out.weights < 1)).all()
    assert torch.allclose(out.logits, logits) and torch.allclose(out.logits, out.weights * out.part_logits[:, 0])


def test_region_attention_fuses_part_softmaxes():
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = create_model("region_attention", num_classes=7).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = model.forward_attention(x)
        assert torch.allclose(out.logits, model(x))
    assert model.region_names == ("face", "top_left", "top_right", "bottom_left", "bottom_right")
    assert out.weights.shape == (2, 5) and out.part_logits.shape == (2, 5, 7)
    w = out.weights / out.weights.sum(1, keepdim=True)
    fused = (F.softmax(out.part_logits, -1) * w.unsqueeze(-1)).sum(1)
    assert torch.allclose(out.logits.exp(), fused, atol=1e-6)          # forward returns log P: softmax(log P) = P
    assert torch.allclose(out.logits.exp().sum(1), torch.ones(2), atol=1e-6)
    # the top-left region really is the top-left quadrant: changing only the bottom half leaves its logits alone
    y = x.clone()
    y[..., 112:, :] = 0
    with torch.no_grad():
        out_y = model.forward_attention(y)
    assert torch.allclose(out_y.part_logits[:, 1:3], out.part_logits[:, 1:3], atol=1e-5)
    assert not torch.allclose(out_y.part_logits[:, 3:], out.part_logits[:, 3:], atol=1e-3)


def test_region_attention_ablations_and_two_branch_fusion():
    import torch.nn.functional as F

    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    face_only = create_model("region_attention", num_classes=7, regions=False).eval()
    no_att = create_model("region_attention", num_classes=7, attention=False).eval()
    two = create_model("region_attention", num_classes=7, fusion="two_branch", branch_weight=0.3).eval()
    with torch.no_grad():
        f = face_only.forward_attention(x)
        n = no_att.forward_attention(x)
        t = two.forward_attention(x)
    assert f.weights.shape == (2, 1) and face_only.region_names == ("face",)
    assert torch.allclose(f.logits, F.log_softmax(f.part_logits[:, 0], -1), atol=1e-6)
    assert no_att.attention is None and torch.equal(n.weights, torch.ones(2, 5))
    assert torch.allclose(n.logits.exp(), F.softmax(n.part_logits, -1).mean(1), atol=1e-6)
    p = F.softmax(t.part_logits, -1)
    quad = t.weights[:, 1:] / t.weights[:, 1:].sum(1, keepdim=True)
    expected = (p[:, 0] + 0.3 * (p[:, 1:] * quad.unsqueeze(-1)).sum(1)) / 1.3
    assert torch.allclose(t.logits.exp(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs regions=True"):
        create_model("region_attention", num_classes=7, regions=False, fusion="two_branch")
    with pytest.raises(ValueError, match="fusion must be"):
        create_model("region_attention", num_classes=7, fusion="sum")


# --------------------------------------------------------------------------------------------- strict loading
def test_strict_loading_lists_the_keys_of_a_mismatched_state_dict(tmp_path):
    from safetensors.torch import save_file

    from fer_core.models.weights import WeightsMismatchError, load_state_dict
    from fer_core.runs import load_weights

    model = create_model("small_cnn", num_classes=7)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"] = torch.zeros(8, 256)                      # another head size
    state["extra.bias"] = torch.zeros(3)                          # a key the model does not have
    del state["blocks.0.1.running_var"]                           # a key the file lacks
    with pytest.raises(WeightsMismatchError) as err:
        load_state_dict(model, state, source="my.safetensors")
    msg = str(err.value)
    assert "missing from the file (1): blocks.0.1.running_var" in msg
    assert "unexpected in the file (1): extra.bias" in msg
    assert "shape mismatch (1): fc.weight (8, 256) vs model (7, 256)" in msg and "my.safetensors" in msg
    before = model.fc.weight.clone()
    assert torch.equal(model.fc.weight, before), "a refused load must not change the model"
    path = tmp_path / "other.safetensors"                        # the same through a run's weights file
    save_file({k: v.contiguous() for k, v in create_model("resnet18", num_classes=7).state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"do not fit SmallCNN: missing from the file \(\d+\): blocks"):
        load_weights(model, path)
    report = load_state_dict(model, model.state_dict(), source="itself")
    assert len(report.matched) == len(model.state_dict()) and not report.new and not report.dropped


def test_read_state_dict_refuses_code_and_garbage(tmp_path):
    from fer_core.models.weights import WeightsMismatchError, read_state_dict

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": Evil()}, evil)
    with pytest.raises(WeightsMismatchError, match="cannot read weights .*evil.pth"):
        read_state_dict(evil)
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(WeightsMismatchError, match="cut.safetensors"):
        read_state_dict(truncated)
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {"module.fc.weight": torch.ones(2, 2)}, "epoch": 3}, wrapped)
    assert list(read_state_dict(wrapped)) == ["fc.weight"]


def test_models_command_prints_the_size_table(capsys):
    from fer_core.cli import main

    assert main(["models", "resnet18", "small_cnn", "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "11,180,103" in out and "1,813.6" in out and "small_cnn" in out
    assert main(["models", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_normalisation_follows_the_input_channels():
    assert create_model("mini_xception", num_classes=7, in_chans=3).cfg.mean == (0.5, 0.5, 0.5)
    grey = create_model("small_cnn", num_classes=7, in_chans=1)
    assert grey.cfg.input_size == (1, 64, 64) and grey.cfg.std == (0.5,)


@pytest.mark.parametrize("name", list_models())
def test_backbone_declared_and_leaves_a_trainable_head(name):
    """Two-stage finetuning freezes ``cfg.backbone``: it must name real modules and leave a head to train."""
    model = create_model(name, num_classes=7, pretrained=False)
    children = dict(model.named_children())
    assert model.cfg.backbone and all(b in children for b in model.cfg.backbone), model.cfg.backbone
    head = [n for n, _ in model.named_parameters() if n.split(".")[0] not in model.cfg.backbone]
    assert head, f"{name}: nothing left outside the backbone"


def test_scn_and_region_net_take_any_backbone_with_a_classifier():
    scn = create_model("scn", num_classes=7, backbone="small_cnn")
    assert scn.cfg.input_size == (3, 64, 64) and scn.cfg.target_layer == "backbone.blocks.3"
    assert scn.cfg.mean == (0.5, 0.5, 0.5)
    assert count_params(scn) == count_params(create_model("small_cnn", num_classes=7)) + 257  # alpha: 256 + 1
    region = create_model("region_attention", num_classes=7, backbone="small_cnn", input_size=96)
    assert region.cfg.input_size == (3, 96, 96) and region(torch.randn(2, 3, 96, 96)).shape == (2, 7)
    with pytest.raises(ValueError, match="patt_lite cannot be used as a backbone here"):
        create_model("scn", num_classes=7, backbone="patt_lite")
