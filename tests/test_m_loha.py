"LoHa beyond the PEFT table (test_peft.py): PEFT's init bounds, PEFT's convolution option refused."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3


def test_init_matches_peft_bounds():
    "Same init as PEFT: A₁, B₁, B₂ Kaiming-uniform with PEFT's fan-ins, A₂ = 0."
    m = tiny_qwen3(); ll.attach(m, ll.LoHaConfig(r=4))
    for l in ll.adapter_layers(m).values():
        assert torch.equal(l.A2, torch.zeros_like(l.A2))
        for t, fan_in in ((l.A1, l.d_in), (l.B1, l.r), (l.B2, l.r)):
            assert t.abs().max() <= 1 / fan_in ** 0.5 and t.abs().max() > 0.5 / fan_in ** 0.5


def test_peft_conv_option_refused():
    "A PEFT LoHa made for convolutions (use_effective_conv2d, hada_t1/t2 tensors) is refused with a clear error."
    with pytest.raises(ValueError, match="use_effective_conv2d"):
        ll.LoHa.peft_import({"r": 4, "use_effective_conv2d": True}, {"x": (64, 64)}, {"base_model.model.x.hada_t1": torch.zeros(1)}, torch.float32)
