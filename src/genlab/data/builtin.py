"""Built-in datasets: scikit-learn's digits, procedural shapes, and MNIST / Fashion-MNIST from the cache."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from genlab.data.fetch import dataset_dir, is_fetched
from genlab.data.images import ImageDataset, check_memory
from genlab.data.readers import BUDGET_GB, read_idx_folder
from genlab.errors import DataError

if TYPE_CHECKING:
    from genlab.config import DataConfig

BUILTINS = {
    "digits": "scikit-learn's bundled handwritten digits: 1797 grey 8x8 images, 10 classes, no download",
    "shapes": "procedural RGB 32x32 circles, squares, triangles and stars (data.count images, seeded)",
    "mnist": "MNIST handwritten digits: 70000 grey 28x28 images, 10 classes (genlab data fetch mnist)",
    "fashion-mnist": "Zalando clothing: 70000 grey 28x28 images, 10 classes (genlab data fetch fashion-mnist)",
}

SHAPES = ["circle", "square", "triangle", "star"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def load_builtin(cfg: DataConfig) -> ImageDataset:
    """The built-in dataset `cfg.name` at its native size, in [-1, 1]."""
    if cfg.name == "digits":
        return digits()
    if cfg.name == "shapes":
        return shapes(cfg.count, cfg.seed, budget_gb=cfg.memory_budget_gb)
    return cached(cfg.name, cfg.memory_budget_gb)


def digits() -> ImageDataset:
    """scikit-learn's 1797 8x8 digits (values 0..16) as (N, 1, 8, 8) in [-1, 1]."""
    from sklearn.datasets import load_digits  # imported lazily: scikit-learn takes ~1 s to import

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32)).div_(8.0).sub_(1.0).unsqueeze(1)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    return ImageDataset(images, labels, [str(i) for i in range(10)], "digits", "sklearn.datasets.load_digits")


def cached(name: str, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """MNIST or Fashion-MNIST from the folder `genlab data fetch` downloads into."""
    folder = dataset_dir(name)
    if not is_fetched(name):
        raise DataError(f"{name} is not downloaded yet (looked in {folder}); run `genlab data fetch {name}` "
                        "first, or set GENLAB_CACHE to the cache that holds it")
    ds = read_idx_folder(folder, budget_gb)
    classes = FASHION_CLASSES if name == "fashion-mnist" else ds.classes
    return ImageDataset(ds.images, ds.labels, classes, name, str(folder))


# ---------------------------------------------------------------------------------------------
# Procedural shapes, drawn for all images at once with numpy: each shape is a signed distance
# (positive inside, in pixels), and a pixel's coverage is clip(0.5 + distance, 0, 1), which
# antialiases the edges by about one pixel.

def shapes(count: int = 6000, seed: int = 0, size: int = 32, budget_gb: float = BUDGET_GB) -> ImageDataset:
    """`count` RGB images of circles, squares, triangles and stars; the same seed gives the same tensors.

    Classes are balanced (label = index into SHAPES). Fill colours are bright and saturated, backgrounds
    dark with a gentle gradient; sizes and positions vary, and triangles and stars are rotated.
    """
    if count < 1:
        raise DataError(f"data.count={count}; expected a positive number of shapes to draw")
    # Drawing peaks at about 13 float32 values per pixel (images, distances, coverage, ramp; tracemalloc).
    check_memory(count * size * size * 4 * 13, budget_gb, "shapes", f"drawing data.count={count} images")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(SHAPES))
    # float32 throughout: half the memory traffic of float64, and plenty for pixel geometry.
    radius = (rng.uniform(0.22, 0.42, count) * size).astype(np.float32)  # circumradius, pixels
    margin = radius * 0.9                                                 # keep most of each shape in view
    cx = rng.uniform(margin, size - margin).astype(np.float32)
    cy = rng.uniform(margin, size - margin).astype(np.float32)
    angle = np.where(labels >= 2, rng.uniform(0, 2 * np.pi, count), 0.0).astype(np.float32)  # triangles, stars
    coverage = shape_coverage(labels, cx, cy, radius, angle, size)[:, None]       # (N, 1, H, W)
    fill = bright_colours(rng, count).astype(np.float32)[:, :, None, None]          # (N, 3, 1, 1)
    images = backgrounds(rng, count, size)
    images += (fill - images) * coverage                     # blend in the shape: (N, 3, H, W) in [0, 1]
    images = torch.from_numpy(images).mul_(2.0).sub_(1.0)
    return ImageDataset(images, torch.from_numpy(labels), list(SHAPES), "shapes",
                        f"procedural shapes (count={count}, seed={seed})")


