"""Gradient attributions with captum: vanilla saliency, SmoothGrad, integrated gradients.

Every class's map comes from one batched call (the input repeated once per target), so ``target="all"`` is
supported by all three. Pixel attributions are heavy-tailed (a few pixels carry most of the magnitude, and
normalising by the maximum leaves the rest invisible), so, as captum's own visualiser does (``outlier_perc``),
the top ``outliers`` percent of absolute values saturate at +-1 (option ``outliers``, 0 turns it off).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from fer_core.explain.core import Inputs, register_method


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global RNG (CPU, and the model's CUDA device) and seed it, so the noise draws of a library that
    takes no generator repeat, and the caller's random stream is left as it was."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def clip_outliers(maps: np.ndarray, outliers: float) -> np.ndarray:
    """Each map clipped to +- the ``100 - outliers`` percentile of its absolute values."""
    if not 0 <= outliers < 100:
        raise ValueError(f"outliers must be a percentage in [0, 100), got {outliers}")
    if outliers == 0:
        return maps
    out = np.empty_like(maps)
    for i, m in enumerate(maps):
        bound = float(np.percentile(np.abs(m), 100 - outliers))
        out[i] = np.clip(m, -bound, bound) if bound > 0 else m
    return out


@register_method("saliency", family="gradient", library="captum", all_classes=True, defaults=dict(outliers=1.0),
                 description="vanilla gradient |d score / d pixel|, max over channels")
def saliency(inputs: Inputs, targets: list[int], *, outliers: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Simonyan et al. 2014: absolute gradient of the target logit w.r.t. the input, max over colour channels."""
    from captum.attr import Saliency

    x = inputs.repeat(len(targets))
    attr = Saliency(inputs.model).attribute(x, target=targets, abs=True)
    return clip_outliers(attr.amax(1).detach().cpu().numpy(), outliers), dict(outliers=outliers)


@register_method("smoothgrad", family="gradient", library="captum", all_classes=True,
                 defaults=dict(samples=25, noise=0.15, seed=0, outliers=1.0),
                 description="saliency averaged over noisy copies (NoiseTunnel)")
def smoothgrad(inputs: Inputs, targets: list[int], *, samples: int, noise: float, seed: int,
               outliers: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Smilkov et al. 2017: the saliency map averaged over ``samples`` copies of the input with Gaussian noise of
    standard deviation ``noise`` times the input's range (the paper's 10-20 %)."""
    from captum.attr import NoiseTunnel, Saliency

    if samples < 1 or noise < 0:
        raise ValueError(f"smoothgrad needs samples >= 1 and noise >= 0 (got samples={samples}, noise={noise})")
    x = inputs.repeat(len(targets))
    sigma = float(noise * (inputs.x.max() - inputs.x.min()))
    with seeded(seed, x.device):
        attr = NoiseTunnel(Saliency(inputs.model)).attribute(
            x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=samples, stdevs=sigma,
            target=targets, abs=True)
    return clip_outliers(attr.amax(1).detach().cpu().numpy(), outliers), dict(samples=samples, noise=noise, seed=seed,
                                                                               sigma=sigma, outliers=outliers)


@register_method("integrated_gradients", family="gradient", library="captum", all_classes=True, signed=True,
                 defaults=dict(baseline="mean", steps=32, batch_size=64, outliers=1.0),
                 description="gradients integrated along the path from a baseline image (signed)")
def integrated_gradients(inputs: Inputs, targets: list[int], *, baseline: str, steps: int, batch_size: int,
                         outliers: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Sundararajan et al. 2017, summed over colour channels (signed: positive pixels raise the target's logit).

    Baseline ``"mean"`` (default): the model's normalisation mean, i.e. an all-zero normalised input, a flat grey
    for the FER models; it credits dark *and* bright features (pupils, open mouth, teeth), which a black
    baseline cannot see when they are near black. ``"black"``: the all-zero image before normalisation.
    """
    from captum.attr import IntegratedGradients

    x = inputs.repeat(len(targets))
    if baseline == "mean":
        base = torch.zeros_like(x)
    elif baseline == "black":
        base = inputs.transform(torch.zeros_like(inputs.batch)).expand_as(x)
    else:
        raise ValueError(f"integrated_gradients baseline must be 'mean' or 'black', not {baseline!r}")
    attr = IntegratedGradients(inputs.model).attribute(x, baselines=base, target=targets, n_steps=int(steps),
                                                       internal_batch_size=int(batch_size))
    return clip_outliers(attr.sum(1).detach().cpu().numpy(), outliers), dict(baseline=baseline, steps=steps,
                                                                              batch_size=batch_size, outliers=outliers)
