"""LoRA (genlab.models.lora): the maths of the adapters, on the layers and on whole families."""

import pytest
import torch
from torch import nn

from genlab import registry
from genlab.models.lora import LoRAConv2d, LoRALinear, apply_lora, freeze_base, merged_state


def _randomise_adapters(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def test_zero_b_leaves_linear_and_conv_unchanged():
    torch.manual_seed(0)
    lin, conv = nn.Linear(6, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1)
    x, img = torch.randn(7, 6), torch.randn(2, 3, 9, 9)
    a, b = LoRALinear(lin, 2, 2.0), LoRAConv2d(conv, 2, 2.0)
    assert torch.equal(a(x), lin(x)) and torch.equal(b(img), conv(img))
    assert a.weight is lin.weight and b.weight is conv.weight  # the same Parameter: keys and ties survive


def test_conv_delta_is_the_composed_kernel():
    """B(A(x)) equals one convolution with the kernel `delta` (what merging adds to W)."""
    torch.manual_seed(0)
    conv = LoRAConv2d(nn.Conv2d(3, 4, 3, stride=2, padding=1), 2, 4.0)
    _randomise_adapters(conv)
    img = torch.randn(2, 3, 9, 9)
    low = conv._conv_forward(img, conv.lora_A, None)
    direct = torch.nn.functional.conv2d(low, conv.lora_B)
    composed = torch.nn.functional.conv2d(img, conv.delta(), stride=2, padding=1)
    assert torch.allclose(direct, composed, atol=1e-5)


def _family(name: str, **fields):
    torch.manual_seed(0)
    cfg = registry.model_config(name, "tiny", **fields)
    return registry.build(name, cfg).eval(), cfg


FAMILIES = {  # family -> (config fields, an input batch maker, the output to compare)
    "gpt": ({"vocab_size": 30}, lambda: {"ids": torch.randint(4, 30, (3, 12), generator=torch.Generator().manual_seed(1))},
            lambda m, b: m.logits(b["ids"])),
    "ddpm": ({"in_channels": 1, "image_size": 8, "num_classes": 3},
             lambda: (torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 5, 9, 99]),
                      torch.tensor([0, 1, 2, 3])),
             lambda m, b: m.unet(*b)),
    "seq2seq": ({"vocab_size": 30},
                lambda: {k: torch.randint(4, 30, (3, 10), generator=torch.Generator().manual_seed(i))
                         for i, k in enumerate(("src", "tgt"))},
                lambda m, b: m.forward_logits(b["src"], b["tgt"])),
    "textclf": ({"vocab_size": 30, "num_classes": 3},
                lambda: {"ids": torch.randint(4, 30, (3, 12), generator=torch.Generator().manual_seed(1))},
                lambda m, b: m.forward_logits(b["ids"])[0]),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_adapters_start_as_identity_and_merge_exactly(family):
    fields, batch, out = FAMILIES[family]
    model, cfg = _family(family, **fields)
    b = batch()
    with torch.no_grad():
        before = out(model, b)
        names = apply_lora(model, 4, 8.0, targets=type(model).ADAPTER_TARGETS)  # scale 2
        assert names and torch.equal(out(model, b), before)   # zero B: the base model exactly
        _randomise_adapters(model)
        adapted = out(model, b)
        assert not torch.allclose(adapted, before, atol=1e-4)  # the adapters now do something
        plain = registry.build(family, cfg).eval()
        plain.load_state_dict(merged_state(model))              # W + alpha/r B A, adapter keys dropped
        assert torch.allclose(out(plain, b), adapted, atol=1e-4)


def test_conv_layers_adapted_in_the_unet_and_tied_head_left_alone():
    ddpm, _ = _family("ddpm", in_channels=1, image_size=8)
    names = apply_lora(ddpm, 2, targets=type(ddpm).ADAPTER_TARGETS)
    assert any(isinstance(ddpm.get_submodule(n), LoRAConv2d) for n in names)
    assert any(isinstance(ddpm.get_submodule(n), LoRALinear) for n in names)  # attention projections
    gpt, _ = _family("gpt", vocab_size=30)
    names = apply_lora(gpt, 2, targets=(nn.Linear,))
    tied = [n for n, m in gpt.named_modules() if isinstance(m, nn.Linear) and m.weight is gpt.tok_emb.weight]
    assert tied and not set(tied) & set(names)


def test_freeze_trains_only_adapters_and_kept_tensors():
    model, _ = _family("textclf", vocab_size=30, num_classes=3)
    apply_lora(model, 2, targets=(nn.Linear,), skip=("head",))
    freeze_base(model, keep=("head.",))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable)


def test_bad_rank_is_a_clear_error():
    model, _ = _family("gpt", vocab_size=30)
    with pytest.raises(Exception, match="adapter.rank=0"):
        apply_lora(model, 0)