def shape_coverage(labels: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray,
                   size: int) -> np.ndarray:
    """(N, size, size) float32 coverage in [0, 1] of shape `labels[i]` (an index into SHAPES) centred at
    (cx[i], cy[i]) pixels with circumradius radius[i], rotated by angle[i] radians."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5   # pixel centres, (size, size)
    dist = np.empty((len(labels), size, size), np.float32)
    for k, shape in enumerate(SHAPES):
        i = np.flatnonzero(labels == k)
        # Pixel offsets from each centre, rotated into the shape's frame: (n, size, size).
        dx, dy = xs - cx[i, None, None], ys - cy[i, None, None]
        cos, sin = np.cos(angle[i])[:, None, None], np.sin(angle[i])[:, None, None]
        u, v = dx * cos + dy * sin, dy * cos - dx * sin
        r = radius[i, None, None]
        if shape == "circle":
            dist[i] = r - np.hypot(u, v)
        elif shape == "square":
            dist[i] = 0.75 * r - np.maximum(abs(u), abs(v))  # half side 0.75 r: about a circle's area
        elif shape == "triangle":
            dist[i] = _polygon(u, v, r, 3)
        else:
            dist[i] = _star(u, v, r, 5)
    return np.clip(0.5 + dist, 0.0, 1.0)


def backgrounds(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """(N, 3, size, size) float32 dark backgrounds in [0, 1] with a gentle gradient."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    base = rng.uniform(0.0, 0.25, (count, 3)).astype(np.float32)[:, :, None, None]
    tilt = (rng.uniform(-0.1, 0.1, (count, 2)) / size).astype(np.float32)            # per pixel, x and y
    ramp = tilt[:, 0, None, None] * (xs - size / 2) + tilt[:, 1, None, None] * (ys - size / 2)
    return np.clip(base + ramp[:, None], 0.0, 1.0)


def _polygon(u: np.ndarray, v: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """Signed distance inside a regular n-gon of circumradius r, one vertex pointing up (-v)."""
    apothem = r * math.cos(math.pi / n)
    # Inside iff the point is within the apothem along every edge normal; edge normals sit halfway
    # between vertices, so with a vertex at -90 degrees they are at -90 + 180/n + k * 360/n.
    normals = [-math.pi / 2 + math.pi / n + 2 * math.pi * k / n for k in range(n)]
    return apothem - np.max([u * math.cos(a) + v * math.sin(a) for a in normals], axis=0)


def _star(u: np.ndarray, v: np.ndarray, r: np.ndarray, points: int) -> np.ndarray:
    """Signed distance (approximate outside) inside a star with `points` tips at radius r, inner radius 0.45 r."""
    sector = 2 * math.pi / points
    phi = np.mod(np.arctan2(v, u), sector)
    phi = np.minimum(phi, sector - phi)             # fold by symmetry: 0 = at a tip, sector/2 = between tips
    rho = np.hypot(u, v)
    px, py = rho * np.cos(phi), rho * np.sin(phi)
    # Edge from the tip (r, 0) to the inner corner q; the distance to its line is positive on the centre's side.
    qx, qy = 0.45 * r * math.cos(sector / 2), 0.45 * r * math.sin(sector / 2)
    ex, ey = qx - r, qy
    return (ex * py - ey * (px - r)) / np.hypot(ex, ey)


def bright_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) saturated, bright RGB colours in [0, 1] from random hues (HSV with S, V high)."""
    hue = rng.uniform(0, 6, n)
    sat, val = rng.uniform(0.6, 1.0, n), rng.uniform(0.75, 1.0, n)
    # HSV -> RGB: each channel's distance from its hue sector gives its share of the value.
    k = np.mod(np.array([5.0, 3.0, 1.0]) + hue[:, None], 6)
    return val[:, None] * (1 - sat[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))
