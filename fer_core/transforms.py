"""Batch transforms: a uint8 image batch -> the float tensor a model expects, with training augmentation.

Everything runs on whole batches on the target device (CPU or CUDA), with no Python loop over the images::

    train_tf = BatchTransform.from_config(model.cfg, cfg.train.augment, device="cuda", channels_last=True)
    eval_tf = BatchTransform.from_config(model.cfg, None, device="cuda", channels_last=True)
    x = train_tf(images_uint8, generator)            # float32 N x C x H x W, normalised

A call converts (scale to [0, 1], grey <-> RGB, resize to the model's input size), augments, then normalises with
the model's mean and std. The augmentations, in this order:

1. geometric: horizontal flip; shift-crop (reflect padding); rotation (bilinear, reflection padding);
2. photometric, on the [0, 1] image and clamped to it: brightness, contrast, Gaussian noise;
3. random erasing, also on the [0, 1] image: the fill is uniform noise in [0, 1], so after normalisation it spans
   exactly the range of real pixels. (torchvision erases after normalisation and fills with N(0, 1) values; in
   ImageNet units those are about as spread, but unbounded.)

Reproducibility: every per-image draw (which images flip, offsets, angles, factors, rectangles) comes from the
CPU ``torch.Generator`` given to the call, in a fixed order, so a run that restores its generators repeats its
batches. The two pixel-sized noise fields (Gaussian noise, erasing fill) are generated *on the device* by a
generator seeded from one integer drawn from that CPU generator: still a function of the CPU generator's state,
but identical only on the same kind of device (CPU and CUDA random streams differ).

The per-image draws are exposed (:meth:`BatchTransform.sample` returns an :class:`AugmentParams`), and each
operation is a function of explicit parameters (:func:`rotate`, :func:`erase`, ...), so both can be tested alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from fer_core.config import AugmentConfig
    from fer_core.models import ModelConfig

GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, used for RGB -> grey and for the contrast jitter's mean grey level."""

ERASING_RATIO = (0.3, 3.3)
"""Aspect ratio (height / width) range of an erased rectangle, drawn log-uniformly (Zhong et al.; torchvision)."""

PaddingMode = Literal["reflection", "border", "zeros"]


@dataclass
class AugmentParams:
    """The random draws for one batch of ``n`` images (CPU tensors of length ``n``; None where an op is off).

    Attributes:
        flip: bool, mirror the image horizontally.
        crop: int64 ``n x 2``, (dy, dx) offset of the crop in the padded image, each in [0, 2 * padding].
        angle: float32, rotation in degrees (counter-clockwise).
        brightness: float32, brightness factor.
        contrast: float32, contrast factor.
        noise: bool, add Gaussian noise.
        erase: bool, erase a rectangle.
        boxes: int64 ``n x 4``, (top, left, height, width) of each image's rectangle (meaningful where ``erase``).
        seed: seed of the device generator for the noise fields (None when no image needs noise).
    """

    flip: torch.Tensor | None = None
    crop: torch.Tensor | None = None
    angle: torch.Tensor | None = None
    brightness: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    erase: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    seed: int | None = None


