"""Family name -> (Config, Model, presets). The CLI, the tests and the server iterate over this table.

Adding a family is one file under models/ plus one line here; or, without touching genlab, a package
that declares an entry point in the group `genlab.families` whose object is a `Family` (docs/design.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from genlab.config import RunConfig, apply_preset
from genlab.errors import ConfigError, GenlabError
from genlab.models import (audio_classifier, audio_diffusion, autoencoder, classifier, diffusion, gan, gpt,
                           latent_diffusion, lstm, pix2pix, seq2seq, textclf, video_classifier, video_diffusion,
                           wavegan)


@dataclass(frozen=True)
class Family:
    name: str
    config_cls: type
    model_cls: type
    presets: dict[str, dict[str, Any]]
    kind: str          # the data it trains on, a genlab.kinds name: "image", "lm" (token stream), "pairs" or
                       # "labels" (texts), "audio", "video", "image-pairs"
    summary: str
    budget: Callable[[float], dict[str, Any]] | None = None  # minutes -> the preset's keys for `--minutes` with
                                                             # no `--preset` (a measured rule); None: "small"


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("ae", autoencoder.AEConfig, autoencoder.AE, autoencoder.PRESETS, "image", "convolutional autoencoder"),
        Family("vae", autoencoder.VAEConfig, autoencoder.VAE, autoencoder.PRESETS, "image",
               "convolutional variational autoencoder (optionally class-conditional)"),
        Family("gan", gan.GANConfig, gan.GAN, gan.PRESETS, "image",
               "DCGAN-style GAN (non-saturating or hinge loss; projection discriminator when conditional)"),
        Family("ddpm", diffusion.DDPMConfig, diffusion.DDPM, diffusion.PRESETS, "image",
               "DDPM diffusion with a U-Net; DDPM and DDIM samplers, classifier-free guidance when conditional"),
        Family("ldm", latent_diffusion.LDMConfig, latent_diffusion.LDM, latent_diffusion.PRESETS, "image",
               "latent diffusion: an autoencoder (4x smaller per side) then DDPM on its latents, two stages in one run"),
        Family("classifier", classifier.ClassifierConfig, classifier.Classifier, classifier.PRESETS, "image",
               "small CNN image classifier (also the evaluation judge)"),
        Family("gpt", gpt.GPTConfig, gpt.GPT, gpt.PRESETS, "lm",
               "decoder-only Transformer language model (pre-norm, SDPA, weight tying, KV cache)", gpt.budget_preset),
        Family("lstm", lstm.LSTMConfig, lstm.LSTM, lstm.PRESETS, "lm",
               "LSTM language model; generation carries the hidden state"),
        Family("seq2seq", seq2seq.Seq2SeqConfig, seq2seq.Seq2Seq, seq2seq.PRESETS, "pairs",
               "encoder-decoder Transformer for translation; greedy and beam search"),
        Family("textclf", textclf.TextClfConfig, textclf.TextClf, textclf.PRESETS, "labels",
               "self-attention text classifier with attention pooling (returns its attention weights)"),
        Family("audio-ddpm", audio_diffusion.AudioDDPMConfig, audio_diffusion.AudioDDPM, audio_diffusion.PRESETS,
               "audio", "DDPM on log-mel spectrograms with the U-Net (DDIM, guidance), inverted by Griffin-Lim"),
        Family("audioclf", audio_classifier.AudioClfConfig, audio_classifier.AudioClf, audio_classifier.PRESETS,
               "audio", "CNN classifier of clips on their log-mel spectrograms (the audio judge)"),
        Family("wavegan", wavegan.WaveGANConfig, wavegan.WaveGAN, wavegan.PRESETS, "audio",
               "WaveGAN: 1-D convolutional GAN on raw waveforms (phase shuffle; hinge or WGAN-GP; projection D)"),
        Family("video-ddpm", video_diffusion.VideoDDPMConfig, video_diffusion.VideoDDPM, video_diffusion.PRESETS,
               "video", "DDPM on clips with a factorised space-time U-Net (DDIM, guidance, continuing given frames)"),
        Family("videoclf", video_classifier.VideoClfConfig, video_classifier.VideoClf, video_classifier.PRESETS,
               "video", "(2+1)-D CNN classifier of clips and of their frame order (the video judge)"),
        Family("pix2pix", pix2pix.Pix2PixConfig, pix2pix.Pix2Pix, pix2pix.PRESETS, "image-pairs",
               "pix2pix: U-Net generator, PatchGAN discriminator, cGAN + L1 loss (gan_weight=0: the L1-only U-Net)"),
    ]
}


ENTRY_POINTS = "genlab.families"
log = logging.getLogger("genlab")


def plugins(group: str, cls: type, taken: dict) -> list:
    """The objects that other installed packages register in the entry point `group` (each a `cls` whose `name`
    is the entry point's). One that fails to load, or that reuses a name in `taken`, is skipped with a warning:
    it never breaks genlab or shadows a built-in one."""
    found = []
    for ep in entry_points(group=group):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - someone else's package: report it, carry on
            log.warning("genlab: skipped the %s plug-in %r (%s): %s: %s", group, ep.name, ep.value, type(e).__name__, e)
            continue
        if not isinstance(obj, cls) or obj.name in taken or obj.name != ep.name:
            log.warning("genlab: skipped the %s plug-in %r (%s): expected a %s.%s named %r that nothing else uses",
                        group, ep.name, ep.value, cls.__module__, cls.__qualname__, ep.name)
            continue
        found.append(obj)
    return found


FAMILIES.update({f.name: f for f in plugins(ENTRY_POINTS, Family, FAMILIES)})


def model_config(name: str, preset: str = "small", **fields: Any):
    """The family's model config with a preset's `model.*` keys applied, then `fields` (e.g. vocab_size=100).
    Validates the preset's `train.*` keys too."""
    fam = get(name)
    cfg = apply_preset(RunConfig(name, fam.config_cls()), fam.presets, preset).model
    for key, value in fields.items():
        if not hasattr(cfg, key):
            raise ConfigError(f"{name} has no model key {key!r}")
        setattr(cfg, key, value)
    return cfg


def get(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown family {name!r}; available: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def families_of(kind: str, *, generative: bool | None = None) -> list[str]:
    """The names of the registered families of one kind (e.g. "image"), optionally only the generators."""
    return [f.name for f in FAMILIES.values()
            if f.kind == kind and generative in (None, f.model_cls.generative)]


def families_with(capability: str) -> list[str]:
    """The names of the families that declare `capability` (models.base.Model.CAPABILITIES)."""
    return [f.name for f in FAMILIES.values() if capability in f.model_cls.CAPABILITIES]


def build(name: str, config: Any, where: str = "the model config"):
    """The family's model built from `config`. A config that cannot build a model (a negative width, a
    zero group count: a hand-edited or damaged config.json) is a ConfigError naming `where`, not a traceback."""
    try:
        return get(name).model_cls(config)
    except GenlabError as e:  # the family's own check of its config
        raise ConfigError(f"{where}: {e}") from None
    except (RuntimeError, ValueError, ZeroDivisionError, TypeError, OverflowError) as e:
        raise ConfigError(f"{where}: the {name} model cannot be built from it ({type(e).__name__}: {e}); "
                          "expected the sizes a genlab preset gives (positive widths and counts)") from None
