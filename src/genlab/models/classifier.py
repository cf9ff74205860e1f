"""A small CNN image classifier: a usable family, and the judge whose features evaluation uses.

The judge's 128-d penultimate features (post-ReLU) play the role Inception-v3's pool features play
in FID: there are no pretrained weights offline, so genlab trains one per dataset (evaluation/judge.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import UsageError
from genlab.models.base import Model
from genlab.models.graphs import BATCH, Graph
from genlab.models.layers import ConvEncoder


@dataclass
class ClassifierConfig:
    family: str = "classifier"
    in_channels: int = 1     # set from the data
    image_size: int = 8      # set from the data
    num_classes: int = 10    # set from the data (the classifier always trains on labels)
    width: int = 32
    feature_dim: int = 128   # penultimate layer: the judge's feature space
    dropout: float = 0.2


PRESETS = {
    "tiny": {"model.width": 16, "train.steps": 300, "train.batch_size": 64},
    "small": {"model.width": 32, "train.steps": 1500, "train.batch_size": 128},
    "base": {"model.width": 64, "train.steps": 5000, "train.batch_size": 128},
}


class Classifier(Model):
    """Conv stack -> 128-d features -> logits. Not a generator: `predict` instead of `sample`."""

    family = "classifier"

    def __init__(self, config: ClassifierConfig):
        if config.num_classes < 2:
            raise UsageError(f"the classifier needs labelled data with at least 2 classes; got {config.num_classes}")
        super().__init__(config)
        c = config
        self.encoder = ConvEncoder(c.in_channels, c.image_size, c.width)
        self.fc = nn.Linear(self.encoder.out_features, c.feature_dim)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> post-ReLU features (N, feature_dim)."""
        return F.relu(self.fc(self.encoder(x).flatten(1)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.features(x)))

    def loss(self, batch: dict) -> dict:
        if batch.get("y") is None:
            raise UsageError("the classifier trains on labelled data; this dataset has no labels")
        logits = self.logits(batch["x"])
        loss = F.cross_entropy(logits.float(), batch["y"])
        return {"loss": loss, "acc": (logits.argmax(1) == batch["y"]).float().mean().detach()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, num_classes)."""
        return F.softmax(self.logits(x).float(), dim=1)

    # ------------------------------------------------------------------ ONNX (genlab.models.graphs)

    def onnx_graphs(self) -> list[Graph]:
        """model.onnx: x (batch, C, H, W) in [-1, 1] -> probs (batch, num_classes)."""
        c = self.config
        shape = [c.in_channels, c.image_size, c.image_size]

        def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
            return (torch.rand(b, *shape, generator=g) * 2 - 1,)
        return [Graph("model", _Probs(self), [("x", "float32", [BATCH, *shape])],
                      [("probs", "float32", [BATCH, c.num_classes])], example)]

    def onnx_extras(self) -> dict:
        return {}


class _Probs(nn.Module):
    """The exported network: images -> class probabilities, as `predict`."""

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softmax(self.model.logits(x).float(), dim=1)
