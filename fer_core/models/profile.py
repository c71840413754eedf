"""Model size and cost: parameters, multiply-accumulates at the input size, and CPU latency of one image.

MACs come from PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per
multiply-accumulate for convolutions (depthwise and grouped included) and matrix products; MACs here are its
FLOPs / 2. Element-wise work (BatchNorm, activations, pooling, softmax) is not counted, as in fvcore, thop and
ptflops, so the figures compare with papers that used those counters. Papers differ on whether "FLOPs" means
MACs; :func:`profile_model` reports both.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fer_core.models.registry import count_params, create_model, list_models


@dataclass
class ModelProfile:
    """Size and cost of one model at its input size (batch of one)."""

    name: str
    input_size: tuple[int, int, int]
    num_classes: int
    params: int
    params_with_bn_stats: int
    macs: int
    latency_ms: float | None

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    def to_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops}


def count_macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    """Multiply-accumulates of one forward pass on a single image of ``input_size`` (C, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_size))
    model.train(was_training)
    return counter.get_total_flops() // 2


def cpu_latency_ms(model: nn.Module, input_size: tuple[int, int, int], runs: int = 10, warmup: int = 2) -> float:
    """Median wall time (ms) of one forward pass on a single image, on the CPU, with the current thread count."""
    was_training = model.training
    model.eval()
    x = torch.randn(1, *input_size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    model.train(was_training)
    return statistics.median(times)


def profile_model(model: nn.Module, *, latency: bool = True, runs: int = 10) -> ModelProfile:
    """Profile a model created by :func:`fer_core.models.create_model` (its ``cfg`` gives the input size)."""
    cfg = model.cfg
    size = tuple(cfg.input_size)
    return ModelProfile(name=cfg.name, input_size=size, num_classes=cfg.num_classes, params=count_params(model),
                        params_with_bn_stats=count_params(model, with_bn_stats=True), macs=count_macs(model, size),
                        latency_ms=cpu_latency_ms(model, size, runs=runs) if latency else None)


def profile_models(names: list[str] | None = None, *, num_classes: int = 7, latency: bool = True,
                   runs: int = 10) -> list[ModelProfile]:
    """Profile registered models (default: all), randomly initialised, with ``num_classes`` outputs."""
    out = []
    for name in names or list_models():
        torch.manual_seed(0)
        model = create_model(name, num_classes=num_classes, pretrained=False)
        out.append(profile_model(model, latency=latency, runs=runs))
    return out
