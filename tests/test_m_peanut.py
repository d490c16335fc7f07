"""PEFT 0.21.2 is the oracle for PEANuT: to_peft/from_peft logits for both published configs (and depth 2 with GELU),
trainable counts (PEFT's and its published Llama-3.2-3B counts), bad inputs, 4/8-bit bases, decode freshness, and a
training run against PEFT's loss curve."""
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import (train_steps, logits, perturb_adapter, trainable, llama32_3b, to_peft_matches, from_peft_matches, assert_peft_round_trip,
                      assert_quant_ok, assert_trains_like_peft, assert_decode_fresh)

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]
PUBLISHED = [dict(r=32, scaling=2.0), dict(r=1, scaling=32.0)]         # peanut/llama-3.2-3B-rank32-…-s2.0, -rank1-…-s32.0
CASES = PUBLISHED + [dict(r=4, depth=2, act_fn="gelu", scaling=1.5)]


def ours(kw):
    k = dict(kw); k["alpha"] = k.pop("scaling")
    return ll.PeanutConfig(**k)


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ours(kw)); train_steps(model, ids)
    mine = logits(model, ids)
    assert (mine - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"PEANuT {kw}")
    assert pc["peft_type"] == "PEANUT" and pc["scaling"] == kw["scaling"] and pc["depth"] == kw.get("depth", 0)


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.PeanutConfig(target_modules=QV, **kw))
    perturb_adapter(pm, std=0.1)
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"PEANuT {kw}")
    assert isinstance(cfg, ll.PeanutConfig) and cfg.alpha == kw["scaling"] and cfg.depth == kw.get("depth", 0)
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


def _block(cls, cfg_cls, device="meta", **c):
    "One decoder block of a `transformers` model on the meta device (no memory)."
    with torch.device(device): return cls(cfg_cls(vocab_size=32, num_hidden_layers=1, **c))


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_trainable_count_equals_peft(kw):
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = dict(hidden_size=1024, intermediate_size=3072, num_attention_heads=16, num_key_value_heads=8, head_dim=128)
    m = _block(Qwen3ForCausalLM, Qwen3Config, **c); ll.attach(m, ours(kw))
    pm = peft.get_peft_model(_block(Qwen3ForCausalLM, Qwen3Config, **c), peft.PeanutConfig(target_modules=QV, **kw))
    assert trainable(m) == trainable(pm)


@pytest.mark.parametrize("kw,published", zip(PUBLISHED, [7_340_032, 229_376]), ids=str)
def test_llama_3b_count_is_peft_published(kw, published):
    m = llama32_3b(); ll.attach(m, ours(kw))
    assert trainable(m) == published


@pytest.mark.parametrize("field,value", [("r", 0), ("depth", -1), ("depth", 1.5), ("act_fn", "swishy"),
                                         ("init_weights", "yes"), ("alpha_pattern", {"q": 2.0})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.PeanutConfig(**{field: value})


def test_export_refuses_per_layer_ranks(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.PeanutConfig(r=4, rank_pattern={"v_proj": 2}))
    with pytest.raises(ValueError, match="one r"): ll.to_peft(m, tmp_path / "p")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_bases(quant):
    pytest.importorskip("bitsandbytes")
    assert_quant_ok(ll.PeanutConfig(r=8, depth=1, alpha=2.0, target_names=("proj",)), quant, "PEANuT", attention_bias=True)


def test_trains_like_peft():
    "From PEFT's own init, six AdamW steps on a model with a trained-like spectrum give PEFT's loss curve."
    assert_trains_like_peft(peft.PeanutConfig(r=8, scaling=2.0, target_modules=QV), "PEANuT", lr=1e-2)


def test_decode_outputs_are_fresh(ids):
    "The cached G₀ is reused at inference, rebuilt after a parameter changes; under autograd nothing is cached."
    m = tiny_qwen3(); ll.attach(m, ll.PeanutConfig(r=8, depth=1)); train_steps(m, ids, steps=1)
    assert_decode_fresh(m, ids, ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"].A, moved=1e-4)
