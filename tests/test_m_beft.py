"PEFT 0.21.2 is the oracle for BEFT: to_peft/from_peft logits, counts (and the published 28,672), training, merged export of a bias-less layer."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged, logits, trainable, llama32_3b, to_peft_matches, from_peft_matches, assert_peft_round_trip, curves_match_peft

peft = pytest.importorskip("peft")
TOL = 1e-5
CASES = [dict(target_modules=["v_proj"]), dict(target_modules=["q_proj", "v_proj", "down_proj"], init_weights=False)]


def _ours(kw): return ll.BEFTConfig(target_names=kw["target_modules"], init_weights=kw.get("init_weights", True))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw, bias):
    base = tiny_qwen3(attention_bias=bias); model = copy.deepcopy(base)
    ll.attach(model, _ours(kw))
    with torch.no_grad():
        for l in ll.adapter_layers(model).values(): l.beta.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    ours = logits(model, ids)
    assert (ours - logits(base, ids)).abs().max() > 1e-2, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"BEFT {kw} bias={bias}")
    assert pc["peft_type"] == "BEFT" and sorted(pc["target_modules"]) == sorted(ll.adapter_layers(model))


@pytest.mark.parametrize("kw", CASES, ids=range(len(CASES)))
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    torch.manual_seed(0)
    pm = peft.get_peft_model(tiny_qwen3(), peft.BeftConfig(**kw))
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    base, cfg = from_peft_matches(pm, tiny_qwen3, ids, tmp_path / "p", f"BEFT {kw}")
    assert isinstance(cfg, ll.BEFTConfig) and cfg.init_weights == kw.get("init_weights", True)
    assert_peft_round_trip(base, tiny_qwen3, ids, tmp_path / "q")


def test_trainable_count_equals_peft_and_published():
    "PEFT's beft/llama-3.2-3B-target-v_proj: 28,672 trainable parameters (its result file)."
    ours = llama32_3b(); ll.attach(ours, ll.get_config("beft", **{k: v for k, v in ll.BEFT.bench.items() if k != "lr"}))
    pc = json.loads('{"init_weights": true, "target_modules": ["v_proj"]}')   # the experiment's adapter_config.json
    pm = peft.get_peft_model(llama32_3b(), peft.BeftConfig(**pc))
    print(f"BEFT trainable on Llama-3.2-3B: ours {trainable(ours):,} PEFT {trainable(pm):,}")
    assert trainable(ours) == trainable(pm) == 28_672


def test_training_equals_peft(ids):
    "Five AdamW steps from PEFT's zero init: the same losses and logits (tiny Qwen3 without attention biases)."
    base = tiny_qwen3(hidden=128)
    ours, theirs = copy.deepcopy(base), peft.get_peft_model(copy.deepcopy(base), peft.BeftConfig(target_modules=["v_proj"]))
    ll.attach(ours, ll.BEFTConfig())
    a, b = curves_match_peft(ours, theirs, ids, "BEFT", rtol=1e-6)   # 5 AdamW steps each
    assert (a - b).abs().max() <= TOL


def test_merged_export_of_a_bias_less_layer(ids, tmp_path):
    "merged_state_dict adds v_proj.bias; save_merged refuses (nothing written, model unchanged); a biased twin reproduces the logits."
    m = tiny_qwen3(); ll.attach(m, ll.BEFTConfig())
    with torch.no_grad():
        for l in ll.adapter_layers(m).values(): l.beta.normal_(0, 0.5)
    y = logits(m, ids)
    sd = ll.merged_state_dict(m)
    assert {k for k in sd if k.endswith(".bias")} == {f"model.layers.{i}.self_attn.v_proj.bias" for i in range(2)}
    snap = snapshot(m)
    with pytest.raises(ValueError, match="adds a bias to model.layers.0.self_attn.v_proj"): ll.save_merged(m, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    assert_unchanged(m, snap)
    twin = tiny_qwen3(attention_bias=True)
    missing, unexpected = twin.load_state_dict(sd, strict=False)
    assert unexpected == [] and all(k.endswith(("q_proj.bias", "k_proj.bias", "o_proj.bias")) for k in missing)
    with torch.no_grad():
        for k in missing: twin.get_parameter(k).zero_()
    assert (logits(twin, ids) - y).abs().max() <= TOL


def test_merged_export_of_a_biased_layer_is_exact(ids, tmp_path):
    from transformers import AutoModelForCausalLM
    m = tiny_qwen3(attention_bias=True); ll.attach(m, ll.BEFTConfig())
    with torch.no_grad():
        for l in ll.adapter_layers(m).values(): l.beta.normal_(0, 0.5)
    ll.save_merged(m, tmp_path)
    assert (logits(AutoModelForCausalLM.from_pretrained(tmp_path), ids) - logits(m, ids)).abs().max() <= TOL


def test_conv1d_export_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=16))
    ll.attach(m, ll.BEFTConfig(target_names=["c_attn"]))
    with pytest.raises(ValueError, match="only nn.Linear"): ll.to_peft(m, tmp_path)


def test_bad_config_is_named_and_model_unchanged():
    with pytest.raises(ValueError, match="init_weights"): ll.BEFTConfig(init_weights=1)
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError): ll.attach(m, ll.BEFTConfig(target_names=["no_such_layer"]))
    assert_unchanged(m, snap)
