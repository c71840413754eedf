"""Perturbation methods: occlusion (captum) and LIME (lime). Both are signed: positive = evidence for the class."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fer_core.explain.core import Inputs, no_bar, register_method, silenced
from fer_core.transforms import to_model_input


def _pixels(value: float | int, side: int, name: str) -> int:
    """An int is pixels of the model input; a float in (0, 1] a fraction of its side."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"occlusion {name} must be pixels (int >= 1) or a fraction of the input side in (0, 1], "
                         f"not {value!r}")
    if isinstance(value, float):
        if value > 1:
            raise ValueError(f"occlusion {name}={value} as a fraction must be <= 1 (or give pixels as an int)")
        return max(1, round(value * side))
    return min(int(value), side)


@register_method("occlusion", family="perturbation", library="captum", signed=True,
                 defaults=dict(window=0.125, stride=0.0625, batch_size=64),
                 description="drop of the class score when a grey square hides each region (signed)")
def occlusion(inputs: Inputs, targets: list[int], *, window: float | int, stride: float | int,
              batch_size: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Zeiler & Fergus 2014: slide a square of the model's mean grey (0 after normalisation) over the input and
    record how much the target's logit drops. ``window`` and ``stride`` are fractions of the input side (floats)
    or pixels (ints): the defaults give 8/4 px at 64 px and 28/14 px at 224, i.e. 15 x 15 = 225 forward passes
    at any size."""
    from captum.attr import Occlusion

    c, h, w = inputs.input_size
    wh, ww = _pixels(window, h, "window"), _pixels(window, w, "window")
    sh, sw = _pixels(stride, h, "stride"), _pixels(stride, w, "stride")
    if sh > wh or sw > ww:
        raise ValueError(f"occlusion stride {stride!r} ({sh}x{sw} px) is larger than the window {window!r} "
                         f"({wh}x{ww} px): parts of the face would never be hidden")
    x = inputs.x.detach().expand(len(targets), -1, -1, -1).contiguous()
    with torch.no_grad():
        attr = Occlusion(inputs.model).attribute(x, sliding_window_shapes=(c, wh, ww), strides=(c, sh, sw),
                                                 baselines=0.0, target=targets,
                                                 perturbations_per_eval=int(batch_size))
    return attr.mean(1).cpu().numpy(), dict(window=window, stride=stride, batch_size=batch_size,
                                            window_px=(wh, ww), stride_px=(sh, sw))


@register_method("lime", family="perturbation", library="lime", all_classes=True, signed=True,
                 defaults=dict(num_samples=500, batch_size=100, segmentation="slic", n_segments=50, compactness=10.0,
                               hide_color=None, seed=0),
                 description="local linear model over superpixels switched on and off (signed)")
def lime(inputs: Inputs, targets: list[int], *, num_samples: int, batch_size: int, segmentation: str,
         n_segments: int, compactness: float, hide_color: int | None,
         seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Ribeiro et al. 2016: the weight of each superpixel in a linear model fitted to the class probability of
    ``num_samples`` copies with random superpixels hidden.

    LIME runs on the image at the model's input size (grey models: the grey image as RGB, since lime segments RGB;
    the classifier turns it back into the model's channels). Superpixels: SLIC with ``n_segments`` and
    ``compactness`` (about 35 regions on a 64 px face; lime's default quickshift finds only 2 there), or
    ``segmentation="quickshift"`` (lime's defaults kernel_size=4, max_dist=200, ratio=0.2; n_segments and
    compactness are then unused). A hidden superpixel takes its mean colour (``hide_color=None``, lime's default)
    or the grey level ``hide_color``. ``seed`` fixes the samples and the segmentation.
    """
    import lime.lime_image as lime_image
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    if segmentation == "slic":
        segmenter = SegmentationAlgorithm("slic", n_segments=int(n_segments), compactness=float(compactness),
                                          start_label=0)
        used = dict(n_segments=n_segments, compactness=compactness)
    elif segmentation == "quickshift":
        segmenter = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=seed)
        used = {}
    else:
        raise ValueError(f"lime segmentation must be 'slic' or 'quickshift', not {segmentation!r}")
    c, h, w = inputs.input_size
    model, transform = inputs.model, inputs.transform
    small = to_model_input(inputs.batch, c, h, w)[0].mul(255).round().byte().permute(1, 2, 0).numpy()
    rgb = np.repeat(small, 3, axis=2) if c == 1 else small

    def classify(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).permute(0, 3, 1, 2)
        with torch.no_grad():
            return torch.softmax(model(transform(batch)).double(), dim=1).cpu().numpy()

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    with silenced(lime_image, "tqdm", no_bar):
        result = explainer.explain_instance(rgb, classify, labels=tuple(targets), top_labels=None,
                                            hide_color=hide_color, num_samples=int(num_samples),
                                            batch_size=int(batch_size), segmentation_fn=segmenter, random_seed=seed)
    segments = result.segments
    maps = np.zeros((len(targets), h, w), np.float32)
    for i, t in enumerate(targets):
        weights = np.zeros(segments.max() + 1, np.float32)
        for seg, weight in result.local_exp[t]:
            weights[seg] = weight
        maps[i] = weights[segments]
    return maps, dict(num_samples=num_samples, batch_size=batch_size, segmentation=segmentation, **used,
                      hide_color=hide_color, seed=seed, superpixels=int(len(np.unique(segments))))
