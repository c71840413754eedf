"""Model registry: every registered model is built, run forward and backward, and its CAM layer resolves."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_core import models
from fer_core.labels import CLASSES
from fer_core.models import ModelConfig, create_model, get_target_layer, list_models, model_info, register_model


@pytest.mark.parametrize("name", list_models())
def test_every_model_forward_backward_and_cam_layer(name):
    torch.manual_seed(0)
    size = min(model_info(name).input_size[1], 32)  # small input keeps the loop fast on a CPU
    model = create_model(name, num_classes=5, class_names=CLASSES[:5], input_size=size)
    assert model.cfg.num_classes == 5 and model.cfg.class_names == CLASSES[:5]
    assert model.cfg.input_size[1:] == (size, size) and len(model.cfg.mean) == model.cfg.input_size[0]
    x = torch.randn(2, *model.cfg.input_size, requires_grad=True)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.ndim == 4
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-6)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 5)
    logits[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    layer = get_target_layer(model)
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert seen and len(seen[0]) == 4, "CAM layer must output a feature map"


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
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
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
