"""The procedural video built-ins: objects moving at constant velocity and bouncing off the walls.

  moving-shapes  genlab's shapes (data/builtin.py) in RGB on a dark gradient; label = the shape, or with
                 data.motion_label the shape and the quadrant of its initial direction (4 x 4 classes)
  moving-digits  the bouncing digits of Moving MNIST (Srivastava et al. 2015), grey, composited by maximum; from
                 scikit-learn's 8x8 digits scaled to 16x16 (32x32 canvas by default) or MNIST's 28x28 (64x64)

Each clip holds data.objects (1 or 2) objects of one class, so its label is well defined. A position follows
p(t) = reflect(p0 + v t) inside [lo, hi]: the closed form of a bounce, so every frame is exact and the same seed
gives the same clips. The object centres are kept (VideoDataset.tracks): the motion metrics check their own
tracker against them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from genlab.data.builtin import SHAPES, backgrounds, bright_colours, shape_coverage
from genlab.data.videos import VideoDataset, check_clips
from genlab.errors import DataError

DIRECTIONS = ["up-left", "up-right", "down-left", "down-right"]   # the quadrant of the initial velocity (y down)
SPEED = (0.06, 0.12)   # pixels per frame, as a share of the canvas side: 1.9-3.8 px a frame on 32x32


def bounce(p0: np.ndarray, v: np.ndarray, t: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Positions at times t of points starting at p0 with velocity v, reflected off lo and hi: (..., T)."""
    span = (hi - lo)[..., None]
    u = np.mod(p0[..., None] - lo[..., None] + v[..., None] * t, 2 * span)
    return lo[..., None] + np.where(u <= span, u, 2 * span - u)


def _motion(rng: np.random.Generator, n: int, objects: int, frames: int, size: int, margin: np.ndarray,
            quadrant: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, objects, frames) in x and y for objects kept `margin` (n, objects) pixels inside the canvas;
    the first object's direction lies in `quadrant` (n,) when given (20-70 degrees off the axes)."""
    theta = rng.uniform(0, 2 * math.pi, (n, objects))
    if quadrant is not None:
        off = np.radians(rng.uniform(20, 70, n))
        right, down = quadrant % 2 == 1, quadrant >= 2
        theta[:, 0] = np.where(right, off, math.pi - off) * np.where(down, 1, -1)   # y grows downwards
    speed = rng.uniform(*SPEED, (n, objects)) * size
    lo, hi = margin, size - margin
    x0, y0 = rng.uniform(lo, hi), rng.uniform(lo, hi)
    t = np.arange(frames, dtype=np.float64)
    return (bounce(x0, speed * np.cos(theta), t, lo, hi).astype(np.float32),
            bounce(y0, speed * np.sin(theta), t, lo, hi).astype(np.float32))


def _counts(cfg, default_size: int) -> tuple[int, int, int, int]:
    if cfg.objects not in (1, 2):
        raise DataError(f"data.objects={cfg.objects}; the built-in clips hold 1 or 2 objects")
    if cfg.count < 1:
        raise DataError(f"data.count={cfg.count}; expected a positive number of clips to draw")
    size = cfg.image_size or default_size
    if size < 16:
        raise DataError(f"data.image_size={size}; the moving built-ins need frames of at least 16x16")
    return cfg.count, cfg.frames + cfg.crop_frames, size, cfg.objects


