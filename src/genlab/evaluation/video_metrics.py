"""Temporal metrics of clips (N, F, C, H, W) in [-1, 1], judge-free:

- frame-to-frame change: the mean absolute change of each pair of consecutive frames; a generator's clips should
  change as much as real ones (0: a still picture; large: flicker). Compared as the Wasserstein-1 distance
  between the two distributions of per-pair change (scipy.stats.wasserstein_distance).
- straight-and-bounce plausibility, for clips of one object on a background that does not move (the built-in
  moving-shapes and moving-digits): the object is tracked by the centroid of the pixels that differ from the
  clip's median frame, and a clip is plausible when the object is found in every frame, moves, and its speed
  along each axis stays the same from frame to frame (a bounce flips the sign; the frame of a bounce may break
  it, so at most MAX_BREAKS such frames are allowed).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance

FOREGROUND = 0.25       # a pixel differs from the median frame by more than this (in [-1, 1] units): object
SPEED_TOLERANCE = 1.5   # pixels a frame: allowed change of |velocity| per axis between steps (tracking noise)
MIN_SPEED = 0.5         # pixels a frame: a slower object does not count as moving
WALL_TOLERANCE = 2.0    # pixels: a turn counts as a bounce within this distance of the track's extremes


def frame_change(clips: torch.Tensor) -> np.ndarray:
    """(N, F - 1) mean absolute change between consecutive frames."""
    x = clips.float()
    return (x[:, 1:] - x[:, :-1]).abs().mean(dim=(2, 3, 4)).double().numpy()


def change_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Wasserstein-1 distance between the per-pair frame changes of clip sets a and b."""
    return float(wasserstein_distance(frame_change(a).ravel(), frame_change(b).ravel()))


def _centroids(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted centroids (N, F, 2) of masks (N, F, H, W), and their mass (N, F)."""
    h, w = weight.shape[-2:]
    mass = weight.sum(dim=(2, 3))
    cx = (weight.sum(2) * torch.arange(w, dtype=torch.float32)).sum(2) / mass.clamp_min(1)
    cy = (weight.sum(3) * torch.arange(h, dtype=torch.float32)).sum(2) / mass.clamp_min(1)
    return torch.stack([cx, cy], -1), mass


def track(clips: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (N, F, 2) in pixels (x, y) of the moving object, and (N, F) whether one was found.

    Two passes: the foreground is what differs from the clip's median frame; then the background of each pixel is
    re-estimated from the frames where the object found in the first pass is far from it (where an object lingers,
    the plain median is the object itself), and the foreground found again."""
    x = clips.float()
    n, f, c, h, w = x.shape

    def foreground(background):
        return ((x - background).abs().amax(dim=2) > FOREGROUND).float()          # (N, F, H, W)

    weight = foreground(x.median(dim=1, keepdim=True).values)
    centre, mass = _centroids(weight)
    radius = 1.5 * (mass / torch.pi).sqrt() + 1                                   # (N, F): beyond the object
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    far = ((xx - centre[..., 0, None, None]) ** 2 + (yy - centre[..., 1, None, None]) ** 2
           > radius[..., None, None] ** 2)                                         # (N, F, H, W)
    free = torch.where(far[:, :, None], x, torch.nan).nanmedian(dim=1, keepdim=True).values
    background = torch.where(torch.isnan(free), x.median(dim=1, keepdim=True).values, free)
    centre, mass = _centroids(foreground(background))
    return centre.numpy(), (mass > 0).numpy()


def _same_wall_twice(turn: np.ndarray, near_lo: np.ndarray, near_hi: np.ndarray) -> np.ndarray:
    """(N,) whether an object turns at the same wall twice in a row along an axis (impossible for a bounce: it
    must cross to the other wall first). A turn near both walls (a short track) is taken as either."""
    bad = np.zeros(len(turn), bool)
    for i, a in zip(*np.nonzero(turn.any(1))):
        walls = [("lo" if lo and not hi else "hi" if hi and not lo else None)
                 for lo, hi in zip(near_lo[i, turn[i, :, a], a], near_hi[i, turn[i, :, a], a])]
        bad[i] |= any(w is not None and w == w_next for w, w_next in zip(walls, walls[1:]))
    return bad


def plausible(clips: torch.Tensor, centres: np.ndarray | None = None) -> np.ndarray:
    """(N,) whether each clip's object moves on a straight-and-bounce path: found in every frame and moving; along
    each axis it turns only at the walls (the extremes of its own track, within WALL_TOLERANCE) and, away from the
    turns, keeps its speed (within SPEED_TOLERANCE of the axis's median speed). `centres`: positions (N, F, 2) to
    test instead of tracking them (the built-ins' true tracks)."""
    found = np.ones(clips.shape[:2], bool)
    if centres is None:
        centres, found = track(clips)
    v = np.diff(centres, axis=1)                                                  # (N, F - 1, 2)
    speed = np.abs(v)
    typical = np.median(speed, axis=1, keepdims=True)                             # (N, 1, 2)
    sign = np.sign(v)
    turn = (sign[:, 1:] != sign[:, :-1]) & (typical > SPEED_TOLERANCE)   # turns at frames 1..F-2 (of axes that move)
    p = centres[:, 1:-1]
    lo, hi = centres.min(1, keepdims=True), centres.max(1, keepdims=True)
    reach = WALL_TOLERANCE + typical                                            # a bounce between frames
    at_wall = (p - lo <= reach) | (hi - p <= reach)
    bad_turn = (turn & ~at_wall).any(axis=(1, 2)) | _same_wall_twice(turn, p - lo <= reach, hi - p <= reach)
    near_turn = np.zeros_like(speed, bool)          # the two steps around a turn, and the first and last steps
    near_turn[:, 1:] |= turn                        # (a bounce whose turn lies outside the clip)
    near_turn[:, :-1] |= turn
    near_turn[:, [0, -1]] = True
    off_speed = ((np.abs(speed - typical) > SPEED_TOLERANCE) & ~near_turn).any(axis=(1, 2))
    moving = np.linalg.norm(v, axis=-1).mean(1) > MIN_SPEED
    return found.all(1) & moving & ~bad_turn & ~off_speed
