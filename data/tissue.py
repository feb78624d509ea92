"""Procedural H&E tissue.

Tissue is rendered as two stain concentration maps, hematoxylin (nuclei, blue-purple) and
eosin (stroma and cytoplasm, pink), turned into RGB by Beer–Lambert absorption
(I = I0 · exp(-OD)), so colour varies between slides the way real stains do. Everything is
defined in micrometres on an unbounded plane: patches are small windows onto it and a whole
slide is rendered tile by tile without seams.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import cast

import numpy as np
from scipy import ndimage

# Optical density per unit concentration, R, G, B (Ruifrok & Johnston 2001).
HEMATOXYLIN = np.array([0.650, 0.704, 0.286])
EOSIN = np.array([0.072, 0.990, 0.105])

NUCLEUS = np.dtype(
    [
        ("x", "f8"),  # centre, µm
        ("y", "f8"),
        ("radius", "f8"),  # mean radius, µm
        ("elongation", "f8"),  # major / minor axis
        ("angle", "f8"),
        ("wobble", "f8", 3),  # boundary harmonics 2, 3, 4 (fraction of the radius)
        ("wobble_phase", "f8", 3),
        ("darkness", "f8"),  # hematoxylin concentration
        ("rim", "f8"),  # 0: solid; 1: vesicular (pale centre, dark membrane)
        ("grain", "f8"),  # chromatin granularity
        ("halo", "f8"),  # clear cytoplasm ring around the nucleus
    ]
)


@dataclass(frozen=True)
class CellKind:
    """Ranges that a kind of nucleus draws its shape and staining from."""

    radius_um: tuple[float, float]
    elongation: tuple[float, float]
    wobble: tuple[float, float]
    darkness: tuple[float, float]
    rim: tuple[float, float]
    grain: tuple[float, float]
    halo: tuple[float, float]

    def toward(self, other: CellKind, closeness: float) -> CellKind:
        """This kind made to resemble `other` (0: unchanged, 1: identical ranges)."""
        blend = {
            name: tuple((1 - closeness) * a + closeness * b for a, b in zip(getattr(self, name), getattr(other, name)))
            for name in self.__dataclass_fields__
        }
        return replace(self, **blend)

    def sample(self, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, angle: np.ndarray | None = None) -> np.ndarray:
        """Nuclei of this kind centred at (x, y) µm, as a NUCLEUS record array."""
        n = len(x)
        cells = np.zeros(n, NUCLEUS)
        cells["x"], cells["y"] = x, y
        for name in ("radius", "elongation", "darkness", "rim", "grain", "halo"):
            low, high = getattr(self, name + "_um" if name == "radius" else name)
            cells[name] = rng.uniform(low, high, n)
        cells["angle"] = rng.uniform(0, np.pi, n) if angle is None else angle
        cells["wobble"] = rng.uniform(*self.wobble, (n, 3)) / np.arange(1, 4)
        cells["wobble_phase"] = rng.uniform(0, 2 * np.pi, (n, 3))
        return cells


LYMPHOCYTE = CellKind(
    radius_um=(3.0, 3.8),
    elongation=(1.0, 1.15),
    wobble=(0.0, 0.04),
    darkness=(1.6, 2.2),
    rim=(0.0, 0.1),
    grain=(0.05, 0.15),
    halo=(0.3, 0.6),
)
TUMOUR = CellKind(
    radius_um=(4.5, 7.0),
    elongation=(1.1, 1.8),
    wobble=(0.05, 0.15),
    darkness=(0.55, 1.0),
    rim=(0.3, 0.6),
    grain=(0.4, 0.7),
    halo=(0.0, 0.1),
)
FIBROBLAST = CellKind(
    radius_um=(2.5, 3.5),
    elongation=(2.5, 4.5),
    wobble=(0.0, 0.08),
    darkness=(1.0, 1.5),
    rim=(0.0, 0.1),
    grain=(0.1, 0.3),
    halo=(0.0, 0.1),
)
# Look-alikes, as large, dark and round as lymphocytes but told apart by fine detail that
# lower resolutions lose: small dense nuclei (plasma cells, tangentially cut tumour nuclei)
# with coarse chromatin and a ragged outline, and apoptotic debris, clusters of dark
# fragments that blur into one round blob.
DENSE_NUCLEUS = CellKind(
    radius_um=(3.0, 4.0),
    elongation=(1.0, 1.25),
    wobble=(0.1, 0.2),
    darkness=(1.5, 2.1),
    rim=(0.0, 0.15),
    grain=(0.8, 1.0),
    halo=(0.3, 0.6),
)
DEBRIS_FRAGMENT = CellKind(
    radius_um=(0.8, 1.6),
    elongation=(1.0, 1.6),
    wobble=(0.1, 0.3),
    darkness=(1.8, 2.6),
    rim=(0.0, 0.0),
    grain=(0.0, 0.1),
    halo=(0.0, 0.3),
)


@dataclass(frozen=True)
class WaveField:
    """A smooth random field of unit variance: a sum of plane waves, defined everywhere."""

    frequency: np.ndarray  # (waves, 2) cycles per µm along x and y
    phase: np.ndarray  # (waves,)

    @classmethod
    def sample(cls, rng: np.random.Generator, scale_um: float, waves: int = 12) -> WaveField:
        angle = rng.uniform(0, 2 * np.pi, waves)
        cycles = rng.uniform(0.5, 1.5, waves) / scale_um
        return cls(np.stack([np.cos(angle), np.sin(angle)], 1) * cycles[:, None], rng.uniform(0, 2 * np.pi, waves))

    def grid(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Values on the grid of x (columns) by y (rows), µm."""
        # cos(a + b) = cos a cos b - sin a sin b turns the sum over waves into two matrix
        # products (einsum: BLAS threads stall on a busy machine for products this small).
        across = 2 * np.pi * np.outer(self.frequency[:, 0], x) + self.phase[:, None]
        down = 2 * np.pi * np.outer(y, self.frequency[:, 1])
        total = np.einsum("yk,kx->yx", np.cos(down), np.cos(across)) - np.einsum("yk,kx->yx", np.sin(down), np.sin(across))
        return cast(np.ndarray, total * np.sqrt(2 / len(self.phase)))

    def at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Values at points (x, y), µm."""
        waves = 2 * np.pi * (np.multiply.outer(x, self.frequency[:, 0]) + np.multiply.outer(y, self.frequency[:, 1]))
        return cast(np.ndarray, np.cos(waves + self.phase).sum(-1) * np.sqrt(2 / len(self.phase)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, 1 / (1 + np.exp(-z)))


@dataclass(frozen=True)
class Texture:
    """The architecture of a piece of tissue: tumour nests, collagen fibres and empty spaces."""

    nests: WaveField  # high: tumour nest; low: stroma
    nest_bias: float
    warp: WaveField  # bends the collagen fibres
    spaces: WaveField  # fat, lumens and tears
    space_level: float
    fibre_angle: float
    fibre_period_um: float

    @classmethod
    def sample(cls, rng: np.random.Generator, nest_bias: float = 0.0) -> Texture:
        """nest_bias: the typical share of tumour (positive: more), varied around."""
        return cls(
            nests=WaveField.sample(rng, 60.0),
            nest_bias=rng.normal(nest_bias, 0.5),
            warp=WaveField.sample(rng, 25.0),
            spaces=WaveField.sample(rng, 40.0),
            space_level=rng.uniform(1.2, 2.5),
            fibre_angle=rng.uniform(0, np.pi),
            fibre_period_um=rng.uniform(3.0, 6.0),
        )

    def tumour_share(self, field: np.ndarray) -> np.ndarray:
        return _sigmoid(3 * (field + self.nest_bias))

    def solidity(self, field: np.ndarray) -> np.ndarray:
        """1 in tissue, 0 in empty spaces, with a soft edge."""
        return np.clip(1 - 3 * (field - self.space_level), 0, 1)

    def fibre_angle_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.fibre_angle + 0.4 * self.warp.at(x, y)

    def cells(self, rng: np.random.Generator, box: tuple[float, float, float, float], lookalikes: float, lookalike: CellKind) -> np.ndarray:
        """Tumour nuclei, fibroblasts, `lookalikes` per 50 × 50 µm (half of them debris) and no
        lymphocytes, centred in box = (x0, y0, x1, y1) µm."""
        x0, y0, x1, y1 = box
        spacing = 12.0  # tumour nuclei pack about this close
        gx, gy = np.meshgrid(np.arange(x0, x1, spacing), np.arange(y0, y1, spacing))
        gx = gx.ravel() + rng.uniform(0, spacing, gx.size)
        gy = gy.ravel() + rng.uniform(0, spacing, gy.size)
        keep = (gx < x1) & (gy < y1) & (rng.random(gx.size) < self.solidity(self.spaces.at(gx, gy)))
        gx, gy = gx[keep], gy[keep]
        tumour = self.tumour_share(self.nests.at(gx, gy))
        draw = rng.random(gx.size)
        in_nest = draw < 0.9 * tumour
        in_stroma = ~in_nest & (draw > 1 - 0.25 * (1 - tumour))
        n_alike = rng.poisson(lookalikes * (x1 - x0) * (y1 - y0) / 50.0**2)
        ax, ay = rng.uniform(x0, x1, n_alike), rng.uniform(y0, y1, n_alike)
        is_debris = rng.random(n_alike) < 0.5
        pieces = rng.integers(3, 7, n_alike) * is_debris
        fx = np.repeat(ax, pieces) + rng.normal(0, 1.5, pieces.sum())
        fy = np.repeat(ay, pieces) + rng.normal(0, 1.5, pieces.sum())
        sx, sy = gx[in_stroma], gy[in_stroma]
        return np.concatenate(
            [
                TUMOUR.sample(rng, gx[in_nest], gy[in_nest]),
                FIBROBLAST.sample(rng, sx, sy, angle=self.fibre_angle_at(sx, sy)),
                lookalike.sample(rng, ax[~is_debris], ay[~is_debris]),
                DEBRIS_FRAGMENT.sample(rng, fx, fy),
            ]
        )


@dataclass(frozen=True)
class Appearance:
    """What differs from slide to slide: stain hue and strength, light, focus and sensor noise."""

    hematoxylin: np.ndarray  # unit optical density vector
    eosin: np.ndarray
    light: np.ndarray  # incident intensity per channel, 0-255
    stroma: float  # eosin concentration of collagen
    cytoplasm: float  # eosin concentration of tumour cytoplasm
    blur_um: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator, variation: float = 1.0, blur_um: tuple[float, float] = (0.3, 0.7)) -> Appearance:
        def stain(vector: np.ndarray, strength: float) -> np.ndarray:
            jittered = np.clip(vector + rng.normal(0, 0.06 * variation, 3), 0.02, None)
            return jittered / np.linalg.norm(jittered) * strength

        return cls(
            hematoxylin=stain(HEMATOXYLIN, rng.uniform(1 - 0.2 * variation, 1 + 0.2 * variation)),
            eosin=stain(EOSIN, rng.uniform(1 - 0.25 * variation, 1 + 0.25 * variation)),
            light=rng.uniform(238, 252) + rng.normal(0, 2, 3),
            stroma=rng.uniform(0.35, 0.6),
            cytoplasm=rng.uniform(0.15, 0.3),
            blur_um=rng.uniform(*blur_um),
            noise=rng.uniform(1.5, 4.0),
        )

    def glass(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """Empty slide glass."""
        return self.finish(rng, np.broadcast_to(self.light, (*shape, 3)))

    def finish(self, rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
        noisy = rgb + rng.normal(0, self.noise, rgb.shape)
        return np.clip(noisy, 0, 255).round().astype(np.uint8)


def _stamp_nuclei(
    nuclei: np.ndarray, origin_um: tuple[float, float], shape: tuple[int, int], mpp: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin of the nuclei and how much they clear the eosin around them, on the pixel grid."""
    stain, clearing = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
    chromatin = ndimage.gaussian_filter(rng.standard_normal(shape, np.float32), 0.3 / mpp)
    chromatin /= chromatin.std() + 1e-9
    semi_major = nuclei["radius"] * np.sqrt(nuclei["elongation"])
    reach = semi_major * (1 + nuclei["wobble"].sum(1)) * np.where(nuclei["halo"] > 0, 1.6, 1.0) / mpp + 1
    col, row = (nuclei["x"] - origin_um[0]) / mpp, (nuclei["y"] - origin_um[1]) / mpp
    near = (col > -reach) & (col < shape[1] + reach) & (row > -reach) & (row < shape[0] + reach)
    # Nuclei are drawn all at once in same-sized windows; grouping by size keeps the windows small.
    half = 4 * np.ceil(reach / 4).astype(int)
    for size in np.unique(half[near]):
        _stamp_group(nuclei[near & (half == size)], size, chromatin, stain, clearing, origin_um, mpp)
    return stain, clearing


