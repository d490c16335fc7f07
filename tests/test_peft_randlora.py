"PEFT 0.21.2 is the oracle for RandLoRA: shared bases, to_peft/from_peft logits, parameter counts, bad inputs, decode freshness."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


def _train(model, ids, steps=3):
    "A few AdamW steps so nothing in the adapter is trivially zero; returns the logits after."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    with torch.no_grad(): return model(ids).logits



def _peft_bases(pm):
    return pm.base_model.randlora_A["default"], pm.base_model.randlora_B["default"]


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=6, projection_prng_key=3), dict(r=8, sparse=True), dict(r=8, very_sparse=True)], ids=str)
def test_bases_equal_peft_bit_for_bit(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.RandLoraConfig(target_modules=QV, **kw))
    A, B = _peft_bases(pm)
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(**kw))
    assert torch.equal(m.ll_shared.A, A) and torch.equal(m.ll_shared.B, B)      # stored once, in PEFT's shapes
    for n, l in ll.adapter_layers(m).items():
        a, b = l.slices(A, B)
        assert torch.equal(l.A, a) and torch.equal(l.B, b), n
        pl = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.gamma, pl.randlora_gamma["default"]) and l.lam.shape == pl.randlora_lambda["default"].shape, n


CASES = [dict(r=8), dict(r=6, randlora_alpha=12, save_projection=False), dict(r=8, sparse=True, projection_prng_key=2)]

def _ours(kw):
    "PEFT's field names -> ours (PEFT's randlora_alpha is our alpha)."
    kw = dict(kw); kw["alpha"] = kw.pop("randlora_alpha", 640); return kw


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, ll.RandLoraConfig(**_ours(kw)))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "RANDLORA" and pc["r"] == kw["r"] and pc["randlora_alpha"] == kw.get("randlora_alpha", 640)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"RandLoRA {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(tiny_qwen3(), peft.RandLoraConfig(target_modules=QV, **kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.02 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.RandLoraConfig) and cfg.r == kw["r"] and cfg.alpha == kw.get("randlora_alpha", 640)
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"RandLoRA {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for k, t in a.state_dict().items(): assert torch.equal(t, b.state_dict()[k]), (n, k)
    for k, t in base.ll_shared.state_dict().items(): assert torch.equal(t, fresh.ll_shared.state_dict()[k]), k
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


def test_trainable_count_equals_peft():
    m = _qwen06b_block(); ll.attach(m, ll.RandLoraConfig(r=32))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.RandLoraConfig(r=32, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"RandLoRA r=32 trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == 2 * (32 * 32 + 32 * 1024)


@pytest.mark.parametrize("field,value", [("r", 0), ("projection_prng_key", -1), ("save_projection", "yes"), ("sparse", 1),
                                         ("very_sparse", None), ("randlora_dropout", 1.0), ("alpha", float("nan")),
                                         ("rank_pattern", {"q_proj": 8}), ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.RandLoraConfig(**{field: value})


def test_adapter_for_other_widths_is_refused_and_model_unchanged(tmp_path):
    "RandLoRA takes any layer width; what can fail is a PEFT file made for another model: one clear error, model untouched."
    pm = peft.get_peft_model(tiny_qwen3(hidden=64), peft.RandLoraConfig(r=8, target_modules=QV))
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(hidden=128); snap = snapshot(m)
    with pytest.raises(ValueError, match="shape"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_export_refuses_bases_not_from_the_seed(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.B[0, 0] += 1
    assert all(l.B.data_ptr() == m.ll_shared.B.data_ptr() for l in ll.adapter_layers(m).values())   # every layer's view of one copy
    with pytest.raises(ValueError, match="projection_prng_key=0"): ll.to_peft(m, tmp_path / "p")


def test_decode_caches_dense_delta_and_stays_fresh(ids):
    "At inference the hook applies the cached dense ΔW (smaller than U and B when rN ≈ m); it equals the factored training path."
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    assert layer.N * layer.r * (layer.d_in + layer.d_out) > layer.d_in * layer.d_out   # the dense form is the smaller one
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    assert "dW" in ll.cached_values(layer) and "U" not in ll.cached_values(layer)
    c = m(ids).logits.detach()                                             # under autograd: the factors, computed fresh
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)                    # dense ΔW == factors up to summation order
    with torch.no_grad():
        layer.gamma.add_(0.5)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    torch.testing.assert_close(d, m(ids).logits.detach(), atol=1e-5, rtol=0)
