"""What a family declares for ONNX export (genlab.export.onnx): its networks as `Graph`s.

A family is exportable when its model class has
  - `onnx_graphs(self) -> list[Graph]`: the networks to export, each a module whose forward takes the
    graph's inputs positionally, with the inputs' and outputs' names, dtypes and shapes, and
  - `onnx_extras(self) -> dict`: what a consumer needs beyond the graphs (a latent prior, a diffusion
    process), merged into export.json.
A family that cannot be exported may say why in a class attribute `ONNX_UNSUPPORTED` (a phrase).
A family whose class also has `use_onnx(self, graphs)` can sample on onnxruntime (`genlab sample
--backend onnx`): `graphs` maps each graph's name to a runner, (*tensors) -> tuple of CPU tensors,
and the model replaces its network by them, keeping everything around it.

Only torch here: the exporter and onnxruntime live in genlab.export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from genlab.errors import UsageError

Spec = tuple[str, str, list]   # (name, dtype "float32" | "int64", shape: ints and symbolic axis names)
Runner = Callable[..., tuple[torch.Tensor, ...]]   # an exported graph: (*tensors) -> outputs (CPU tensors)
BATCH = "batch"   # the dynamic batch axis every graph has


@dataclass
class Graph:
    """One network to export: a module whose forward takes the inputs positionally, and a maker of
    random inputs `example(batch, length, generator)` for tracing and verification."""

    name: str
    module: nn.Module
    inputs: list[Spec]
    outputs: list[Spec]
    example: Callable[[int, int, torch.Generator], tuple[torch.Tensor, ...]]
    lengths: tuple[int, ...] = (0,)   # values of the "length" axis to verify (0: the graph has none)


def random_labels(k: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` random class ids in 0..k-1, (batch,) int64."""
    return torch.randint(k, (batch,), generator=generator)


def lengths_upto(n: int, parts: int) -> tuple[int, ...]:
    """The lengths a graph with a "length" axis is verified at: 1, n // parts and n."""
    return tuple(sorted({1, max(1, n // parts), n}))


class Decode(nn.Module):
    """ae / vae / gan: latents [+ labels] -> images, through the model's own `decode`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.decode(z, y)


def decoder_graph(name: str, model: nn.Module, output: Spec | None = None) -> Graph:
    """The graph of a latent-variable model (config: latent_dim, num_classes): z (batch, latent_dim) float32
    [, y (batch,) int64] -> `output`; by default an image model's (config: in_channels, image_size)
    image (batch, C, H, W)."""
    c = model.config
    k = c.num_classes
    out = [output or ("image", "float32", [BATCH, c.in_channels, c.image_size, c.image_size])]
    ins: list[Spec] = [("z", "float32", [BATCH, c.latent_dim])] + ([("y", "int64", [BATCH])] if k else [])

    def example(b: int, length: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        return (torch.randn(b, c.latent_dim, generator=g),) + ((random_labels(k, b, g),) if k else ())
    return Graph(name, Decode(model), ins, out, example)


def latent_prior(dim: int, mean: Any = 0.0, std: Any = 1.0, scale_tril: list | None = None) -> dict:
    """export.json's "latent" entry: sampling draws z = mean + std * N(0, I) of size dim (mean and std numbers or
    one value per dimension); or, with scale_tril (an AE's or VAE's fitted prior), z = mean[r] + scale_tril[r] @ N(0, I)
    where row r is the label (0 for unconditional runs): mean (rows, dim), scale_tril (rows, dim, dim)."""
    if scale_tril is not None:
        return {"latent": {"dim": dim, "mean": mean, "scale_tril": scale_tril}}
    return {"latent": {"dim": dim, "mean": mean, "std": std}}


class OnnxDecode:
    """Stands in for ae/vae/gan `decode(z, y)`: the model's sampling code (latents from its torch.Generator,
    labels, truncation) runs unchanged and only the network runs on the exported graph."""

    def __init__(self, graph: Runner, num_classes: int):
        self.graph, self.num_classes = graph, num_classes

    def __call__(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            raise UsageError(f"this model is class-conditional: pass labels (cond=...) of 0..{self.num_classes - 1}")
        return self.graph(z, *([y] if self.num_classes else []))[0].to(z.device)
