"PEFT 0.21.2 is the oracle for GraLoRA: to_peft/from_peft logits, parameter counts, bad inputs, decode freshness."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CASES = [dict(r=8, alpha=16), dict(r=8, alpha=12, gralora_k=4, hybrid_r=2)]


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
    ll.attach(model, ll.GraloraConfig(**kw))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "GRALORA" and pc["gralora_k"] == kw.get("gralora_k", 2) and pc["hybrid_r"] == kw.get("hybrid_r", 0)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"GraLoRA {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(tiny_qwen3(), peft.GraloraConfig(target_modules=QV, **kw))
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
    assert isinstance(cfg, ll.GraloraConfig) and (cfg.r, cfg.alpha, cfg.gralora_k, cfg.hybrid_r) == \
        (kw["r"], kw["alpha"], kw.get("gralora_k", 2), kw.get("hybrid_r", 0))
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"GraLoRA {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for (k, p), q in zip(a.named_parameters(), b.parameters()): assert torch.equal(p, q), (n, k)
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("kw", [dict(r=32, alpha=64), dict(r=32, alpha=64, gralora_k=4, hybrid_r=8)], ids=str)
def test_trainable_count_equals_peft(kw):
    m = _qwen06b_block(); ll.attach(m, ll.GraloraConfig(**kw))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.GraloraConfig(target_modules=QV, **kw))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"GraLoRA {kw} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == (32 + kw.get("hybrid_r", 0)) * (1024 + 2048 + 1024 + 1024)


@pytest.mark.parametrize("kw,field", [(dict(r=0), "r"), (dict(gralora_k=0), "gralora_k"), (dict(hybrid_r=-1), "hybrid_r"),
                                      (dict(gralora_dropout=1.0), "gralora_dropout"), (dict(init_weights="yes"), "init_weights"),
                                      (dict(alpha=float("inf")), "alpha"), (dict(r=6, gralora_k=4), "gralora_k")])
def test_bad_config_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field): ll.GraloraConfig(**kw)


@pytest.mark.parametrize("kw,phrase", [(dict(r=6, gralora_k=3), "must divide both widths"),
                                       (dict(r=8, gralora_k=4, rank_pattern={"q_proj": 6}), "not divisible")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, phrase):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, ll.GraloraConfig(**kw))
    assert "model.layers.0.self_attn.q_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_export_refuses_per_layer_ranks(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.GraloraConfig(r=8, rank_pattern={"q_proj": 4}))
    with pytest.raises(ValueError, match="one r and one alpha"): ll.to_peft(m, tmp_path / "p")


def test_decode_outputs_are_fresh(ids):
    m = tiny_qwen3(); ll.attach(m, ll.GraloraConfig(r=8, hybrid_r=2)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    c = m(ids).logits.detach()                                             # under autograd: nothing can be cached
    assert torch.equal(a, b) and torch.equal(a, c)
    with torch.no_grad():
        layer.B.add_(0.5)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    assert torch.equal(d, m(ids).logits.detach())
