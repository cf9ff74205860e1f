"""video-ddpm's maths (genlab.models.video_diffusion, the space-time U-Net in genlab.models.unet): the temporal layers
see across frames (unless causal: then never forwards in time), the spatial layers never mix frames, shapes and
seeding, frame conditioning (the given frames come back exactly and steer the rest), guidance and bad controls,
ONNX export of the denoiser checked against PyTorch; and the video judge (videoclf) ranks real < shuffled < noise."""

import copy
import importlib.util

import pytest
import torch

from genlab.config import DataConfig
from genlab.data.video_sources import load_video
from genlab.errors import ControlError, UsageError
from genlab.models.unet import TemporalAttn, TemporalConv
from genlab.models.video_classifier import VideoClf, shuffle_frames
from genlab.models.video_diffusion import VideoDDPM
from genlab.registry import model_config

F, C, S = 8, 3, 16


def model(causal=False, num_classes=0, **kw) -> VideoDDPM:
    torch.manual_seed(0)
    cfg = model_config("video-ddpm", "tiny", in_channels=C, image_size=S, frames=F, causal=causal,
                       num_classes=num_classes, **kw)
    return VideoDDPM(cfg).eval()


def wake(m: VideoDDPM, scale: float = 0.05) -> VideoDDPM:
    """Perturb every weight, as training would: a fresh U-Net's zero-initialised layers (its output, and each
    temporal layer's, which starts as the identity) would otherwise hide what reaches them."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


def unet_out(m: VideoDDPM, x: torch.Tensor) -> torch.Tensor:
    cond = torch.zeros(len(x), F, C + 1, S, S)
    return m.unet(torch.cat([x, cond], 2), torch.full((len(x),), 500), None)


def change_at(m: VideoDDPM, frame: int) -> torch.Tensor:
    """How much each output frame moves when input frame `frame` changes: (F,)."""
    x = torch.randn(1, F, C, S, S, generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[:, frame] += torch.randn(C, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return (unet_out(m, x) - unet_out(m, y)).abs().amax(dim=(0, 2, 3, 4))


def test_the_temporal_layers_carry_a_change_at_frame_6_back_to_frame_2():
    m = model()
    wake(m)
    delta = change_at(m, 6)
    assert delta[2] > 1e-3 and delta[0] > 1e-4, delta


def test_a_causal_model_never_lets_a_later_frame_change_an_earlier_one():
    m = model(causal=True)
    wake(m)
    delta = change_at(m, 6)
    assert delta[:6].max() == 0 and delta[6:].min() > 1e-3, delta


def test_the_spatial_layers_do_not_mix_frames():
    m = wake(model())
    for layer in m.modules():   # silence only the temporal layers' outputs; everything else stays random
        if isinstance(layer, TemporalConv):
            torch.nn.init.zeros_(layer.conv.weight), torch.nn.init.zeros_(layer.conv.bias)
        elif isinstance(layer, TemporalAttn):
            torch.nn.init.zeros_(layer.proj.weight), torch.nn.init.zeros_(layer.proj.bias)
    delta = change_at(m, 6)
    assert delta[6] > 1e-3 and torch.cat([delta[:6], delta[7:]]).max() == 0, delta


def test_samples_have_the_clip_shape_and_are_seeded():
    m = model()
    a, b, c = (m.sample(2, generator=torch.Generator().manual_seed(s), steps=3) for s in (1, 1, 2))
    assert a.shape == (2, F, C, S, S) and a.abs().max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(UsageError, match="expects clips"):
        m.loss({"x": torch.zeros(2, F, C, S)})


def test_given_frames_come_back_exactly_and_steer_the_rest():
    m = model()
    wake(m)
    context = torch.rand(3, C, S, S) * 2 - 1
    g = lambda: torch.Generator().manual_seed(5)   # noqa: E731
    out = m.sample(2, generator=g(), steps=3, context=context)
    assert torch.equal(out[:, :3], context.expand(2, -1, -1, -1, -1))
    free = m.sample(2, generator=g(), steps=3)
    assert not torch.allclose(out[:, 3:], free[:, 3:])                   # the known frames reach the others
    other = m.sample(2, generator=g(), steps=3, context=-context)
    assert not torch.allclose(out[:, 3:], other[:, 3:])
    for bad, match in ((torch.zeros(F, C, S, S), "1 to 7"), (torch.zeros(2, C, 4, 4), "expected"),
                       (torch.full((2, C, S, S), 3.0), r"\[-1, 1\]")):
        with pytest.raises(ControlError, match=match):
            m.sample(1, steps=2, context=bad)


def test_the_loss_counts_only_the_frames_to_generate():
    """The gradient of the loss reaches the U-Net's output on the frames a clip must generate, and never on the
    frames it was given (the mask channel of its input says which)."""
    m = model(p_context=0.999)
    seen = {}

    def hook(module, args, out):
        out.retain_grad()
        seen["mask"], seen["out"] = args[0][:, :, -1, 0, 0], out

    m.unet.register_forward_hook(hook)
    torch.manual_seed(0)
    m.loss({"x": torch.rand(6, F, C, S, S) * 2 - 1})["loss"].backward()
    grad = seen["out"].grad.abs().amax(dim=(2, 3, 4))                    # (B, F)
    given = seen["mask"] > 0
    assert given.any(1).all() and (~given).any(1).all()                  # every clip has some of each
    assert grad[given].max() == 0 and (grad[~given] > 0).all()


def test_guidance_needs_labels_and_picks_the_class_embedding():
    m = wake(model(num_classes=3))
    g = lambda: torch.Generator().manual_seed(0)   # noqa: E731
    a = m.sample(2, cond=0, generator=g(), steps=2)
    b = m.sample(2, cond=2, generator=g(), steps=2, guidance=3.0)
    assert not torch.allclose(a, b)
    with pytest.raises(ControlError, match="guidance"):
        model().sample(1, steps=2, guidance=2.0)


@pytest.mark.needs("onnx", None if importlib.util.find_spec("onnxruntime") else "onnxruntime is not installed")
def test_the_space_time_u_net_exports_and_the_onnx_backend_samples_like_torch(tmp_path):
    from genlab.export import export, onnx_backend
    from genlab.export.onnx import TOLERANCE

    m = model(num_classes=3, timesteps=20)
    wake(m)
    manifest = export(m, tmp_path / "onnx")
    assert manifest["max_abs_diff"]["unet"] <= TOLERANCE
    assert manifest["graphs"]["unet"]["inputs"][0]["shape"] == ["batch", F, 2 * C + 1, S, S]
    assert manifest["video"]["frames"] == F
    fast = onnx_backend(copy.deepcopy(m), tmp_path / "onnx")
    with torch.no_grad():
        for p in fast.parameters():   # what is left of the torch U-Net: the samples must not depend on it
            p.zero_()
    kw = {"cond": [0, 1, 2], "steps": 3, "guidance": 2.0, "context": torch.zeros(2, C, S, S)}
    a, b = (x.sample(3, generator=torch.Generator().manual_seed(1), **kw) for x in (m, fast))
    assert (a - b).abs().max() <= TOLERANCE and a[:, 2:].std() > 1e-3


def test_the_video_judge_ranks_real_above_shuffled_above_noise():
    """A videoclf trained for 150 steps on moving shapes (about 20 s): its order score and its features' Fréchet
    distance to held-out real clips order real < temporally shuffled < noise."""
    from genlab.evaluation.image_metrics import fid

    data = DataConfig(name="moving-shapes", count=600, frames=8, image_size=16)
    ds = load_video(data)
    torch.manual_seed(0)
    clf = VideoClf(model_config("videoclf", "tiny", in_channels=3, image_size=16, frames=8, num_classes=4))
    opt = torch.optim.AdamW(clf.parameters(), lr=3e-3)
    train, held = ds.floats(slice(0, 400)), ds.floats(slice(400, 600))
    for step in range(150):
        i = torch.randint(0, 400, (32,), generator=torch.Generator().manual_seed(step))
        loss = clf.loss({"x": train[i], "y": ds.labels[i]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()
    g = torch.Generator().manual_seed(9)
    real, shuffled = held[:100], shuffle_frames(held[100:], g)
    noise = torch.rand(100, 8, 3, 16, 16, generator=g) * 2 - 1
    order = [float(clf.order_probs(x).mean()) for x in (real, shuffled, noise)]
    assert order[0] > 0.8 > 0.2 > order[1], order
    with torch.no_grad():
        ref = clf.features(train[:200]).double().numpy()
        dist = [fid(ref, clf.features(x).double().numpy()) for x in (real, shuffled, noise)]
    assert dist[0] < dist[1] < dist[2], dist


def test_sampling_in_chunks_gives_the_whole_batch_s_output(monkeypatch):
    import genlab.models.video_diffusion as vd

    m = wake(model(num_classes=3))
    x = torch.randn(5, F, 2 * C + 1, S, S)
    t, y = torch.tensor([1, 200, 400, 600, 999]), torch.tensor([0, 1, 2, 3, 0])
    monkeypatch.setattr(vd, "SAMPLE_CHUNK", 2)
    with torch.no_grad():
        assert torch.allclose(m.denoiser(x, t, y), m.unet(x, t, y), atol=1e-5)
