"""PEFT 0.21.2 is the oracle for GLoRA: to_peft/from_peft logits for both published configs and every path kind on a
model with biases, trainable counts (PEFT's and its published Llama-3.2-3B counts), bad inputs, 4/8-bit bases, decode
freshness, and a training run against PEFT's loss curve."""
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import (train_steps, logits, perturb_adapter, trainable, llama32_3b, to_peft_matches, from_peft_matches, assert_peft_round_trip,
                      assert_quant_ok, assert_trains_like_peft, assert_decode_fresh)
from realistic import realistic_qwen3

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]
PUBLISHED = [dict(r=8), dict(r=8, config_A_B="vector", config_C="vector")]   # glora/llama-3.2-3B-default, -vector-paths
BIASED = [dict(r=4, config_D_E="vector"), dict(r=4, config_A_B="constant", config_C="vector", config_D_E="constant"),
          dict(r=4, config_A_B="none", config_C="lora", config_D_E="vector")]
CASES = [(kw, False) for kw in PUBLISHED] + [(kw, True) for kw in BIASED + PUBLISHED[:1]]
ids_of = lambda c: f"{c[0]}-bias" if c[1] else str(c[0])


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_to_peft_reproduces_our_logits(ids, tmp_path, case):
    kw, bias = case
    base = tiny_qwen3(attention_bias=bias); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.GloraConfig(**kw)); train_steps(model, ids)
    mine = logits(model, ids)
    assert (mine - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"GLoRA {kw} bias={bias}")
    assert pc["peft_type"] == "GLORA" and pc["config_A_B"] == kw.get("config_A_B", "lora")


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, case):
    kw, bias = case
    pm = peft.get_peft_model(tiny_qwen3(attention_bias=bias), peft.GloraConfig(target_modules=QV, **kw))
    perturb_adapter(pm, std=0.1)
    make = lambda: tiny_qwen3(attention_bias=bias)
    base, cfg = from_peft_matches(pm, make, ids, tmp_path / "p", f"GLoRA {kw} bias={bias}")
    assert isinstance(cfg, ll.GloraConfig) and cfg.config_C == kw.get("config_C", "lora")
    assert_peft_round_trip(base, make, ids, tmp_path / "q")


@pytest.mark.parametrize("case", CASES, ids=ids_of)
def test_trainable_count_equals_peft(case):
    kw, bias = case
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, attention_bias=bias)
    with torch.device("meta"): m, m2 = Qwen3ForCausalLM(c), Qwen3ForCausalLM(c)
    ll.attach(m, ll.GloraConfig(**kw))
    pm = peft.get_peft_model(m2, peft.GloraConfig(target_modules=QV, **kw))
    assert trainable(m) == trainable(pm)


@pytest.mark.parametrize("kw,published", zip(PUBLISHED, [4_587_520, 229_376]), ids=str)
def test_llama_3b_count_is_peft_published(kw, published):
    m = llama32_3b(); ll.attach(m, ll.GloraConfig(**kw))
    assert trainable(m) == published


@pytest.mark.parametrize("field,value", [("r", 0), ("config_A_B", "full"), ("config_C", "constant"),
                                         ("config_D_E", "lora"), ("init_weights", "no")])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.GloraConfig(**{field: value})


def test_export_refuses_per_layer_ranks(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.GloraConfig(r=4, rank_pattern={"v_proj": 2}))
    with pytest.raises(ValueError, match="one r"): ll.to_peft(m, tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("kw", PUBLISHED, ids=str)
@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_bases(quant, kw):
    pytest.importorskip("bitsandbytes")
    assert_quant_ok(ll.GloraConfig(**kw, target_names=("proj",)), quant, f"GLoRA {kw}", attention_bias=True)


@pytest.mark.parametrize("kw", PUBLISHED, ids=str)
def test_trains_like_peft(kw):
    "From PEFT's own init, six AdamW steps on a model with a trained-like spectrum give PEFT's loss curve."
    assert_trains_like_peft(peft.GloraConfig(target_modules=QV, **kw), f"GLoRA {kw}", lr=1e-2)


def test_trains_like_peft_with_bias_paths():
    make = lambda: realistic_qwen3(attention_bias=True)
    assert_trains_like_peft(peft.GloraConfig(r=4, config_D_E="vector", target_modules=QV), "GLoRA bias paths", make_model=make, lr=1e-2)


def test_decode_outputs_are_fresh(ids):
    "The cached ΔW and Δb are reused at inference, rebuilt after a parameter changes; under autograd nothing is cached (training: x(W + ΔW)ᵀ, PEFT's one product)."
    m = tiny_qwen3(attention_bias=True); ll.attach(m, ll.GloraConfig(r=4)); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    assert_decode_fresh(m, ids, layer.A_Xd, layer.C_Xd, moved=1e-4, exact=False)
