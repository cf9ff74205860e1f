"""The optimizer: the fused AdamW kernel, and a resumed step equal to an uninterrupted one for channels-last weights
(the U-Net's), whose moment buffers come back from the run folder in the standard layout."""

import torch

from genlab.models.unet import UNet
from genlab.training.optim import build_optimizers, load_optimizer_state


def group(params):
    return {"main": {"params": params, "lr": 0.1, "betas": (0.9, 0.999), "weight_decay": 0.01}}


def seeded_like(p, seed):
    return torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)).to(memory_format=torch.channels_last)


def test_fused_also_for_channels_last_weights():
    plain = torch.nn.Linear(4, 4)
    unet = UNet(1, 8, width=8, channel_mults=[1], num_res_blocks=1, attn_resolutions=[])
    assert any(not p.is_contiguous() for p in unet.parameters()), "the U-Net's convolutions are channels-last"
    for module in (plain, unet):
        assert build_optimizers(group(list(module.parameters())))["main"].defaults["fused"]


def test_a_resumed_step_equals_the_uninterrupted_one_for_channels_last_weights():
    """Two steps straight, against one step, the state saved as the run folder saves it (contiguous tensors) and
    loaded into a new optimizer, then the second step."""
    def run(resume: bool) -> torch.Tensor:
        p = torch.nn.Parameter(seeded_like(torch.empty(4, 3, 3, 3), 0))
        opt = build_optimizers(group([p]))["main"]
        for step in (1, 2):
            p.grad = seeded_like(p, step)
            opt.step()
            if resume and step == 1:
                saved = opt.state_dict()
                for state in saved["state"].values():
                    for k, v in state.items():
                        state[k] = v.contiguous().clone()
                opt = build_optimizers(group([p]))["main"]
                load_optimizer_state(opt, saved)
        return p.detach().clone()

    torch.testing.assert_close(run(resume=True), run(resume=False), rtol=0, atol=0)
