"""BatchTransform: conversion unchanged from the original, each augmentation does what its docstring says,
batches repeat for a seed, and every op keeps shapes and dtypes for grey and RGB models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from fer_core.config import AugmentConfig
from fer_core.models import ModelConfig
from fer_core.transforms import (
    BatchTransform,
    adjust_brightness,
    adjust_contrast,
    erase,
    grey_mean,
    rotate,
    sample_erasing_boxes,
)

OFF = {"hflip": False, "crop_padding": 0}  # AugmentConfig's defaults flip and crop; this turns everything off
FULL = AugmentConfig(hflip=True, crop_padding=4, rotation=15, brightness=0.3, contrast=0.3, random_erasing=0.5,
                     gaussian_noise=0.5, noise_std=0.05)


def model_cfg(channels: int = 3, size: int = 32, mean: float = 0.0, std: float = 1.0) -> ModelConfig:
    return ModelConfig(name="t", input_size=(channels, size, size), mean=(mean,) * channels, std=(std,) * channels)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def old_transform(images, cfg, hflip=False, crop_padding=0, generator=None):
    """The BatchTransform of fer_core/evaluate.py before it moved to fer_core/transforms.py (the reference)."""
    channels, height, width = cfg.input_size
    x = images.float().div_(255.0)
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    n, _, h, w = x.shape
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    p = min(crop_padding, h - 1, w - 1)
    if p > 0:
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        rows = (torch.arange(h).view(1, h) + dy.view(n, 1)).view(n, h, 1)
        cols = (torch.arange(w).view(1, w) + dx.view(n, 1)).view(n, 1, w)
        x = padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
    mean, std = torch.tensor(cfg.mean).view(1, -1, 1, 1), torch.tensor(cfg.std).view(1, -1, 1, 1)
    return (x - mean) / std


# --------------------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize(("in_ch", "out_ch", "size"), [(3, 1, 20), (1, 3, 24), (3, 3, 16), (1, 1, 16)])
def test_eval_transform_is_deterministic_and_equals_the_old_one(in_ch, out_ch, size):
    images = torch.randint(0, 256, (5, in_ch, 16, 16), dtype=torch.uint8)
    cfg = model_cfg(out_ch, size, mean=0.5, std=0.25)
    tf = BatchTransform.from_config(cfg, None)
    assert not tf.augments
    a, b = tf(images), tf(images)
    assert torch.equal(a, b) and torch.equal(a, BatchTransform(cfg)(images))
    torch.testing.assert_close(a, old_transform(images, cfg), rtol=0, atol=0)


def test_old_constructor_keeps_its_random_stream():
    images = torch.randint(0, 256, (6, 3, 40, 40), dtype=torch.uint8)
    cfg = model_cfg(3, 40)
    new = BatchTransform(cfg, hflip=True, crop_padding=4)(images, gen(3))
    assert torch.equal(new, old_transform(images, cfg, hflip=True, crop_padding=4, generator=gen(3)))


def test_evaluate_reexports_the_class():
    from fer_core import evaluate

    assert evaluate.BatchTransform is BatchTransform


def test_no_augmentation_is_conversion_only():
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    cfg = model_cfg(3, 32, mean=0.5, std=0.5)
    tf = BatchTransform.from_config(cfg, AugmentConfig(**OFF))
    assert not tf.augments and "no augmentation" in repr(tf)
    torch.testing.assert_close(tf(images, gen()), (images.float() / 255 - 0.5) / 0.5)


@pytest.mark.parametrize("in_ch", [1, 3])
@pytest.mark.parametrize("out_ch", [1, 3])
def test_every_op_keeps_shape_and_dtype_for_grey_and_rgb(in_ch, out_ch):
    images = torch.randint(0, 256, (8, in_ch, 24, 24), dtype=torch.uint8)
    cfg = model_cfg(out_ch, 28, mean=0.5, std=0.25)
    full = BatchTransform.from_config(cfg, FULL.model_copy(update={"gaussian_noise": 1.0, "random_erasing": 1.0}),
                                      channels_last=True)
    out = full(images, gen())
    assert out.shape == (8, out_ch, 28, 28) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.min() >= -2 - 1e-5 and out.max() <= 2 + 1e-5  # [0, 1] normalised: every op stays in range
    if out_ch == 3:
        assert out.is_contiguous(memory_format=torch.channels_last)
    for update in ({"hflip": True}, {"crop_padding": 3}, {"rotation": 20}, {"brightness": 0.4}, {"contrast": 0.4},
                   {"gaussian_noise": 1.0}, {"random_erasing": 1.0}, {"hflip": True, "gaussian_noise": 1.0,
                                                                      "flip_or_noise": True}):
        one = BatchTransform.from_config(cfg, AugmentConfig(**{**OFF, **update}))
        y = one(images, gen())
        assert y.shape == (8, out_ch, 28, 28) and y.dtype == torch.float32, update
    x64 = torch.rand(3, out_ch, 10, 12, dtype=torch.float64)
    params = torch.tensor([0.8, 1.0, 1.2])
    for y in (rotate(x64, params * 10), adjust_brightness(x64, params), adjust_contrast(x64, params),
              erase(x64, torch.tensor([True, False, True]), torch.tensor([[1, 2, 3, 4]] * 3))):
        assert y.shape == x64.shape and y.dtype == torch.float64


# --------------------------------------------------------------------------------------------- each op
def test_flip_probability_is_one_half_and_flips_exactly():
    cfg = model_cfg(1, 8)
    tf = BatchTransform.from_config(cfg, AugmentConfig(hflip=True, crop_padding=0))
    images = torch.randint(0, 256, (4000, 1, 8, 8), dtype=torch.uint8)
    out = tf(images, gen())
    x = images.float() / 255
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all() and abs(flipped.float().mean().item() - 0.5) < 0.03


def test_rotation_by_a_known_angle():
    x = torch.rand(2, 3, 16, 16)
    quarter = rotate(x, torch.tensor([90.0, -90.0]))
    torch.testing.assert_close(quarter[0], torch.rot90(x[0], 1, (-2, -1)), atol=1e-5, rtol=0)  # counter-clockwise
    torch.testing.assert_close(quarter[1], torch.rot90(x[1], -1, (-2, -1)), atol=1e-5, rtol=0)
    y = torch.rand(1, 1, 40, 60)  # non-square: same as torchvision's rotate (zero fill) everywhere
    torch.testing.assert_close(rotate(y, torch.tensor([30.0]), "zeros"),
                               TF.rotate(y, 30.0, interpolation=TF.InterpolationMode.BILINEAR), atol=1e-5, rtol=0)
    dot = torch.zeros(1, 1, 41, 41)
    dot[..., 20, 30] = 1.0  # 10 px right of the centre -> 30 degrees counter-clockwise: up and right
    r = rotate(dot, torch.tensor([30.0]), "zeros")[0, 0]
    ys, xs = torch.meshgrid(torch.arange(41.0), torch.arange(41.0), indexing="ij")
    cy, cx = (r * ys).sum() / r.sum(), (r * xs).sum() / r.sum()
    assert abs(cx - (20 + 10 * math.cos(math.pi / 6))) < 0.2 and abs(cy - (20 - 10 * math.sin(math.pi / 6))) < 0.2


def test_rotation_angles_are_uniform_in_the_range():
    tf = BatchTransform.from_config(model_cfg(1, 8), AugmentConfig(**OFF, rotation=20))
    angle = tf.sample(5000, gen()).angle
    assert angle.min() >= -20 and angle.max() <= 20 and abs(angle.mean()) < 0.5
    assert abs(angle.std() - 40 / math.sqrt(12)) < 0.3


def test_brightness_and_contrast_factors():
    x = 0.3 + 0.35 * torch.rand(64, 3, 16, 16)  # no clamping at factors in [0.5, 1.5]
    factors = torch.linspace(0.5, 1.5, 64)
    c = adjust_contrast(x, factors)
    torch.testing.assert_close(grey_mean(c), grey_mean(x), atol=1e-5, rtol=0)  # contrast keeps the mean grey
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    g, gc = (x * luma).sum(1), (c * luma).sum(1)
    torch.testing.assert_close(gc.std((1, 2)), g.std((1, 2)) * factors, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(adjust_brightness(x, factors).mean((1, 2, 3)), x.mean((1, 2, 3)) * factors)
    tf = BatchTransform.from_config(model_cfg(3, 8), AugmentConfig(**OFF, brightness=0.2, contrast=0.4))
    p = tf.sample(2000, gen())
    assert 0.8 <= p.brightness.min() < 0.81 and 1.19 < p.brightness.max() <= 1.2
    assert 0.6 <= p.contrast.min() < 0.61 and 1.39 < p.contrast.max() <= 1.4


def test_erasing_area_aspect_and_rate():
    size, n, scale = 64, 1000, (0.02, 0.25)
    tf = BatchTransform.from_config(model_cfg(3, size), AugmentConfig(**OFF, random_erasing=0.5))
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    out = tf(images, gen())
    changed = (out != 0).any(1)  # n x H x W: pixels whose fill differs from black (all, almost surely)
    erased = changed.flatten(1).any(1)
    assert abs(erased.float().mean().item() - 0.5) < 0.05
    assert out.min() >= 0 and out.max() <= 1  # the fill stays in the image's range
    area = changed[erased].flatten(1).float().mean(1)
    assert area.min() >= scale[0] * 0.8 and area.max() <= scale[1] * 1.1  # sides are rounded to pixels
    assert area.min() < 0.04 and area.max() > 0.2
    boxes, ok = sample_erasing_boxes(n, size, size, scale, generator=gen())
    assert ok.all()
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= size).all() and (left + w <= size).all()
    aspect = h / w
    assert aspect.min() >= 0.25 and aspect.max() <= 3.9 and (aspect < 0.4).any() and (aspect > 2.5).any()
    for mask in changed[erased][:20]:  # one solid rectangle each
        rows, cols = mask.nonzero().T
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def test_gaussian_noise_std_and_rate():
    grey = torch.full((400, 1, 32, 32), 128, dtype=torch.uint8)
    tf = BatchTransform.from_config(model_cfg(1, 32), AugmentConfig(**OFF, gaussian_noise=1.0, noise_std=0.05))
    delta = tf(grey, gen()) - 128 / 255
    assert abs(delta.std().item() - 0.05) < 0.002 and abs(delta.mean().item()) < 0.002
    some = BatchTransform.from_config(model_cfg(1, 32), AugmentConfig(**OFF, gaussian_noise=0.3))
    noisy = (some(grey, gen()) != 128 / 255).flatten(1).any(1)
    assert abs(noisy.float().mean().item() - 0.3) < 0.07


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_flip_or_noise_never_both(p):
    tf = BatchTransform.from_config(model_cfg(1, 16),
                                    AugmentConfig(hflip=True, crop_padding=0, gaussian_noise=p, flip_or_noise=True))
    params = tf.sample(4000, gen())
    assert not (params.flip & params.noise).any()
    assert abs(params.flip.float().mean().item() - p / 2) < 0.03
    assert abs(params.noise.float().mean().item() - p / 2) < 0.03
    images = torch.randint(0, 256, (200, 1, 16, 16), dtype=torch.uint8)
    x = images.float() / 255
    out = tf(images, gen(1))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    noisy = ~(flipped | kept) & ((out - x).abs().flatten(1).amax(1) < 0.5)  # noise on the unflipped image
    assert (flipped | kept | noisy).all() and flipped.any() and noisy.any() and (kept.any() == (p < 1))


def test_flip_or_noise_needs_flip_and_a_probability():
    with pytest.raises(ValueError, match=r"train\.augment\.flip_or_noise.*gaussian_noise > 0"):
        BatchTransform.from_config(model_cfg(), AugmentConfig(flip_or_noise=True))
    with pytest.raises(ValueError, match=r"train\.augment\.flip_or_noise.*hflip"):
        BatchTransform.from_config(model_cfg(), AugmentConfig(hflip=False, gaussian_noise=0.5, flip_or_noise=True))


# --------------------------------------------------------------------------------------------- reproducibility
def test_same_seed_same_batch_and_resumable():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    tf = BatchTransform.from_config(model_cfg(3, 32), FULL)
    assert torch.equal(tf(images, gen(7)), tf(images, gen(7)))
    assert not torch.equal(tf(images, gen(7)), tf(images, gen(8)))
    g = gen(7)
    tf(images, g)
    state = g.get_state()
    second = tf(images, g)
    assert torch.equal(second, tf(images, torch.Generator().set_state(state)))  # a resumed run repeats the batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_where_no_pixel_noise_is_drawn():
    images = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8)
    geometric = AugmentConfig(hflip=True, crop_padding=4, rotation=15, brightness=0.3, contrast=0.3)
    cpu = BatchTransform.from_config(model_cfg(3, 32), geometric)(images, gen())
    cuda = BatchTransform.from_config(model_cfg(3, 32), geometric, device="cuda")(images, gen())
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=0)
    full = BatchTransform.from_config(model_cfg(1, 32), FULL, device="cuda", channels_last=True)
    a, b = full(images, gen()), full(images, gen())
    assert a.is_cuda and a.shape == (16, 1, 32, 32) and torch.equal(a, b)
