"""Optical density and colour deconvolution for Papanicolaou-stained smears.

Light through a stained smear obeys Beer-Lambert: each stain adds optical density (OD) along its own colour
direction and densities of overlapping layers add. Working in OD rather than RGB is what makes a threshold mean the
same thing on a pale superficial cell and in a dense cluster, and projecting OD onto the stain directions (colour
deconvolution, Ruifrok & Johnston) separates the haematoxylin of nuclei from the eosin / light-green of cytoplasm,
which a darkness threshold alone cannot do where several cytoplasm layers overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class StainMatrix:
    """OD directions (unit RGB vectors) of the three Pap stain components; the first is haematoxylin.

    The defaults are the OD directions of one stained layer's transmitted colour: haematoxylin blue-violet
    (92, 78, 150; within 3 degrees of Ruifrok & Johnston's haematoxylin), the eosin of mature squamous cytoplasm
    (242, 168, 186) and the light green of intermediate / parabasal cytoplasm (178, 214, 216). Real scans differ by
    a few degrees, which the nucleus threshold tolerates; a lab with a very different stain passes its own vectors.
    """

    haematoxylin: tuple[float, float, float] = (0.6177, 0.7177, 0.3215)
    eosin: tuple[float, float, float] = (0.0995, 0.7937, 0.6001)
    light_green: tuple[float, float, float] = (0.8302, 0.4048, 0.3833)

    def inverse(self) -> np.ndarray:
        """(3, 3) matrix M such that ``od @ M`` gives the per-stain densities (least squares when ill-conditioned)."""
        stains = np.stack([unit(self.haematoxylin), unit(self.eosin), unit(self.light_green)])
        return np.linalg.pinv(stains).astype(np.float32)


def optical_density(rgb: np.ndarray, background: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 OD relative to the glass colour: 0 on empty glass, larger where more light is absorbed.

    Pixels brighter than the glass (noise) give small negative values rather than being clipped, so averages over
    empty glass stay unbiased; fully black pixels are capped at OD 5.
    """
    bg = np.maximum(np.asarray(background, np.float32), 1.0)
    od = rgb.astype(np.float32)
    od += np.float32(0.5)
    od /= bg
    np.maximum(od, np.float32(np.exp(-5.0)), out=od)
    np.log(od, out=od)
    np.negative(od, out=od)
    return od


def stain_densities(od: np.ndarray, stains: StainMatrix | None = None) -> np.ndarray:
    """(H, W, 3) float32 densities of haematoxylin, eosin and light green."""
    inv = (stains or StainMatrix()).inverse()
    return (od.reshape(-1, 3) @ inv).reshape(od.shape)


def haematoxylin(od: np.ndarray, stains: StainMatrix | None = None) -> np.ndarray:
    """(H, W) float32 haematoxylin density: the nuclear stain."""
    inv = (stains or StainMatrix()).inverse()
    return (od.reshape(-1, 3) @ inv[:, 0]).reshape(od.shape[:2])


__all__ = ["StainMatrix", "optical_density", "stain_densities", "haematoxylin", "unit"]
