"""audio-ddpm (genlab.models.audio_diffusion): DDPM on normalised log-mel spectrograms, inverted by Griffin-Lim.
The spectrogram and its normalisation, sampling (shape, range, seeds, NoiseParts), the DDPM controls passing
through unchanged, the ONNX export of its U-Net, and a short training on two tones."""

import copy
import math
from dataclasses import asdict

import pytest
import torch

from genlab.config import from_dict
from genlab.data.audio_features import from_unit, log_mel
from genlab.errors import ControlError, UsageError
from genlab.models.audio_diffusion import AudioDDPM, AudioDDPMConfig
from genlab.models.base import NoiseParts
from genlab.models.diffusion import DDPM
from genlab.registry import model_config

try:
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    ONNX_MISSING = None
except ImportError as e:
    ONNX_MISSING = f"{e.name} is not installed (pip install -e '.[test]')"

DB = 10 / math.log(10)


def model(sample_rate=2000, length=2000, num_classes=0, **fields):
    """A small model: 2 kHz clips of 1 s as 32 x 32 spectrograms (n_fft 256, hop 64)."""
    cfg = model_config("audio-ddpm", "tiny", sample_rate=sample_rate, length=length, num_classes=num_classes,
                       n_fft=256, n_mels=32, **fields)
    torch.manual_seed(0)
    return AudioDDPM(cfg).eval()


def tones(freqs, sample_rate=2000, length=2000, amp=0.5):
    t = torch.arange(length) / sample_rate
    return (amp * torch.sin(2 * math.pi * torch.as_tensor(freqs, dtype=torch.float32)[:, None] * t))[:, None]


def dominant(clips, sample_rate):
    """The frequency (Hz) of each clip's largest spectral peak."""
    spec = torch.fft.rfft(clips[:, 0]).abs()
    return torch.fft.rfftfreq(clips.shape[-1], 1 / sample_rate)[spec.argmax(1)]


def perturb(m, seed=0, scale=0.1):
    """Jitter every weight: the zero-initialised output layers would otherwise give constant outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return m


# ---- the spectrogram --------------------------------------------------------------------------------------


def test_one_second_at_8_khz_is_a_64_by_64_spectrogram_in_the_unit_range():
    m = AudioDDPM(model_config("audio-ddpm", "tiny", sample_rate=8000, length=8000))
    c = m.config
    assert (c.hop_length, c.frames, c.image_size, c.in_channels) == (126, 64, 64, 1)
    x = torch.cat([tones([440.0], 8000, 8000), tones([1000.0], 8000, 8000, amp=1.0), torch.zeros(1, 1, 8000)])
    spec = m.spectrogram(x)
    assert spec.shape == (3, 1, 64, 64) and spec.min() >= -1 and spec.max() <= 1
    assert (spec[2] == -1).all()                       # silence is -1
    assert 0.95 < spec[1].max() <= 1                   # a full-scale sine's peak just under +1
    # inside the range the normalisation is undone exactly
    lm = log_mel(x[:2], 8000, c.n_fft, c.hop_length, c.n_mels)
    inside = (lm > c.log_mel_min) & (lm < c.log_mel_max)
    assert torch.allclose(from_unit(spec[:2, 0], c.log_mel_min, c.log_mel_max)[inside], lm[inside], atol=1e-4)


def test_the_spectrogram_maps_back_to_the_clip():
    """waveform(spectrogram(x)) through the model's own normalisation: log-mel error (measured 1.7 dB over 80 dB)
    and the tone's frequency kept."""
    m = AudioDDPM(model_config("audio-ddpm", "tiny", sample_rate=8000, length=8000))
    c = m.config
    x = tones([440.0], 8000, 8000)
    back = m.waveform(m.spectrogram(x), torch.Generator().manual_seed(0))
    assert back.shape == (1, 1, 8000) and back.abs().max() <= 1
    a, b = (log_mel(w, 8000, c.n_fft, c.hop_length, c.n_mels) for w in (x, back))
    floor = a.max() - 80 / DB
    assert float((a.clamp_min(floor) - b.clamp_min(floor)).abs().mean() * DB) < 2.0
    assert abs(float(dominant(back, 8000)[0]) - 440) < 8000 / 512 / 2    # within half an STFT bin (measured 5 Hz)