def moving_shapes(cfg) -> VideoDataset:
    """data.count clips of data.frames (+ crop_frames) RGB frames; classes balanced."""
    n, frames, size, objects = _counts(cfg, 32)
    check_clips(n, frames, 3, size, cfg.memory_budget_gb, "moving-shapes")
    rng = np.random.default_rng(cfg.seed)
    kinds = len(SHAPES) * (len(DIRECTIONS) if cfg.motion_label else 1)
    labels = rng.permutation(np.arange(n) % kinds)
    shape, quadrant = (labels // len(DIRECTIONS), labels % len(DIRECTIONS)) if cfg.motion_label else (labels, None)
    radius = (rng.uniform(0.16, 0.26, (n, objects)) * size).astype(np.float32)
    angle = np.where(shape[:, None] >= 2, rng.uniform(0, 2 * math.pi, (n, objects)), 0).astype(np.float32)
    xs, ys = _motion(rng, n, objects, frames, size, 0.9 * radius, quadrant)
    fill = bright_colours(rng, n * objects).astype(np.float32).reshape(n, objects, 3, 1, 1)
    background = backgrounds(rng, n, size)
    clips = np.empty((n, frames, 3, size, size), np.uint8)
    for f in range(frames):
        frame = background.copy()
        for o in range(objects):   # the second object passes in front of the first
            cover = shape_coverage(shape, xs[:, o, f], ys[:, o, f], radius[:, o], angle[:, o], size)[:, None]
            frame += (fill[:, o] - frame) * cover
        clips[:, f] = np.round(frame * 255)
    names = [f"{s}/{d}" for s in SHAPES for d in DIRECTIONS] if cfg.motion_label else list(SHAPES)
    tracks = np.stack([xs, ys], -1).transpose(0, 2, 1, 3)   # (n, frames, objects, 2)
    return VideoDataset(torch.from_numpy(clips), torch.from_numpy(labels.astype(np.int64)), names, cfg.fps,
                        "moving-shapes", f"procedural moving shapes (count={n}, frames={frames}, size={size}, "
                        f"objects={objects}, seed={cfg.seed})", tracks=torch.from_numpy(np.ascontiguousarray(tracks)))


def _glyphs(source: str, budget_gb: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Digit images in [0, 1] (N, g, g), their labels, and g: scikit-learn's scaled to 16x16, or MNIST's."""
    from genlab.data.builtin import cached, digits   # digits imports scikit-learn (slow): only when asked

    if source == "digits":
        ds = digits()
        images = torch.nn.functional.interpolate((ds.images + 1) / 2, size=16, mode="bilinear", align_corners=False)
    elif source == "mnist":
        ds = cached("mnist", budget_gb)
        images = (ds.images + 1) / 2
    else:
        raise DataError(f"data.source_digits={source!r}; expected digits (built in) or mnist (genlab data fetch mnist)")
    return images[:, 0].clamp(0, 1), ds.labels, images.shape[-1]


def moving_digits(cfg) -> VideoDataset:
    """data.count clips of data.frames (+ crop_frames) grey frames; classes balanced, glyphs drawn at random."""
    default = 64 if cfg.source_digits == "mnist" else 32
    n, frames, size, objects = _counts(cfg, default)
    check_clips(n, frames, 1, size, cfg.memory_budget_gb, "moving-digits")
    glyphs, glyph_labels, g = _glyphs(cfg.source_digits, cfg.memory_budget_gb)
    if size < g + 4:
        raise DataError(f"data.image_size={size}: a {g}x{g} digit needs a canvas of at least {g + 4}")
    rng = np.random.default_rng(cfg.seed)
    labels = rng.permutation(np.arange(n) % 10)
    by_class = [np.flatnonzero(glyph_labels.numpy() == k) for k in range(10)]
    if missing := [k for k in range(10) if not len(by_class[k])]:
        raise DataError(f"data.source_digits={cfg.source_digits}: holds no image of digit(s) "
                        f"{', '.join(map(str, missing))}; expected every digit 0-9")
    pick = np.stack([rng.choice(by_class[k], objects) for k in labels])                       # (n, objects)
    half = np.full((n, objects), g / 2, np.float32)
    xs, ys = _motion(rng, n, objects, frames, size, half, None)
    canvas = torch.zeros(n * frames, size * size)
    offsets = torch.arange(g)
    for o in range(objects):   # paste each glyph at its rounded top-left corner, combining by maximum
        left = torch.from_numpy(np.round(xs[:, o] - g / 2).astype(np.int64)).clamp(0, size - g).reshape(-1)
        top = torch.from_numpy(np.round(ys[:, o] - g / 2).astype(np.int64)).clamp(0, size - g).reshape(-1)
        index = ((top[:, None, None] + offsets[:, None]) * size + left[:, None, None] + offsets).reshape(n * frames, -1)
        glyph = glyphs[torch.from_numpy(pick[:, o])].repeat_interleave(frames, 0).reshape(n * frames, -1)
        canvas.scatter_reduce_(1, index, glyph, reduce="amax")
    clips = (canvas.reshape(n, frames, 1, size, size) * 255).round().to(torch.uint8)
    tracks = np.stack([xs, ys], -1).transpose(0, 2, 1, 3)
    return VideoDataset(clips, torch.from_numpy(labels.astype(np.int64)), [str(k) for k in range(10)], cfg.fps,
                        "moving-digits", f"bouncing {cfg.source_digits} (count={n}, frames={frames}, size={size}, "
                        f"objects={objects}, seed={cfg.seed})", tracks=torch.from_numpy(np.ascontiguousarray(tracks)))


BUILTINS = {"moving-shapes": moving_shapes, "moving-digits": moving_digits}
