"""MobileNetV2, ShuffleNetV2 and LFER-LDL: sizes, cost, ImageNet loading from local files and offline errors."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from fer_core.models import count_params, create_model
from fer_core.models.lfer_ldl import LFERLDL
from fer_core.models.shufflenet import ShuffleNetV2
from fer_core.models.weights import WeightsMismatchError

TORCHVISION = {"mobilenet_v2": tvm.mobilenet_v2, "shufflenet_v2": tvm.shufflenet_v2_x1_0,
               "lfer_ldl": tvm.shufflenet_v2_x1_0}


def flops_224(model: torch.nn.Module) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, 224, 224))
    return counter.get_total_flops()


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory) -> dict[str, str]:
    """Stand-ins for the downloaded ImageNet files: torchvision's randomly initialised state dicts as safetensors."""
    folder = tmp_path_factory.mktemp("imagenet")
    files = {}
    for name, fn in (("mobilenet_v2", tvm.mobilenet_v2), ("shufflenet_v2", tvm.shufflenet_v2_x1_0)):
        torch.manual_seed(1)
        files[name] = str(folder / f"{name}.safetensors")
        save_file({k: v.contiguous() for k, v in fn(weights=None).state_dict().items()}, files[name])
    return files


def test_sizes_and_cost_at_224():
    assert count_params(create_model("mobilenet_v2", num_classes=7)) == 2_232_839
    shufflenet = create_model("shufflenet_v2", num_classes=7)
    assert count_params(shufflenet) == 1_260_779 == count_params(tvm.shufflenet_v2_x1_0(num_classes=7))
    assert flops_224(shufflenet) == 287_782_320           # 143.9 M MACs
    lfer = create_model("lfer_ldl", num_classes=7)
    params, flops = count_params(lfer), flops_224(lfer)
    assert params == 1_278_643 and abs(params / 1.26e6 - 1) < 0.03        # paper: 1.26 M
    assert flops == 294_199_920 and abs(flops / 294.6e6 - 1) < 0.05       # paper: 294.60 MFLOPs (= 2 x MACs)


def test_lfer_ldl_switches_off_is_shufflenet_v2():
    torch.manual_seed(0)
    reference = ShuffleNetV2(num_classes=7).eval()
    plain = LFERLDL(num_classes=7, drop_rate=0.0, pdr=False, mish_relu6=False).eval()
    state = reference.state_dict()
    state["head.conv.weight"] = state.pop("fc.weight")[:, :, None, None]
    state["head.conv.bias"] = state.pop("fc.bias")
    plain.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain(x), reference(x), atol=1e-5)
    lfer = LFERLDL(num_classes=7)
    acts = [type(m).__name__ for m in lfer.modules() if isinstance(m, (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Mish))]
    assert type(lfer.conv1[2]) is torch.nn.Mish and acts.count("Mish") == 4 and "ReLU" not in acts
    with torch.no_grad():  # the depthwise modules start as the identity
        feats = torch.randn(2, 116, 8, 8)
        assert torch.equal(lfer.pdr2(feats), feats)


@pytest.mark.parametrize("name", ["mobilenet_v2", "shufflenet_v2", "lfer_ldl"])
def test_pretrained_from_local_file(name, imagenet_files):
    source = imagenet_files["mobilenet_v2" if name == "mobilenet_v2" else "shufflenet_v2"]
    model = create_model(name, num_classes=7, pretrained=True, weights_path=source)
    report = model.load_report
    imagenet = TORCHVISION[name](weights=None).state_dict()
    own = model.state_dict()
    assert report.source == source and len(report.matched) == len(imagenet) - 2
    if name == "mobilenet_v2":
        assert report.new == report.dropped == ["classifier.1.bias", "classifier.1.weight"]
        key = "features.18.0.weight"
    elif name == "shufflenet_v2":
        assert report.new == report.dropped == ["fc.bias", "fc.weight"]
        key = "stage4.3.branch2.5.weight"
    else:
        assert report.dropped == ["fc.bias", "fc.weight"]
        assert {k.split(".")[0] for k in report.new} == {"pdr2", "pdr3", "pdr4", "head"}
        assert "head.conv.weight" in report.new and "pdr4.context.0.weight" in report.new
        key = "conv5.0.weight"
    from safetensors.torch import load_file

    assert torch.equal(own[key], load_file(source)[key])
    assert "not used: " in report.summary()


def test_wrong_file_is_refused_with_the_keys(imagenet_files):
    with pytest.raises(WeightsMismatchError, match=r"do not fit ShuffleNetV2: missing from the file .*conv1\.0\.weight"
                                                   r".*unexpected in the file .*features\.0\.0\.weight"):
        create_model("shufflenet_v2", num_classes=7, pretrained=True, weights_path=imagenet_files["mobilenet_v2"])
    with pytest.raises(WeightsMismatchError, match=r"do not fit LFERLDL: missing .*unexpected .*features\."):
        create_model("lfer_ldl", num_classes=7, pretrained=True, weights_path=imagenet_files["mobilenet_v2"])
    with pytest.raises(WeightsMismatchError, match=r"do not fit MobileNetV2: missing .*features\.0\.0\.weight"):
        create_model("mobilenet_v2", num_classes=7, pretrained=True, weights_path=imagenet_files["shufflenet_v2"])
    with pytest.raises(ValueError, match="pretrained is false"):
        create_model("lfer_ldl", num_classes=7, weights_path=imagenet_files["shufflenet_v2"])


@pytest.mark.parametrize("name, url", [("mobilenet_v2", r"mobilenet_v2-b0353104\.pth"),
                                       ("shufflenet_v2", r"shufflenetv2_x1-5666bf0f80\.pth"),
                                       ("lfer_ldl", r"shufflenetv2_x1-5666bf0f80\.pth")])
def test_pretrained_offline_says_where_to_get_the_file(name, url, monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tvm.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=rf"OSError: no network.*https://download\.pytorch\.org/models/{url}"
                                           r".*model\.weights_path"):
        create_model(name, num_classes=7, pretrained=True)
