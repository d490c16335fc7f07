"""MiSS beyond the PEFT table (test_peft.py: to_peft/from_peft logits and round trips of the plain, padded, mini and Bat
modes, counts, bad values): Bat's published count, its refusals and quirks, quantized bases, training, decode freshness."""
import pytest
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import train_steps, trainable, llama32_3b, assert_quant_ok, assert_trains_like_peft, assert_attach_refused, assert_decode_fresh

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


def test_bat_with_dropout_is_refused():
    with pytest.raises(ValueError, match="miss_dropout"): ll.MissConfig(init_weights="bat", miss_dropout=0.1)


@pytest.mark.parametrize("kw,phrase", [(dict(r=128), "wider than"), (dict(r=8, init_weights="mini", mini_r=3), "mini_r=3"),
                                         (dict(r=24, init_weights="bat"), "must divide")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    assert_attach_refused(ll.MissConfig(**kw), phrase)


def test_llama_3b_bat_count_is_peft_published():
    "PEFT's published trainable count for miss/llama-3.2-3B-bat (r=64, q_proj and v_proj of 28 blocks): 7,340,032."
    m = llama32_3b(); ll.attach(m, ll.MissConfig(r=64, init_weights="bat"))
    assert trainable(m) == 7_340_032


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_bat_on_quantized_bases(quant):
    pytest.importorskip("bitsandbytes")
    assert_quant_ok(ll.MissConfig(r=16, init_weights="bat", target_names=("proj",)), quant, "MiSS-Bat", attention_bias=True)


def test_bat_trains_like_peft():
    "From PEFT's own init, six AdamW steps on a model with a trained-like spectrum give PEFT's loss curve."
    assert_trains_like_peft(peft.MissConfig(r=8, init_weights="bat", target_modules=QV), "MiSS-Bat", lr=1e-2)


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=8, init_weights="bat")], ids=str)
def test_decode_outputs_are_fresh(ids, kw):
    m = tiny_qwen3(); ll.attach(m, ll.MissConfig(**kw)); train_steps(m, ids, steps=1)
    assert_decode_fresh(m, ids, ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"].B)   # under autograd: nothing can be cached
