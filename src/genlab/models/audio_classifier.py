"""`audioclf`: a classifier of audio clips, the audio judge's network: the image Classifier's CNN (classifier.py) on
the clip's log-mel spectrogram seen as a one-channel square image.

A clip (B, 1, T) in [-1, 1] -> log-mel (B, n_mels, 1 + T // hop) (data/audio_features.log_mel) -> mapped from the
fixed log range [log_mel_min, log_mel_max] to [-1, 1] -> frames cropped at the end, or padded with silence (-1), to
n_mels -> (B, 1, n_mels, n_mels) -> the Classifier. The defaults suit 1 s of 8 kHz speech on a CPU: 64 ms windows,
32 ms hops and 32 mel bands make a 1 s clip exactly 32 x 32. (n_fft 256, hop 128 and 64 bands, 64 x 64, trains
about 13x slower on one core: 26 against 342 clips/s at width 32; a judge that takes an hour to train is not one
`genlab eval` can afford.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genlab.data.audio_features import fit_frames, log_mel, to_unit
from genlab.errors import UsageError
from genlab.models.base import Model
from genlab.models.classifier import Classifier, ClassifierConfig


@dataclass
class AudioClfConfig:
    family: str = "audioclf"
    sample_rate: int = 8000   # set from the data
    length: int = 8000        # set from the data: samples per clip
    num_classes: int = 10     # set from the data (the classifier always trains on labels)
    n_fft: int = 512          # 64 ms at 8 kHz
    hop: int = 256            # 32 ms: 1 + 8000 // 256 = 32 frames
    n_mels: int = 32          # mel bands, and the side of the square spectrogram the CNN sees
    log_mel_min: float = -11.5   # log of silence (audio_features.LOG_FLOOR) -> -1
    log_mel_max: float = 10.5    # a little above a full-scale sine's peak at n_fft 512 (10.05) -> +1
    width: int = 32
    feature_dim: int = 128    # penultimate layer: the audio judge's feature space
    dropout: float = 0.2


# Training throughput on one CPU core, 1 s clips at 8 kHz: tiny 0.63 M parameters, ~990 clips/s; small 2.0 M,
# ~350 clips/s; base 6.9 M, ~100 clips/s.
PRESETS = {
    "tiny": {"model.width": 16, "train.steps": 300, "train.batch_size": 64},
    "small": {"model.width": 32, "train.steps": 1500, "train.batch_size": 64},
    "base": {"model.width": 64, "train.steps": 5000, "train.batch_size": 128},
}


class AudioClf(Model):
    """Clips -> log-mel "image" -> Classifier (conv stack, feature_dim features, logits). Not a generator:
    `predict` instead of `sample`."""

    family = "audioclf"

    def __init__(self, config: AudioClfConfig):
        c = config
        if c.n_mels < 8 or not 1 <= c.hop <= c.n_fft < 2 * c.length or not c.log_mel_min < c.log_mel_max:
            raise UsageError(f"audioclf needs n_mels >= 8, 1 <= hop <= n_fft < 2 x length and log_mel_min < "
                             f"log_mel_max; got n_mels={c.n_mels}, hop={c.hop}, n_fft={c.n_fft}, length={c.length}, "
                             f"log_mel_min={c.log_mel_min}, log_mel_max={c.log_mel_max}")
        super().__init__(config)
        self.cnn = Classifier(ClassifierConfig(in_channels=1, image_size=c.n_mels, num_classes=c.num_classes,
                                               width=c.width, feature_dim=c.feature_dim, dropout=c.dropout))

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, 1, T) or (B, T) -> the CNN's input (B, 1, n_mels, n_mels) in [-1, 1]."""
        c = self.config
        mel = to_unit(log_mel(x, c.sample_rate, c.n_fft, c.hop, c.n_mels), c.log_mel_min, c.log_mel_max)
        return fit_frames(mel, c.n_mels, -1.0)[:, None]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Clips (B, 1, T) in [-1, 1] -> post-ReLU features (B, feature_dim): what the audio judge's metrics use."""
        return self.cnn.features(self.spectrogram(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn.logits(self.spectrogram(x))

    def loss(self, batch: dict) -> dict:
        if batch.get("y") is None:
            raise UsageError("audioclf trains on labelled clips; this dataset has no labels")
        return self.cnn.loss({"x": self.spectrogram(batch["x"]), "y": batch["y"]})

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, num_classes) of clips (B, 1, T)."""
        return self.cnn.predict(self.spectrogram(x))

