"HRA beyond the PEFT table (test_peft.py): PEFT's paired init (identity), odd ranks and too-wide Gram-Schmidt refused."
import pytest, torch
import lora_lite as ll
from conftest import snapshot, assert_unchanged


def test_hra_init_is_identity_and_peft_like(qwen, ids):
    with torch.no_grad(): y0 = qwen(ids).logits
    ll.attach(qwen, ll.HRAConfig(r=8))
    with torch.no_grad(): assert (qwen(ids).logits - y0).abs().max() <= 1e-5
    U = ll.adapter_layers(qwen)["model.layers.0.self_attn.q_proj"].U
    assert torch.equal(U[0::2], U[1::2])                      # pairs
    assert U.abs().max() <= 1 / (8 / 2) ** 0.5 + 1e-6          # PEFT's Kaiming bound for a (d_in, r/2) tensor


def test_hra_odd_r_is_a_clear_error(qwen):
    with pytest.raises(ValueError, match="r must be even"): ll.HRAConfig(r=3)
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match="r must be even"):       # one layer's rank from a pattern
        ll.attach(qwen, ll.HRAConfig(r=4, rank_pattern={"v_proj": 5}))
    assert_unchanged(qwen, snap)
    with pytest.raises(ValueError, match="don't fit"): ll.attach(qwen, ll.HRAConfig(r=65, apply_GS=True))
    assert_unchanged(qwen, snap)
