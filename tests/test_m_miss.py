"""MiSS beyond the PEFT table (test_peft.py: to_peft/from_peft logits and round trips of the plain, padded, mini and Bat
modes, counts, bad values): Bat's published count, its refusals and quirks, quantized bases, training, decode freshness."""
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged, train_steps
from realistic import peft_vs_ours_curves, quant_check

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


def test_bat_with_dropout_is_refused():
    with pytest.raises(ValueError, match="miss_dropout"): ll.MissConfig(init_weights="bat", miss_dropout=0.1)


@pytest.mark.parametrize("kw,phrase", [(dict(r=128), "wider than"), (dict(r=8, init_weights="mini", mini_r=3), "mini_r=3"),
                                         (dict(r=24, init_weights="bat"), "must divide")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, ll.MissConfig(**kw))
    assert "model.layers.0.self_attn.q_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_llama_3b_bat_count_is_peft_published():
    "PEFT's published trainable count for miss/llama-3.2-3B-bat (r=64, q_proj and v_proj of 28 blocks): 7,340,032."
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=32, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                    num_key_value_heads=8, head_dim=128)
    with torch.device("meta"): m = LlamaForCausalLM(c)
    ll.attach(m, ll.MissConfig(r=64, init_weights="bat"))
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 7_340_032


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_bat_on_quantized_bases(quant):
    pytest.importorskip("bitsandbytes")
    got = quant_check(ll.MissConfig(r=16, init_weights="bat", target_names=("proj",)), quant, attention_bias=True)
    print(f"MiSS-Bat on {quant}: {got}")
    assert got["init"] == 0 and got["finite_grads"] and got["detach_exact"] and got["base_untouched"]
    assert got["effect_rel_err"] <= (1e-4 if quant == "nf4" else 1e-3)


def test_bat_trains_like_peft():
    "From PEFT's own init, six AdamW steps on a model with a trained-like spectrum give PEFT's loss curve."
    theirs, ours = peft_vs_ours_curves(peft.MissConfig(r=8, init_weights="bat", target_modules=QV), lr=1e-2)
    d = max(abs(a - b) for a, b in zip(theirs, ours))
    print(f"MiSS-Bat losses PEFT {[round(x, 5) for x in theirs]} ours max|diff| {d:.1e}")
    assert theirs[-1] < theirs[0] - 1e-3 and d <= 1e-5


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=8, init_weights="bat")], ids=str)
def test_decode_outputs_are_fresh(ids, kw):
    m = tiny_qwen3(); ll.attach(m, ll.MissConfig(**kw)); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    c = m(ids).logits.detach()                                             # under autograd: nothing can be cached
    assert torch.equal(a, b) and torch.equal(a, c)
    with torch.no_grad():
        layer.B.add_(0.5)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    assert torch.equal(d, m(ids).logits.detach())