# --------------------------------------------------------------------------------------------- operations
def _per_image(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A length-n vector as an ``n x 1 x 1 x 1`` tensor on ``x``'s device (bools stay bools)."""
    values = values.to(x.device, non_blocking=True)
    return values.view(-1, 1, 1, 1) if values.dtype == torch.bool else values.to(x.dtype).view(-1, 1, 1, 1)


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the images where ``flip`` (bool, length n) is set."""
    return torch.where(_per_image(flip, x), x.flip(-1), x)


def shift_crop(x: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Pad each side by ``padding`` (reflect) and crop back to the original size at ``offsets`` (n x 2, dy dx).

    ``padding`` must be below the image's height and width (a reflect-padding limit).
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding), mode="reflect")
    offsets = offsets.to(x.device, non_blocking=True)
    rows = (torch.arange(h, device=x.device).view(1, h) + offsets[:, 0:1]).view(n, h, 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + offsets[:, 1:2]).view(n, 1, w)
    return padded[torch.arange(n, device=x.device).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)


def rotate(x: torch.Tensor, angles: torch.Tensor, padding_mode: PaddingMode = "reflection") -> torch.Tensor:
    """Rotate each image about its centre by ``angles`` degrees, counter-clockwise as seen (torchvision's sense).

    Bilinear sampling; pixels that come from outside the image are filled by ``padding_mode`` (``reflection``
    mirrors the image at its border, ``border`` repeats the edge pixels, ``zeros`` fills black).
    """
    n, _, h, w = x.shape
    rad = torch.deg2rad(angles.to(x.device, torch.float64, non_blocking=True))
    cos, sin = torch.cos(rad), torch.sin(rad)
    # theta maps output to input coordinates, both normalised to [-1, 1] per axis (hence the aspect terms):
    # the inverse of a counter-clockwise rotation in y-down pixel coordinates.
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    grid = F.affine_grid(theta.to(grid_dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x.to(grid_dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    return out.to(x.dtype)


def adjust_brightness(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale each [0, 1] image by its factor (torchvision's ``adjust_brightness``), clamped to [0, 1]."""
    return (x * _per_image(factors, x)).clamp_(0, 1)


def grey_mean(x: torch.Tensor) -> torch.Tensor:
    """Each image's mean grey level (``n x 1 x 1 x 1``): BT.601 luma for RGB, the plain mean otherwise."""
    if x.shape[1] == 3:
        weights = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    return x.mean((1, 2, 3), keepdim=True)


def adjust_contrast(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Scale each [0, 1] image's contrast around its mean grey level (torchvision's ``adjust_contrast``):
    ``factor * x + (1 - factor) * mean``, clamped to [0, 1]. Without clamping the mean is unchanged."""
    f = _per_image(factors, x)
    return (f * x + (1 - f) * grey_mean(x)).clamp_(0, 1)


def add_gaussian_noise(x: torch.Tensor, mask: torch.Tensor, std: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Add N(0, ``std``) noise, independent per pixel and channel, to the [0, 1] images where ``mask`` is set;
    clamped to [0, 1]. ``generator`` must live on ``x``'s device."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(_per_image(mask, x), (x + std * noise).clamp_(0, 1), x)


def erase(x: torch.Tensor, mask: torch.Tensor, boxes: torch.Tensor,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill one rectangle per image (``boxes``: n x 4, top left height width) with uniform noise in [0, 1),
    independent per pixel and channel, where ``mask`` is set. ``generator`` must live on ``x``'s device."""
    _, _, h, w = x.shape
    b = boxes.to(x.device, non_blocking=True).view(-1, 4, 1, 1)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= b[:, 0]) & (rows < b[:, 0] + b[:, 2]) & (cols >= b[:, 1]) & (cols < b[:, 1] + b[:, 3]))
    inside = inside.unsqueeze(1) & _per_image(mask, x)
    fill = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(inside, fill, x)


