"LoKr beyond the PEFT table (test_peft.py): PEFT's factorization, PEFT's convolution tensors refused."
import pytest, torch
import lora_lite as ll

peft = pytest.importorskip("peft")


def test_factorize_matches_peft():
    from peft.tuners.lokr.layer import factorization
    for d in [1, 2, 7, 12, 30, 64, 96, 127, 128, 1000, 1024, 2048, 3072, 4096, 11008]:
        for f in [-1, 1, 2, 3, 4, 8, 16, 100]:
            assert ll.variants.lokr.factorize(d, f) == factorization(d, f), (d, f)


def test_peft_conv_option_refused():
    with pytest.raises(ValueError, match="use_effective_conv2d"):
        ll.LoKr.peft_import({"r": 4}, {"x": (64, 64)}, {"base_model.model.x.lokr_t2": torch.zeros(1)}, torch.float32)
