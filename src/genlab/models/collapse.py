"""The mode-collapse watch of the GAN families (gan, wavegan), which the trainer calls at every validation.

Fixed latents are decoded and the spread of the results (mean pairwise L2 distance / sqrt(dimensions), in
the family's `watch_features`) is compared with its highest recorded value; the watch warns when it falls
below `collapse_fraction` of it. The reference is the highest value so far, not the first: at init a
generator's outputs are almost constant (DCGAN's BatchNorm statistics do not match its tiny initial
activations; WaveGAN starts near silence), so a first value would make every later collapse look healthy.

An unconditional model is measured over WATCH_N latents. For a conditional model that number mixes labels
and stays high when each class has collapsed to one point (every 4 the same image): a real case, where the
mixed measure read 0.97-1.00 of its best throughout. So the watch measures each class on its own: PER_CLASS
fixed latents decoded under every label, the spread among the samples of one label, each class against its
own highest recorded value, and it warns naming every class that fell below the fraction. A class also counts
as collapsed when its spread is below the fraction of the mixed spread of the same call: in real data a class
spreads at least half as much as a mixed batch (0.49-1.19 on digits, digits at 28x28 and shapes), so this
catches a collapse that was already there at the first validation, when the highest value is the only one.

Buffers, so that the latents and the references survive save, load and resume with the weights; loading
never lowers a reference (the trainer swaps EMA weights in and out around the watch).
"""

from __future__ import annotations

import math

import torch

WATCH_N = 64        # fixed latents of the mixed measure
PER_CLASS = 8       # of them, the ones decoded under every label for the within-class measure
WATCH_SEED = 1234   # seeds the latents (a private generator: the global RNG is left alone)
CHUNK = 256         # outputs decoded at once


def spread(features: torch.Tensor) -> float:
    """Mean pairwise L2 distance of (n, d) features / sqrt(d): 0 when all n are the same."""
    features = features.float().flatten(1)
    return (torch.pdist(features).mean() / math.sqrt(features.shape[1])).item()


class CollapseWatch:
    """Mixed into a two-player family before GenerativeModel. The family provides `decode(z, y)`,
    `watch_features(outputs)` (what the spread is measured in), COLLAPSE_WHAT (the quantity's name in the
    warning) and COLLAPSE_HINT (what to try), and calls `init_watch` in its __init__."""

    COLLAPSE_WHAT = "sample diversity"
    COLLAPSE_HINT = "an earlier checkpoint"

    def init_watch(self, latent_dim: int, num_classes: int) -> None:
        z = torch.randn(WATCH_N, latent_dim, generator=torch.Generator().manual_seed(WATCH_SEED))
        self.register_buffer("watch_z", z)
        self.register_buffer("watch_y", torch.arange(WATCH_N) % num_classes if num_classes > 0 else None)
        self.register_buffer("watch_ref", torch.zeros(()))     # highest mixed spread so far (0 = none yet)
        self.register_buffer("watch_class_ref", torch.zeros(num_classes) if num_classes > 0 else None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # runs written before the per-class watch have no watch_class_ref: it starts again from 0
        if self.watch_class_ref is not None:
            state_dict.setdefault(prefix + "watch_class_ref", torch.zeros_like(self.watch_class_ref))
        best = [b.clone() for b in (self.watch_ref, self.watch_class_ref) if b is not None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        for buffer, old in zip((self.watch_ref, self.watch_class_ref), best):
            buffer.clamp_(min=old)

    def _features(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([self.watch_features(self.decode(z[i:i + CHUNK], None if y is None else y[i:i + CHUNK]))
                          for i in range(0, len(z), CHUNK)])

    @torch.no_grad()
    def watch(self, generator: torch.Generator | None = None) -> tuple[dict[str, float], str | None]:
        """{"diversity": the mixed spread, "diversity_ratio": the lowest ratio to its reference (per class for
        a conditional model, which also reports "class_diversity", the mean within-class spread,
        "class_to_mixed", the lowest class's spread over the mixed one, and "collapsed_classes")} and a warning
        or None. `generator` is unused: the latents are fixed so that values are comparable across validations."""
        diversity = spread(self._features(self.watch_z, self.watch_y))
        self.watch_ref.clamp_(min=diversity)
        fraction, name = self.config.collapse_fraction, self.family
        if self.watch_class_ref is None:
            ref = self.watch_ref.item()
            ratio = diversity / ref if ref > 0 else 1.0
            warning = None if ratio >= fraction else (
                f"{name}: possible mode collapse: {self.COLLAPSE_WHAT} {diversity:.4g} is {ratio:.0%} of its highest "
                f"recorded value {ref:.4g} (warns below {fraction:.0%}); try {self.COLLAPSE_HINT}")
            return {"diversity": diversity, "diversity_ratio": ratio}, warning
        k = len(self.watch_class_ref)
        z = self.watch_z[:PER_CLASS].repeat(k, 1)
        y = torch.arange(k, device=z.device).repeat_interleave(PER_CLASS)
        per_class = torch.tensor([spread(f) for f in self._features(z, y).split(PER_CLASS)])
        ref = torch.maximum(self.watch_class_ref.cpu(), per_class)
        self.watch_class_ref.copy_(ref)
        ratios = torch.where(ref > 0, per_class / ref.clamp(min=1e-12), torch.ones_like(ref))
        mixed = per_class / diversity if diversity > 0 else torch.ones_like(ref)   # each class against mixed labels
        low = ((ratios < fraction) | (mixed < fraction)).nonzero().flatten().tolist()
        stats = {"diversity": diversity, "class_diversity": per_class.mean().item(),
                 "diversity_ratio": ratios.min().item(), "class_to_mixed": mixed.min().item(),
                 "collapsed_classes": float(len(low))}
        warning = None if not low else (
            f"{name}: possible mode collapse within {len(low)} of {k} classes (label "
            f"{', '.join(map(str, low[:10]))}{', ...' if len(low) > 10 else ''}): {self.COLLAPSE_WHAT} among samples "
            f"of one label fell to {ratios.min().item():.0%} of its highest recorded value and to "
            f"{mixed.min().item():.0%} of that over mixed labels (warns below {fraction:.0%} of either); try "
            f"{self.COLLAPSE_HINT}")
        return stats, warning