def sample_erasing_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                         ratio: tuple[float, float] = ERASING_RATIO, attempts: int = 10,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangles as torchvision's ``RandomErasing.get_params`` draws them, for ``n`` images at once.

    Each attempt draws an area fraction uniform in ``scale`` and an aspect ratio (height / width) log-uniform in
    ``ratio``, rounds the sides to pixels and keeps the first attempt that fits inside the image; the position is
    uniform over the places it fits. Returns ``(boxes, ok)``: int64 ``n x 4`` (top, left, height, width) and
    bool ``n``, False where no attempt fitted (torchvision then leaves the image alone).
    """
    area = torch.empty(n, attempts).uniform_(scale[0], scale[1], generator=generator) * (height * width)
    log_ratio = torch.empty(n, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_ratio)
    eh = torch.sqrt(area * aspect).round().long()
    ew = torch.sqrt(area / aspect).round().long()
    fits = (eh >= 1) & (ew >= 1) & (eh < height) & (ew < width)
    ok = fits.any(1)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # index of the first fitting attempt (0 if none)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
    u = torch.rand(n, 2, generator=generator)
    top = (u[:, 0] * (height - eh + 1)).floor().long().clamp_(min=0)
    left = (u[:, 1] * (width - ew + 1)).floor().long().clamp_(min=0)
    return torch.stack([top, left, eh, ew], 1), ok


def to_model_input(images: torch.Tensor, channels: int, height: int, width: int,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``N x C x H x W`` -> float32 in [0, 1] on ``device`` with ``channels`` channels (RGB -> grey by
    BT.601 luma, grey -> RGB by repetition) and the model's size (bilinear, antialiased)."""
    x = images.to(device, non_blocking=True).float().div_(255.0)
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor(GREY_WEIGHTS, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x


# --------------------------------------------------------------------------------------------- the transform
class BatchTransform:
    """uint8 image batch -> the float tensor a model expects: scale, channels, resize, augment, normalise.

    Build it with :meth:`from_config` from a run's ``train.augment`` section (or None for evaluation). With every
    augmentation off (the default) a call is deterministic and only converts and normalises.

    Args:
        cfg: the model's config (input size, mean, std).
        hflip: mirror each image with probability 0.5.
        crop_padding: pad by this many pixels (reflect) and crop back at a uniformly random offset.
        rotation: rotate by an angle uniform in [-rotation, rotation] degrees.
        rotation_padding: how rotation fills the corners: ``reflection``, ``border`` or ``zeros``.
        brightness: multiply by a factor uniform in [1 - brightness, 1 + brightness].
        contrast: scale the contrast around the image's mean grey level by a factor uniform in
            [1 - contrast, 1 + contrast].
        random_erasing: probability of erasing one rectangle per image.
        erasing_scale: range of the rectangle's area as a fraction of the image.
        gaussian_noise: probability of adding N(0, ``noise_std``) noise to an image (on its [0, 1] scale).
        noise_std: the noise's standard deviation.
        flip_or_noise: the SCN reference's exclusive choice instead of independent flip and noise: each image is
            augmented with probability ``gaussian_noise``, and then gets either the flip or the noise, 50/50 (so
            ``gaussian_noise=0.5`` is SCN's recipe, 1.0 gives every image exactly one of them). Needs ``hflip``.
        device: where the batch is converted and returned.
        channels_last: return NHWC-strided batches (for a model converted with ``memory_format=channels_last``).
    """

    def __init__(self, cfg: ModelConfig, *, hflip: bool = False, crop_padding: int = 0, rotation: float = 0.0,
                 rotation_padding: PaddingMode = "reflection", brightness: float = 0.0, contrast: float = 0.0,
                 random_erasing: float = 0.0, erasing_scale: tuple[float, float] = (0.02, 0.25),
                 gaussian_noise: float = 0.0, noise_std: float = 0.05, flip_or_noise: bool = False,
                 device: str | torch.device = "cpu", channels_last: bool = False):
        checks = [
            (crop_padding >= 0, "crop_padding", crop_padding, "an integer >= 0"),
            (0 <= rotation <= 180, "rotation", rotation, "degrees in [0, 180]"),
            (rotation_padding in ("reflection", "border", "zeros"), "rotation_padding", rotation_padding,
             "'reflection', 'border' or 'zeros'"),
            (0 <= brightness < 1, "brightness", brightness, "in [0, 1)"),
            (0 <= contrast < 1, "contrast", contrast, "in [0, 1)"),
            (0 <= random_erasing <= 1, "random_erasing", random_erasing, "a probability in [0, 1]"),
            (0 < erasing_scale[0] <= erasing_scale[1] < 1, "erasing_scale", list(erasing_scale),
             "two fractions 0 < low <= high < 1"),
            (0 <= gaussian_noise <= 1, "gaussian_noise", gaussian_noise, "a probability in [0, 1]"),
            (noise_std >= 0, "noise_std", noise_std, ">= 0"),
            (not flip_or_noise or hflip, "flip_or_noise", flip_or_noise,
             "off when hflip is off (it chooses between the flip and the noise): set hflip too"),
            (not flip_or_noise or gaussian_noise > 0, "flip_or_noise", flip_or_noise,
             "used with gaussian_noise > 0, the probability that an image gets the flip or the noise (SCN: 0.5); "
             "with 0 no image would be flipped"),
        ]
        for ok, key, value, valid in checks:
            if not ok:
                raise ValueError(f"BatchTransform {key}={value!r} is invalid: must be {valid}")
        self.channels, self.height, self.width = cfg.input_size
        self.hflip, self.crop_padding = hflip, int(crop_padding)
        self.rotation, self.rotation_padding = float(rotation), rotation_padding
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.random_erasing, self.erasing_scale = float(random_erasing), tuple(erasing_scale)
        self.gaussian_noise, self.noise_std, self.flip_or_noise = float(gaussian_noise), float(noise_std), flip_or_noise
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    @classmethod
    def from_config(cls, model_cfg: ModelConfig, augment: AugmentConfig | None, *,
                    device: str | torch.device = "cpu", channels_last: bool = False) -> BatchTransform:
        """The transform for a model: training augmentation from a ``train.augment`` section, or none
        (evaluation) when ``augment`` is None.

        Raises:
            ValueError: ``flip_or_noise`` is set without ``hflip`` or with ``gaussian_noise: 0`` (the message
                names the ``train.augment`` key).
        """
        if augment is None:
            return cls(model_cfg, device=device, channels_last=channels_last)
        fields = ("hflip", "crop_padding", "rotation", "brightness", "contrast", "random_erasing", "erasing_scale",
                  "gaussian_noise", "noise_std", "flip_or_noise")
        try:
            return cls(model_cfg, **{k: getattr(augment, k) for k in fields}, device=device,
                       channels_last=channels_last)
        except ValueError as err:
            raise ValueError(str(err).replace("BatchTransform ", "train.augment.", 1)) from None

    @property
    def augments(self) -> bool:
        """Whether any augmentation is on (False: a call is deterministic)."""
        return bool(self.hflip or self.crop_padding or self.rotation or self.brightness or self.contrast
                    or self.random_erasing or self.gaussian_noise)

    def __repr__(self) -> str:
        c, h, w = self.channels, self.height, self.width
        on = [f"{k}={v}" for k, v in (("hflip", self.hflip), ("crop_padding", self.crop_padding),
                                        ("rotation", self.rotation), ("brightness", self.brightness),
                                        ("contrast", self.contrast), ("random_erasing", self.random_erasing),
                                        ("gaussian_noise", self.gaussian_noise), ("flip_or_noise", self.flip_or_noise))
              if v]
        if self.random_erasing:
            on.append(f"erasing_scale={self.erasing_scale}")
        if self.gaussian_noise:
            on.append(f"noise_std={self.noise_std}")
        return f"BatchTransform({c}x{h}x{w}, {', '.join(on) or 'no augmentation'}, device={self.device})"

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Convert, augment (drawing from ``generator``, a CPU generator; None: the global one) and normalise."""
        x = to_model_input(images, self.channels, self.height, self.width, self.device)
        if self.augments:
            x = self.apply(x, self.sample(len(x), generator))
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def sample(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the random parameters for ``n`` images from ``generator`` (CPU), always in the same order."""
        p = AugmentParams()
        if self.hflip and not self.flip_or_noise:
            p.flip = torch.rand(n, generator=generator) < 0.5
        pad = self._crop_pad()
        if pad > 0:
            dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
            p.crop = torch.stack([dy, dx], 1)
        if self.rotation:
            p.angle = torch.empty(n).uniform_(-self.rotation, self.rotation, generator=generator)
        if self.brightness:
            p.brightness = torch.empty(n).uniform_(1 - self.brightness, 1 + self.brightness, generator=generator)
        if self.contrast:
            p.contrast = torch.empty(n).uniform_(1 - self.contrast, 1 + self.contrast, generator=generator)
        if self.flip_or_noise:
            chosen = torch.rand(n, generator=generator) < self.gaussian_noise
            to_noise = torch.rand(n, generator=generator) < 0.5
            p.flip, p.noise = chosen & ~to_noise, chosen & to_noise
        elif self.gaussian_noise:
            p.noise = torch.rand(n, generator=generator) < self.gaussian_noise
        if self.random_erasing:
            boxes, ok = sample_erasing_boxes(n, self.height, self.width, self.erasing_scale, generator=generator)
            p.erase, p.boxes = (torch.rand(n, generator=generator) < self.random_erasing) & ok, boxes
        if (p.noise is not None and self.noise_std > 0) or p.erase is not None:
            p.seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return p

    def apply(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        """Apply drawn parameters to a [0, 1] float batch at the model's size: geometric, photometric, erasing."""
        if p.flip is not None:
            x = hflip(x, p.flip)
        if p.crop is not None:
            x = shift_crop(x, p.crop, self._crop_pad())
        if p.angle is not None:
            x = rotate(x, p.angle, self.rotation_padding)
        if p.brightness is not None:
            x = adjust_brightness(x, p.brightness)
        if p.contrast is not None:
            x = adjust_contrast(x, p.contrast)
        noise_gen = None
        if p.seed is not None:
            noise_gen = torch.Generator(device=x.device).manual_seed(p.seed)
        if p.noise is not None and self.noise_std > 0 and bool(p.noise.any()):
            x = add_gaussian_noise(x, p.noise, self.noise_std, noise_gen)
        if p.erase is not None and bool(p.erase.any()):
            x = erase(x, p.erase, p.boxes, noise_gen)
        return x.contiguous()

    def _crop_pad(self) -> int:
        return max(0, min(self.crop_padding, self.height - 1, self.width - 1))