def test_frames_beyond_the_square_are_cropped_and_come_back_silent():
    """The contract suite's clips (1024 samples at 1024 Hz) with 32 mels: hop 33, 32 frames; with an explicit hop
    of 16, 65 frames, cropped to 32 in and padded with silence out."""
    m = model(1024, 1024)
    assert (m.config.hop_length, m.config.frames) == (33, 32)
    m = model(1024, 1024, hop=16)
    assert m.config.frames == 65
    x = tones([100.0], 1024, 1024)
    back = m.waveform(m.spectrogram(x), torch.Generator().manual_seed(0))
    assert back.shape == (1, 1, 1024)
    late, early = back[..., 600:].abs().max(), back[..., :400].abs().max()   # frames 32.. (t > 0.5 s) are silent
    assert late < 0.01 * early


def test_the_config_derives_the_u_net_sizes_and_round_trips_through_json():
    m = model(num_classes=3)
    data = asdict(m.config)
    assert "image_size" not in data and "in_channels" not in data and data["family"] == "audio-ddpm"
    fresh = AudioDDPM(from_dict(AudioDDPMConfig, data))
    assert fresh.state_dict().keys() == m.state_dict().keys()
    with pytest.raises(UsageError, match="expected 1 <= hop <= n_fft"):
        AudioDDPM(model_config("audio-ddpm", "tiny", sample_rate=8000, length=8000, n_fft=64))
    with pytest.raises(UsageError, match="log_mel_min < log_mel_max"):
        AudioDDPM(model_config("audio-ddpm", "tiny", log_mel_min=5.0, log_mel_max=1.0))


# ---- sampling ------------------------------------------------------------------------------------------


def test_samples_are_clips_in_range_and_seeded():
    m = perturb(model(num_classes=2))
    a, b, c = (m.sample(3, cond=1, generator=torch.Generator().manual_seed(s), steps=4) for s in (5, 5, 6))
    assert a.shape == (3, 1, 2000) and a.abs().max() <= 1 and a.std() > 1e-3
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_a_batch_of_noise_parts_gives_each_part_its_own_samples():
    """The server's batching: rows drawn part by part, the DDIM noise and Griffin-Lim's phase alike. The U-Net's
    float rounding differs a little with the batch size (4e-7 in the spectrogram) and exp and Griffin-Lim amplify
    it (measured 1.3e-4 in the clips), so the clips are compared at 1e-3 and each stage at its own precision."""
    m = perturb(model(), scale=0.02)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    parts = lambda: NoiseParts([(1, gen(1)), (2, gen(2))])  # noqa: E731
    spec = DDPM.sample(m, 3, generator=parts(), steps=3)
    alone = torch.cat([DDPM.sample(m, 1, generator=gen(1), steps=3), DDPM.sample(m, 2, generator=gen(2), steps=3)])
    assert torch.allclose(spec, alone, atol=1e-5)
    assert torch.allclose(m.waveform(spec, parts()), torch.cat([m.waveform(spec[:1], gen(1)),
                                                                m.waveform(spec[1:], gen(2))]), atol=1e-6)
    together = m.sample(3, generator=parts(), steps=3)
    assert (together - torch.cat([m.sample(1, generator=gen(1), steps=3),
                                  m.sample(2, generator=gen(2), steps=3)])).abs().max() < 1e-3


@pytest.mark.parametrize("controls", [{"steps": 4, "guidance": 2.5}, {"steps": 7, "eta": 0.5, "guidance": 1.0},
                                      {"sampler": "ddpm", "guidance": 0.5}])
def test_the_ddpm_controls_pass_through_unchanged(controls):
    """sample = waveform(DDPM.sample(...)) for the same generator: steps, sampler, eta and guidance do what they do
    for the image DDPM."""
    m = perturb(model(num_classes=2, timesteps=20))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = m.sample(2, cond=[0, 1], generator=g1, **controls)
    spec = DDPM.sample(m, 2, cond=[0, 1], generator=g2, **controls)
    assert spec.shape == (2, 1, 32, 32)
    assert torch.equal(got, m.waveform(spec, g2))


