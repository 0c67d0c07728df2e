"""DINOv2's multi-crop augmentation, written for this project (torchvision is not available beside CPU torch).

Each image gives two global crops (what the teacher sees) and ``local_crops_number`` small local crops. The
student must match the teacher's view of one global crop from every other crop, so the augmentations define what
the features learn to ignore: position and scale (random resized crops), orientation (flips), stain intensity and
hue (colour jitter, grayscale), focus (blur) and, on one global crop, solarisation. DINOv2 flips only left-right
(photographs have an up); a cell on a smear has none, so ``quarter_turns`` (off by default) adds random rotations by
multiples of 90 degrees, which with the flip give all eight orientations of the square.

Reference parameters (DINOv2 ``DataAugmentationDINO``):

- global: ``RandomResizedCrop(global_size, scale=(0.32, 1), ratio=(3/4, 4/3), bicubic)``, flip p 0.5; local the same
  with ``(0.05, 0.32)`` at ``local_size``;
- colour jitter (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1) with p 0.8, in a random order of the four;
  then grayscale with p 0.2;
- Gaussian blur (9-tap kernel, sigma uniform in [0.1, 2]) with p 1.0 on global crop 1, 0.1 on global crop 2, 0.5 on
  local crops; solarise (values >= 128 inverted) with p 0.2 on global crop 2 only;
- then ``ToTensor`` and ImageNet mean/std normalisation.

Cropping and resizing use PIL's antialiased bicubic resampling (what torchvision does with PIL images); the colour
operations follow torchvision's tensor definitions (blends towards black, the mean grey level, the grayscale image;
hue rotation in HSV). Every random choice comes from the ``numpy.random.Generator`` passed in, so a sample's crops are
a pure function of its seed: the same on any number of processes, and again after a resume.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core.models.presets import IMAGENET_MEAN, IMAGENET_STD

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
SOLARIZE_THRESHOLD = 128 / 255.0


# ------------------------------------------------------------------------------------------------------- geometry
def random_resized_crop_box(height: int, width: int, scale: Sequence[float], rng: np.random.Generator,
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a crop covering a random share ``scale`` of the area with a log-uniform aspect ratio.

    Ten tries, then the largest centred crop whose aspect ratio lies in ``ratio`` (torchvision's rule).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The ``box`` of an RGB uint8 image resampled to ``size`` x ``size`` (antialiased bicubic)."""
    top, left, h, w = box
    pil = Image.fromarray(image)
    out = pil.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    return np.asarray(out)


def to_unit_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1] (``ToTensor``)."""
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255.0)


# ------------------------------------------------------------------------------------------------------- colour
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(3, H, W) -> (1, H, W) luma."""
    r, g, b = x.unbind(0)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(0)


def _blend(x: torch.Tensor, other: torch.Tensor | float, factor: float) -> torch.Tensor:
    return (factor * x + (1.0 - factor) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, 0.0, factor)


def adjust_contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, grayscale(x).mean(), factor)


def adjust_saturation(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _blend(x, grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(0)
    maxc, _ = x.max(dim=0)
    minc, _ = x.min(dim=0)
    delta = maxc - minc
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h = torch.where(maxc == r, (g - b) / safe_delta,
                    torch.where(maxc == g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta))
    h = torch.where(grey, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0, 1.0)
    return torch.stack((h, s, maxc))


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(0)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    sector = sector.long() % 6
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    choices = torch.stack([
        torch.stack((v, t, p)), torch.stack((q, v, p)), torch.stack((p, v, t)),
        torch.stack((p, q, v)), torch.stack((t, p, v)), torch.stack((v, p, q)),
    ])  # (6, 3, H, W)
    index = sector.unsqueeze(0).unsqueeze(0).expand(1, 3, *sector.shape)
    return choices.gather(0, index).squeeze(0)


def adjust_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate hue by ``shift`` turns (in [-0.5, 0.5])."""
    hsv = rgb_to_hsv(x)
    hsv[0] = torch.remainder(hsv[0] + shift, 1.0)
    return hsv_to_rgb(hsv).clamp_(0.0, 1.0)


def gaussian_kernel(sigma: float, size: int = 9) -> torch.Tensor:
    half = (size - 1) / 2
    xs = torch.arange(size, dtype=torch.float32) - half
    k = torch.exp(-0.5 * (xs / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, size: int = 9) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders (torchvision's ``GaussianBlur``)."""
    k = gaussian_kernel(sigma, size)
    c = x.shape[0]
    pad = size // 2
    y = F.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
    y = F.conv2d(y, k.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)
    return y.squeeze(0)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    return torch.where(x >= threshold - 1e-6, 1.0 - x, x)


# -------------------------------------------------------------------------------------------------- the pipeline
@dataclasses.dataclass(frozen=True)
class ColorJitter:
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1

    def __call__(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        ops = (
            lambda t: adjust_brightness(t, rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)),
            lambda t: adjust_contrast(t, rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)),
            lambda t: adjust_saturation(t, rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)),
            lambda t: adjust_hue(t, rng.uniform(-self.hue, self.hue)),
        )
        for i in rng.permutation(4):
            x = ops[i](x)
        return x


