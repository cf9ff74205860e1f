"""What the two adversarial families share (gan.py: images, wavegan.py: raw audio): two players, their optimizers
and their alternating step, latents z ~ N(0, I) with the truncation trick, and sampling as G(z, y).

A family subclasses `TwoPlayers`, builds `self.generator` and `self.discriminator`, calls `init_watch` (the
mode-collapse watch, collapse.py) and defines `loss(batch, phase)`: phase "d" is the discriminator's loss, "g" the
generator's, None (validation) both. `train_step` takes `config.d_steps` discriminator steps (1 when the config has
no such key), then one generator step with the discriminator frozen.
"""

from __future__ import annotations

import torch

from genlab.errors import UnsupportedError, UsageError
from genlab.models.base import GenerativeModel, Stepper, as_labels, eval_mode
from genlab.models.collapse import CollapseWatch
from genlab.models.controls import Control


class TwoPlayers(CollapseWatch, GenerativeModel):
    """A generator G and a discriminator D trained adversarially; sampling is G(z), z ~ N(0, I)."""

    LOSSES: tuple[str, ...] = ()   # the family's model.loss choices
    CONTROLS = (Control("truncation", float, None, 0.05, 10.0, help="resample latents beyond this magnitude"),)

    def __init__(self, config):
        if config.loss not in self.LOSSES:
            raise UsageError(f"model.loss={config.loss!r}; expected one of {', '.join(self.LOSSES)}")
        if not 0 < config.collapse_fraction < 1:
            raise UsageError(f"model.collapse_fraction={config.collapse_fraction}; expected a fraction in (0, 1)")
        super().__init__(config)

    def param_groups(self, train) -> dict[str, dict]:
        """Two Adam groups, "d" and "g", with the model's lr_d/lr_g and betas (train.lr/beta1/beta2 unused)."""
        c = self.config
        return {name: {"params": [p for p in net.parameters() if p.requires_grad], "lr": lr,
                       "betas": (c.beta1, c.beta2), "weight_decay": train.weight_decay}
                for name, net, lr in (("d", self.discriminator, c.lr_d), ("g", self.generator, c.lr_g))}

    # ------------------------------------------------------------------ training

    def players_inputs(self, batch: dict, phase: str | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """`loss`'s checks and inputs: the real batch x, its labels y (None for an unconditional model) and one
        latent per item, drawn from the global RNG (the trainer seeds it). Fakes reuse the batch's labels."""
        name = type(self).__name__
        if phase not in ("d", "g", None):
            raise UsageError(f"{name}.loss phase={phase!r}; expected 'd', 'g' or None (both, for validation)")
        x, y = batch["x"], batch.get("y")
        if self.config.num_classes > 0 and y is None:
            raise UsageError(f"this {name} is class-conditional: the batch needs labels 'y' (train with --conditional)")
        z = torch.randn(len(x), self.config.latent_dim, device=x.device)
        return x, (y if self.config.num_classes > 0 else None), z

    def d_terms(self, x: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """D's loss (the family's `d_loss` of its logits) on the real batch against the fakes (detached), and
        d_real / d_fake, D's mean sigmoid(logit) on each: they rise as D calls a batch real."""
        real_logit, fake_logit = self.discriminator(x, y), self.discriminator(fake.detach(), y)
        return {"d_loss": self.d_loss(real_logit, fake_logit), "d_real": torch.sigmoid(real_logit).mean().detach(),
                "d_fake": torch.sigmoid(fake_logit).mean().detach()}

    def train_step(self, batch: dict, stepper: Stepper) -> dict:
        """d_steps D steps, then one G step with D frozen (no gradients accumulate on D). Returns detached scalars
        (D's from its last step)."""
        for _ in range(getattr(self.config, "d_steps", 1)):
            out_d = stepper.forward(batch, phase="d")
            stepper.step("d", out_d)
        frozen = [p for p in self.discriminator.parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        try:
            out_g = stepper.forward(batch, phase="g")
            stepper.step("g", out_g)
        finally:
            for p in frozen:
                p.requires_grad_(True)
        merged = {k: v.detach() for k, v in {**out_d, **out_g}.items()}
        merged["loss"] = merged["g_loss"]
        return merged

    # ------------------------------------------------------------------ sampling

    def latent(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None
               ) -> torch.Tensor:
        """n latents z ~ N(0, I), (n, latent_dim), drawn on the generator's device so a seed gives the same z on
        every machine. truncation t: entries with |z| > t are redrawn until all lie in [-t, t] (Brock et al. 2019)."""
        self.controls()["truncation"].check(truncation)
        where = generator.device if generator is not None else self.watch_z.device
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=where)
        if truncation is not None:
            out = z.abs() > truncation
            while out.any():  # vectorised rejection sampling, deterministic given the generator
                z[out] = torch.randn(int(out.sum()), generator=generator, device=where)
                out = z.abs() > truncation
        return z.to(self.watch_z.device)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (n, latent_dim) [+ labels (n,)] -> outputs in [-1, 1] (images (n, C, H, W), clips (n, 1, length)):
        the generator in eval mode (BatchNorm's running statistics: each output depends on its own z only)."""
        with eval_mode(self.generator):
            return self.generator(z, y).contiguous()

    def draw(self, n: int, *, cond=None, generator: torch.Generator | None = None,
             truncation: float | None = None, **controls) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The random inputs of `sample`: latents z and labels y, so that sample = decode(*draw(...)).
        `cond`: a label or one per sample; a conditional model given no cond draws labels uniformly
        (from `generator`, after z). `truncation`: the truncation trick (see `latent`)."""
        if controls:
            raise UnsupportedError(f"{self.family}.sample got unknown controls {', '.join(controls)}; "
                                   "it takes truncation")
        device = self.watch_z.device
        y = as_labels(cond, n, self.config.num_classes, device)
        z = self.latent(n, generator, truncation)
        if y is None and self.config.num_classes > 0:
            where = generator.device if generator is not None else device
            y = torch.randint(self.config.num_classes, (n,), generator=generator, device=where).to(device)
        return z, y

    @torch.no_grad()
    def sample(self, n: int, *, cond=None, generator: torch.Generator | None = None, **controls) -> torch.Tensor:
        """n outputs in [-1, 1]: the generator applied to `draw`'s latents and labels."""
        return self.decode(*self.draw(n, cond=cond, generator=generator, **controls))
