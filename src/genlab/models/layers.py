"""Layers shared by more than one family (DESIGN.md: only what two families really use)."""

from __future__ import annotations

import torch
from torch import nn


def n_downsamples(image_size: int, smallest: int = 4) -> int:
    """How many stride-2 halvings take `image_size` down to `smallest` (stopping at an odd size)."""
    n, s = 0, image_size
    while s % 2 == 0 and s > smallest:
        s //= 2
        n += 1
    return n


def norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups: batch-size independent, so train and eval behave alike."""
    return nn.GroupNorm(min(8, channels), channels)


class ConvEncoder(nn.Module):
    """(N, C, H, W) -> (N, width * 2**k, H / 2**k, W / 2**k), halving until the map is 4x4 (or odd)."""

    def __init__(self, in_channels: int, image_size: int, width: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), norm(width), nn.SiLU()]
        c = width
        for _ in range(n_downsamples(image_size)):
            layers += [nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), norm(2 * c), nn.SiLU(),
                       nn.Conv2d(2 * c, 2 * c, 3, padding=1), norm(2 * c), nn.SiLU()]
            c *= 2
        self.net = nn.Sequential(*layers)
        self.out_channels = c
        self.out_size = image_size // 2 ** n_downsamples(image_size)

    @property
    def out_features(self) -> int:
        return self.out_channels * self.out_size ** 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """Mirror of ConvEncoder: a vector (N, in_features) -> image logits (N, out_channels, H, W)."""

    def __init__(self, in_features: int, out_channels: int, image_size: int, width: int):
        super().__init__()
        k = n_downsamples(image_size)
        c = width * 2 ** k
        self.start = (c, image_size // 2 ** k)
        self.fc = nn.Linear(in_features, c * self.start[1] ** 2)
        layers: list[nn.Module] = [norm(c), nn.SiLU()]
        for _ in range(k):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c // 2, 3, padding=1),
                       norm(c // 2), nn.SiLU(), nn.Conv2d(c // 2, c // 2, 3, padding=1), norm(c // 2), nn.SiLU()]
            c //= 2
        layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        c, s = self.start
        return self.net(self.fc(h).view(-1, c, s, s))