def test_guidance_and_steps_change_the_samples_and_bad_controls_are_refused():
    m = perturb(model(num_classes=2, timesteps=20))
    run = lambda **kw: m.sample(2, cond=1, generator=torch.Generator().manual_seed(0), **kw)  # noqa: E731
    assert not torch.allclose(run(steps=5), run(steps=5, guidance=3.0))
    assert not torch.allclose(run(steps=3), run(steps=6))
    assert m.controls() == DDPM.controls(m) and m.plan(steps=5, guidance=2.0, labelled=True) == \
        {"steps": 5, "sampler": "ddim", "eta": 0.0, "guidance": 2.0}
    with pytest.raises(ControlError, match="steps"):
        run(steps=21)
    with pytest.raises(ControlError, match="needs a label"):
        m.sample(1, guidance=2.0)
    with pytest.raises(ControlError, match="class-conditional"):
        model().sample(1, guidance=2.0)
    with pytest.raises(TypeError, match="bogus"):
        run(bogus=1)


# ---- ONNX --------------------------------------------------------------------------------------------------


@pytest.mark.needs("onnx", ONNX_MISSING)
def test_the_u_net_exports_and_the_onnx_backend_samples_like_torch(tmp_path):
    from genlab.export import export, onnx_backend
    from genlab.export.onnx import TOLERANCE

    m = perturb(model(num_classes=2, timesteps=20), scale=0.02)
    manifest = export(m, tmp_path / "onnx")
    assert list(manifest["graphs"]) == ["unet"] and manifest["max_abs_diff"]["unet"] <= TOLERANCE
    assert manifest["graphs"]["unet"]["inputs"][0]["shape"] == ["batch", 1, 32, 32]
    assert manifest["diffusion"]["null_label"] == 2
    assert manifest["spectrogram"] | {"inverse": None} == {
        "sample_rate": 2000, "length": 2000, "n_fft": 256, "hop": 64, "n_mels": 32, "frames": 32,
        "log_mel_range": [-11.5, 10.0], "griffin_lim_iters": 32, "inverse": None}
    fast = onnx_backend(copy.deepcopy(m), tmp_path / "onnx")
    with torch.no_grad():
        for p in fast.parameters():   # what is left of the torch U-Net: the samples must not depend on it
            p.zero_()
    kw = {"cond": [0, 1, 1], "steps": 4, "guidance": 2.0}
    spec_a, spec_b = (DDPM.sample(x, 3, generator=torch.Generator().manual_seed(1), **kw) for x in (m, fast))
    assert (spec_a - spec_b).abs().max() <= TOLERANCE
    # the clips: Griffin-Lim amplifies the U-Net's 5e-7 differences (measured 3e-3 at this perturbation)
    a, b = (x.sample(3, generator=torch.Generator().manual_seed(1), **kw) for x in (m, fast))
    assert (a - b).abs().max() <= 0.02 and a.std() > 1e-3


# ---- training ------------------------------------------------------------------------------------------


def test_training_on_two_tones_lowers_the_loss_and_the_label_picks_the_tone():
    """150 AdamW steps of 16 clips (the model's own train_step), 15-25 s on one core: the loss falls from 0.88 to
    about 0.06 and the samples' dominant frequency is the label's tone (measured within 10 Hz: 243-245 and
    700-710 Hz)."""
    freqs = torch.tensor([250.0, 700.0])
    m = model(num_classes=2, channel_mults=[1, 2], width=16).train()
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)

    class Stepper:
        def forward(self, batch):
            return m(batch)

        def step(self, group, out):
            out["loss"].backward()
            opt.step()
            opt.zero_grad()

    def batch(n=16):
        y = torch.arange(n) % 2
        f = freqs[y] * (1 + 0.02 * (torch.rand(n, generator=g) - 0.5))
        amp, phase = 0.3 + 0.4 * torch.rand(n, 1, generator=g), 2 * math.pi * torch.rand(n, 1, generator=g)
        return {"x": (amp * torch.sin(2 * math.pi * f[:, None] * torch.arange(2000) / 2000 + phase))[:, None], "y": y}
    losses = [m.train_step(batch(), Stepper())["loss"].item() for _ in range(150)]
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20
    m.eval()
    y = torch.arange(8) % 2
    clips = m.sample(8, cond=y, generator=torch.Generator().manual_seed(1), steps=20)
    assert ((dominant(clips, 2000) - freqs[y]).abs() < 25).all(), dominant(clips, 2000)
