"""PEFT 0.21.2 is the oracle for MiSS (default, mini and Bat): to_peft/from_peft logits, parameter counts, bad inputs, decode
freshness; Bat (reads W every forward) also on 4/8-bit bases and in a training run against PEFT's loss curve."""
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged
from realistic import peft_vs_ours_curves, quant_check

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CASES = [dict(r=8), dict(r=12), dict(r=8, init_weights="mini", mini_r=4), dict(r=8, init_weights="bat"),
         dict(r=16, init_weights="bat")]   # r=12: 64 % 12 != 0, the padded last shard


def _train(model, ids, steps=3):
    "A few AdamW steps so nothing in the adapter is trivially zero; returns the logits after."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, ll.MissConfig(**kw))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "MISS" and pc["r"] == kw["r"] and pc["init_weights"] == kw.get("init_weights", True)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"MiSS {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(tiny_qwen3(), peft.MissConfig(target_modules=QV, **kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.MissConfig) and cfg.init_weights == kw.get("init_weights", True)
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"MiSS {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        assert torch.equal(a.B, b.B), n
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("kw", [dict(r=64), dict(r=64, init_weights="mini", mini_r=64), dict(r=64, init_weights="bat")], ids=str)
def test_trainable_count_equals_peft(kw):
    m = _qwen06b_block(); ll.attach(m, ll.MissConfig(**kw))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.MissConfig(target_modules=QV, **kw))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"MiSS {kw} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == (64 * (2048 + 1024) if "mini_r" not in kw else 2 * 64 * 64)


@pytest.mark.parametrize("field,value", [("r", 0), ("r", 2.5), ("miss_dropout", 1.0), ("miss_dropout", -0.1),
                                         ("mini_r", 0), ("init_weights", "lora")])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.MissConfig(**{field: value})


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
    m = tiny_qwen3(); ll.attach(m, ll.MissConfig(**kw)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    c = m(ids).logits.detach()                                             # under autograd: nothing can be cached
    assert torch.equal(a, b) and torch.equal(a, c)
    with torch.no_grad():
        layer.B.add_(0.5)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    assert torch.equal(d, m(ids).logits.detach())
