"""`videoclf`: a (2+1)-D convolutional classifier of clips (Tran et al. 2018, "A Closer Look at Spatiotemporal
Convolutions": each 3-D convolution factorised into a spatial 1x3x3 and a temporal 3x1x1 one), the video judge.

It learns two things at once, so that its features see both what is in a clip and how it moves:
  - the clip's label (the shape, the digit; and, for moving-shapes with data.motion_label, its direction);
  - the motion: whether the clip's frames are in their order or shuffled (half of each batch is shuffled).
A judge trained on labels alone could be fooled by frames that are each right but do not move; this one cannot.
`features` (post-ReLU, feature_dim) is the space of judge-FVD and the other judged metrics; `predict` gives the
label's probabilities and `order_probs` the probability that a clip's frames are in order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UsageError
from genlab.models.base import Model
from genlab.models.layers import norm


@dataclass
class VideoClfConfig:
    family: str = "videoclf"
    in_channels: int = 3      # set from the data
    image_size: int = 32      # set from the data
    frames: int = 16          # set from the data
    num_classes: int = 4      # set from the data (the judge always trains on labels)
    width: int = 16
    feature_dim: int = 128    # penultimate layer: the video judge's feature space
    dropout: float = 0.2
    p_shuffle: float = 0.5    # share of training clips whose frames are shuffled (the motion task)


PRESETS = {
    "tiny": {"model.width": 8, "train.steps": 300, "train.batch_size": 32},
    "small": {"model.width": 16, "train.steps": 1200, "train.batch_size": 32},
    "base": {"model.width": 32, "train.steps": 4000, "train.batch_size": 64},
}


class Conv2Plus1D(nn.Sequential):
    """A spatial 1x3x3 convolution, then a temporal 3x1x1 one, each followed by GroupNorm and ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1)), norm(cout), nn.ReLU(),
                         nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0)), norm(cout), nn.ReLU())


class VideoClf(Model):
    """Clips (B, F, C, H, W) in [-1, 1] -> three (2+1)-D stages (each halving time and space while they are at
    least 2) -> global average -> feature_dim features -> label logits and order logits."""

    family = "videoclf"

    def __init__(self, config: VideoClfConfig):
        c = config
        if c.num_classes < 2 or c.frames < 2 or c.width < 8 or c.width % 8:
            raise UsageError(f"videoclf needs at least 2 classes, 2 frames and a width that is a multiple of 8; got "
                             f"num_classes={c.num_classes}, frames={c.frames}, width={c.width}")
        super().__init__(config)
        stages, ch, f, s = [], c.in_channels, c.frames, c.image_size
        for mult in (1, 2, 4):
            stages += [Conv2Plus1D(ch, c.width * mult), nn.MaxPool3d((2 if f >= 2 else 1, 2 if s >= 2 else 1,
                                                                      2 if s >= 2 else 1))]
            ch, f, s = c.width * mult, max(1, f // 2), max(1, s // 2)
        self.encoder = nn.Sequential(*stages)
        self.fc = nn.Linear(ch, c.feature_dim)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.feature_dim, c.num_classes)
        self.order = nn.Linear(c.feature_dim, 2)   # 0: frames in order, 1: shuffled

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, F, C, H, W) -> post-ReLU features (B, feature_dim)."""
        h = self.encoder(x.transpose(1, 2))                 # Conv3d wants (B, C, F, H, W)
        return F.relu(self.fc(h.mean(dim=(2, 3, 4))))

    def loss(self, batch: dict) -> dict:
        x, y = batch["x"], batch.get("y")
        if y is None:
            raise UsageError("videoclf trains on labelled clips; this dataset has no labels")
        shuffled = torch.rand(len(x), device=x.device) < self.config.p_shuffle
        x = torch.where(shuffled[:, None, None, None, None], shuffle_frames(x), x)
        h = self.drop(self.features(x))
        logits, order = self.out(h), self.order(h)
        target = shuffled.long()
        loss = F.cross_entropy(logits.float(), y) + F.cross_entropy(order.float(), target)
        return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean().detach(),
                "order_acc": (order.argmax(1) == target).float().mean().detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Label probabilities (B, num_classes)."""
        return F.softmax(self.out(self.features(x)).float(), dim=1)

    @torch.no_grad()
    def order_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The probability (B,) that each clip's frames are in their order."""
        return F.softmax(self.order(self.features(x)).float(), dim=1)[:, 0]


def shuffle_frames(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each clip's frames (B, F, ...) in its own random order, never the identity (a cyclic shift when a draw
    gives it)."""
    b, f = x.shape[:2]
    perm = torch.argsort(torch.rand(b, f, generator=generator), dim=1).to(x.device)
    identity = (perm == torch.arange(f, device=x.device)).all(1)
    perm[identity] = torch.roll(torch.arange(f, device=x.device), 1)
    return x[torch.arange(b, device=x.device)[:, None], perm]
