"""An MNIST-shaped stand-in built offline: 28x28 grey digits typed in the fonts matplotlib ships, distorted.

    python benchmarks/typed_digits.py OUT.npz [--count 60000] [--seed 0]

MNIST itself cannot be downloaded here, and the built-in 8x8 digits resized to 28x28 are only 1,797 blurred images.
This draws `count` digits (balanced classes) in the DejaVu, STIX and Computer Modern fonts inside the matplotlib
wheel, each at a random size, weight (stroke), rotation and shear, then bends them with an elastic distortion
(Simard et al. 2003) so that no two 4s are the same glyph. Each image is placed as MNIST's were: the digit fitted to a
20x20 box, then centred by its centre of mass in 28x28. The result is an .npz (`images` uint8 (N, 28, 28), `labels`,
`classes`) that every benchmark taking `--datasets PATH` reads. It is typed, not handwritten: a harder test than
the 8x8 set of how a family handles 60,000 varied images, not a replacement for MNIST's figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FONTS = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
         "DejaVuSerif-Italic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
         "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf"]


def glyph(digit: int, font: ImageFont.FreeTypeFont, stroke: int, angle: float, shear: float) -> np.ndarray:
    """One digit on a 64x64 canvas, rotated and sheared, as float32 ink in [0, 1]."""
    canvas = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(canvas).text((32, 32), str(digit), fill=255, font=font, anchor="mm", stroke_width=stroke,
                                stroke_fill=255)
    canvas = canvas.transform((64, 64), Image.Transform.AFFINE, (1, shear, -32 * shear, 0, 1, 0),
                              resample=Image.Resampling.BILINEAR)
    return np.asarray(canvas.rotate(angle, resample=Image.Resampling.BILINEAR), np.float32) / 255.0


def mnist_box(ink: np.ndarray) -> np.ndarray:
    """MNIST's placement: the ink's bounding box scaled to fit 20x20 (aspect kept), centred by mass in 28x28."""
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = 20.0 / max(crop.shape)
    h, w = max(1, round(crop.shape[0] * scale)), max(1, round(crop.shape[1] * scale))
    small = np.asarray(Image.fromarray(crop).resize((w, h), Image.Resampling.LANCZOS), np.float32).clip(0, 1)
    out = np.zeros((28, 28), np.float32)
    cy, cx = ndimage.center_of_mass(small)
    top, left = int(round(14 - cy)), int(round(14 - cx))
    top, left = min(max(top, 0), 28 - h), min(max(left, 0), 28 - w)
    out[top:top + h, left:left + w] = small
    return out


def elastic(images: np.ndarray, rng: np.random.Generator, shift: float = 1.5, sigma: float = 4.0) -> np.ndarray:
    """Simard et al.'s elastic distortion, all images at once: a random displacement field per image, smoothed
    by a Gaussian of `sigma` pixels and scaled to `shift` pixels root-mean-square."""
    n, h, w = images.shape
    field = ndimage.gaussian_filter(rng.uniform(-1, 1, (2, n, h, w)), sigma=(0, 0, sigma, sigma))
    field *= shift / field.std()
    i, y, x = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    return ndimage.map_coordinates(images, [i, y + field[0], x + field[1]], order=1, mode="constant")


def typed_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 28, 28) uint8 images and (count,) labels, the same for the same seed."""
    rng = np.random.default_rng(seed)
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = [[ImageFont.truetype(str(folder / name), size) for size in (30, 36, 42)] for name in FONTS]
    labels = rng.permutation(np.arange(count) % 10)
    images = np.empty((count, 28, 28), np.float32)
    for k, digit in enumerate(labels):
        font = fonts[rng.integers(len(fonts))][rng.integers(3)]
        ink = glyph(int(digit), font, int(rng.integers(0, 3)), rng.uniform(-15, 15), rng.uniform(-0.3, 0.3))
        images[k] = mnist_box(ink)
    images = elastic(images, rng)
    return (images.clip(0, 1) * 255).round().astype(np.uint8), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the .npz to write")
    parser.add_argument("--count", type=int, default=60000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    images, labels = typed_digits(args.count, args.seed)
    np.savez_compressed(args.out, images=images, labels=labels, classes=np.array([str(d) for d in range(10)]))
    print(f"wrote {args.out}: {len(images)} images, 28x28, 10 classes")


if __name__ == "__main__":
    main()