@dataclasses.dataclass(frozen=True)
class MultiCropAugmentation:
    global_crops_scale: tuple[float, float] = (0.32, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.32)
    local_crops_number: int = 8
    global_crops_size: int = 224
    local_crops_size: int = 96
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: tuple[float, float, float] = (1.0, 0.1, 0.5)  # global 1, global 2, local
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.2  # global 2 only
    flip_p: float = 0.5
    quarter_turns: bool = False  # CervixFM: also rotate by a random multiple of 90 degrees (all 8 orientations)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    jitter: ColorJitter = ColorJitter()

    @classmethod
    def from_config(cls, crops) -> "MultiCropAugmentation":
        """The ``crops`` settings; photometric keys a config lacks keep DINOv2's values."""
        reference = cls()
        jitter = crops.get("color_jitter")
        return cls(global_crops_scale=tuple(crops.global_crops_scale), local_crops_scale=tuple(crops.local_crops_scale),
                   local_crops_number=int(crops.local_crops_number), global_crops_size=int(crops.global_crops_size),
                   local_crops_size=int(crops.local_crops_size),
                   jitter_p=float(crops.get("color_jitter_prob", reference.jitter_p)),
                   jitter=ColorJitter(*(float(v) for v in jitter)) if jitter is not None else reference.jitter,
                   grayscale_p=float(crops.get("grayscale_prob", reference.grayscale_p)),
                   blur_p=tuple(float(v) for v in crops.get("blur_prob", reference.blur_p)),
                   solarize_p=float(crops.get("solarize_prob", reference.solarize_p)),
                   quarter_turns=bool(crops.get("quarter_turns", reference.quarter_turns)))

    def _geometric(self, image: np.ndarray, size: int, scale, rng: np.random.Generator) -> torch.Tensor:
        box = random_resized_crop_box(image.shape[0], image.shape[1], scale, rng)
        crop = resized_crop(image, box, size)
        if self.quarter_turns:
            crop = np.rot90(crop, int(rng.integers(4)))
        if rng.random() < self.flip_p:
            crop = crop[:, ::-1]
        return to_unit_tensor(crop)

    def _colour(self, x: torch.Tensor, blur_p: float, solarize_p: float, rng: np.random.Generator) -> torch.Tensor:
        if rng.random() < self.jitter_p:
            x = self.jitter(x, rng)
        if rng.random() < self.grayscale_p:
            x = grayscale(x).expand(3, -1, -1).contiguous()
        if rng.random() < blur_p:
            x = gaussian_blur(x, rng.uniform(*self.blur_sigma))
        if rng.random() < solarize_p:
            x = solarize(x)
        return x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(3, 1, 1)
        return (x - mean) / std

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> dict[str, list[torch.Tensor]]:
        """Two global and ``local_crops_number`` local crops of an RGB uint8 image, normalised (3, S, S) float32."""
        g1 = self._geometric(image, self.global_crops_size, self.global_crops_scale, rng)
        g2 = self._geometric(image, self.global_crops_size, self.global_crops_scale, rng)
        global_crops = [
            self._normalise(self._colour(g1, self.blur_p[0], 0.0, rng)),
            self._normalise(self._colour(g2, self.blur_p[1], self.solarize_p, rng)),
        ]
        local_crops = []
        for _ in range(self.local_crops_number):
            crop = self._geometric(image, self.local_crops_size, self.local_crops_scale, rng)
            local_crops.append(self._normalise(self._colour(crop, self.blur_p[2], 0.0, rng)))
        return {"global_crops": global_crops, "local_crops": local_crops}