def _stamp_group(
    nuclei: np.ndarray,
    half: int,
    chromatin: np.ndarray,
    stain: np.ndarray,
    clearing: np.ndarray,
    origin_um: tuple[float, float],
    mpp: float,
) -> None:
    def per_nucleus(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32)[:, None, None]

    offsets = np.arange(-half, half + 1)
    col = (nuclei["x"] - origin_um[0]) / mpp - 0.5
    row = (nuclei["y"] - origin_um[1]) / mpp - 0.5
    rows = np.floor(row).astype(int)[:, None, None] + offsets[None, :, None]
    cols = np.floor(col).astype(int)[:, None, None] + offsets[None, None, :]
    dx = (cols - per_nucleus(col)).astype(np.float32) * mpp
    dy = (rows - per_nucleus(row)).astype(np.float32) * mpp
    # Position in the nucleus' own frame, scaled so that the ellipse is the unit circle.
    cos, sin = per_nucleus(np.cos(nuclei["angle"])), per_nucleus(np.sin(nuclei["angle"]))
    along = (dx * cos + dy * sin) / per_nucleus(nuclei["radius"] * np.sqrt(nuclei["elongation"]))
    across = (dy * cos - dx * sin) / per_nucleus(nuclei["radius"] / np.sqrt(nuclei["elongation"]))
    radius = np.maximum(np.hypot(along, across), 1e-6)
    # Boundary 1 + sum_k a_k cos(k·theta + phi_k), k = 2, 3, 4, with cos and sin of k·theta
    # by angle addition (no trigonometry per pixel).
    cos_1, sin_1 = along / radius, across / radius
    cos_k, sin_k = cos_1, sin_1
    boundary = np.ones_like(radius)
    for harmonic in range(3):
        cos_k, sin_k = cos_k * cos_1 - sin_k * sin_1, sin_k * cos_1 + cos_k * sin_1
        phase = nuclei["wobble_phase"][:, harmonic]
        wave = cos_k * per_nucleus(np.cos(phase)) - sin_k * per_nucleus(np.sin(phase))
        boundary += per_nucleus(nuclei["wobble"][:, harmonic]) * wave
    distance = radius / boundary  # 1 on the nuclear membrane
    inside = np.clip((1 - distance) / per_nucleus(mpp / nuclei["radius"]) + 0.5, 0, 1)

    visible = (rows >= 0) & (rows < stain.shape[0]) & (cols >= 0) & (cols < stain.shape[1])
    visible = np.broadcast_to(visible, distance.shape)
    flat = np.broadcast_to(rows * stain.shape[1] + cols, distance.shape)[visible]
    profile = 1 - per_nucleus(nuclei["rim"]) * np.clip(1 - distance**2, 0, 1)
    grain = np.broadcast_to(per_nucleus(nuclei["grain"]), distance.shape)[visible]
    nucleus_stain = (per_nucleus(nuclei["darkness"]) * inside * profile)[visible]
    nucleus_stain *= np.clip(1 + grain * chromatin.ravel()[flat], 0.2, None)
    halo = per_nucleus(nuclei["halo"]) * np.clip((1.6 - distance) / 0.6, 0, 1)
    np.maximum.at(stain.ravel(), flat, nucleus_stain)
    np.maximum.at(clearing.ravel(), flat, np.maximum(0.8 * inside, halo)[visible])


