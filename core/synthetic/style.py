"""Per-slide staining, optics and scanner look: what varies between two real Pap smears of the same patient.

Colour is modelled the way light goes through a stained smear (Beer-Lambert): every component contributes an
optical density (absorbance per RGB channel) times its density, densities add where cells overlap, and the
transmitted colour is background x exp(-OD). That is why overlapping cytoplasm darkens naturally and why the same
stain looks pale on a thin cell and saturated on a thick one. Papanicolaou staining gives squamous cytoplasm
eosin pink/orange (mature, superficial) or light-green blue-green (intermediate, parabasal, metaplastic), and
haematoxylin blue-violet nuclei.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def od_of(rgb: tuple[float, float, float]) -> np.ndarray:
    """Optical density that turns white light into ``rgb`` (transmitted colour at unit density)."""
    return -np.log(np.clip(np.asarray(rgb, np.float64), 1, 255) / 255.0)


# Transmitted colours of one layer of each stained component at unit density.
BASE_COLOURS = {
    "eosin": (242, 168, 186),  # superficial cytoplasm: pink
    "orange": (246, 196, 140),  # keratinised superficial cytoplasm: orange
    "cyan": (178, 214, 216),  # intermediate cytoplasm: pale blue-green
    "cyan_dense": (140, 186, 196),  # parabasal / metaplastic / HSIL cytoplasm: denser blue-green
    "haem": (92, 78, 150),  # nuclei: haematoxylin blue-violet
    "leuko": (228, 214, 226),  # neutrophil cytoplasm: faint grey-pink
}


@dataclass(frozen=True)
class SlideStyle:
    """Everything about a slide's look that is not a cell: stains, glass colour, focus, noise."""

    od: dict  # component name -> (3,) OD vector at unit density
    background: np.ndarray  # (3,) glass colour, 0-255
    #: Optical blur (Gaussian sigma) in level-0 pixels: sharp scans ~0.3, poorly focused ~2.
    focus_sigma: float
    noise_sigma: float  # sensor noise at level 0, 0-255 units
    cyto_texture: float  # contrast of cytoplasm texture
    eosin_share: float  # probability that a mature squamous cell stains pink/orange rather than blue-green
    #: Scale for all cytoplasm densities (thin versus thick smear, stain timing).
    cyto_density: float
    nuclear_density: float

    def edge_width(self, downsample: float) -> float:
        """Width (in pixels of a level) of the blurred edge ramp: at least one pixel (antialiasing)."""
        return math.sqrt(1.0 + (2.0 * self.focus_sigma / downsample) ** 2)


def sample_style(rng: np.random.Generator) -> SlideStyle:
    """A random but plausible look; different seeds give visibly different slides."""
    hue = np.exp(rng.normal(0.0, 0.10, size=3))
    od = {}
    for name, rgb in BASE_COLOURS.items():
        jitter = np.exp(rng.normal(0.0, 0.06, size=3))
        od[name] = od_of(rgb) * hue * jitter
    od["haem"] = od["haem"] * rng.uniform(0.85, 1.2)
    base = np.array([246.0, 245.0, 243.0]) + rng.normal(0.0, 1.2, size=3)
    background = np.clip(base - rng.uniform(0, 9), 215, 253)
    return SlideStyle(
        od=od,
        background=background,
        focus_sigma=float(rng.uniform(0.3, 0.8) if rng.random() < 0.7 else rng.uniform(0.8, 1.8)),
        noise_sigma=float(rng.uniform(0.8, 1.8)),
        cyto_texture=float(rng.uniform(0.12, 0.30)),
        eosin_share=float(rng.uniform(0.3, 0.7)),
        cyto_density=float(rng.uniform(0.8, 1.2)),
        nuclear_density=float(rng.uniform(0.85, 1.15)),
    )