def render(
    appearance: Appearance,
    texture: Texture,
    nuclei: np.ndarray,
    rng: np.random.Generator,
    *,
    origin_um: tuple[float, float],
    shape: tuple[int, int],
    mpp: float,
    tissue: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8 image of `shape` pixels at `mpp` µm/px whose top-left corner lies at origin_um.

    tissue: optional 0-1 map of where there is tissue at all (glass elsewhere); nuclei are
    drawn wherever they are placed.
    """
    x = origin_um[0] + (np.arange(shape[1]) + 0.5) * mpp
    y = origin_um[1] + (np.arange(shape[0]) + 0.5) * mpp
    tumour = texture.tumour_share(texture.nests.grid(x, y))
    along_fibres = x[None, :] * np.cos(texture.fibre_angle) + y[:, None] * np.sin(texture.fibre_angle)
    fibres = 0.5 + 0.5 * np.sin(2 * np.pi * along_fibres / texture.fibre_period_um + 2.5 * texture.warp.grid(x, y))
    eosin = appearance.stroma * (1 - tumour) * (0.65 + 0.35 * fibres) + appearance.cytoplasm * tumour
    hematoxylin = 0.05 + 0.1 * tumour
    solid = texture.solidity(texture.spaces.grid(x, y))
    if tissue is not None:
        solid = solid * tissue
    nucleus_stain, clearing = _stamp_nuclei(nuclei, origin_um, shape, mpp, rng)
    eosin = eosin * solid * (1 - clearing)
    hematoxylin = hematoxylin * solid + nucleus_stain
    density = hematoxylin[..., None] * appearance.hematoxylin + eosin[..., None] * appearance.eosin
    rgb = appearance.light * np.exp(-density)
    rgb = ndimage.gaussian_filter(rgb, (appearance.blur_um / mpp,) * 2 + (0,), mode="nearest")
    return appearance.finish(rng, rgb)
