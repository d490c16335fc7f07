"PEFT 0.21.2 is the oracle for C3A: to_peft/from_peft logits, parameter counts, bad inputs, decode caching."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
# tiny_qwen3(): q_proj 64->64, v_proj 64->32
CASES = [dict(block_size=16), dict(block_size=32, block_size_pattern={"v_proj": 8}), dict(block_size=16, init_weights=True)]


def _train(model, ids, steps=3):
    "A few AdamW steps at PEFT's C3A learning rate (ΔW is divided by d_in); returns the logits after."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.3)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, ll.C3AConfig(**kw))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "C3A" and pc["block_size"] == kw["block_size"]
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    sizes = {n: m.block_size["default"] for n, m in pm.named_modules() if hasattr(m, "c3a_kernel")}
    assert sorted(set(sizes.values())) == sorted({kw["block_size"], *kw.get("block_size_pattern", {}).values()})
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"C3A {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", [dict(block_size=16), dict(block_size=16, block_size_pattern={"v_proj": 8})], ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(tiny_qwen3(), peft.C3AConfig(target_modules=QV, **kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(2.0 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.C3AConfig)
    theirs_b = {n.removeprefix("base_model.model."): m.block_size["default"] for n, m in pm.named_modules() if hasattr(m, "c3a_kernel")}
    assert {n: l.r for n, l in ll.adapter_layers(base).items()} == theirs_b
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"C3A {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        assert torch.equal(a.kernel, b.kernel), n
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("kw", [dict(block_size=64), dict(block_size=256, block_size_pattern={"v_proj": 128})], ids=str)
def test_trainable_count_equals_peft(kw):
    m = _qwen06b_block(); ll.attach(m, ll.C3AConfig(**kw))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.C3AConfig(target_modules=QV, **kw))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"C3A {kw} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    bv = kw.get("block_size_pattern", {}).get("v_proj", kw["block_size"])
    assert ours == theirs == 1024 * 2048 // kw["block_size"] + 1024 * 1024 // bv


@pytest.mark.parametrize("kw,field", [(dict(block_size=0), "block_size"), (dict(block_size=2.0), "block_size"),
                                      (dict(block_size_pattern={"q_proj": 0}), "block_size_pattern"),
                                      (dict(block_size_pattern=[16]), "block_size_pattern"),
                                      (dict(init_weights="orthogonal"), "init_weights"),
                                      (dict(rank_pattern={"q_proj": 8}), "block_size_pattern")])
def test_bad_config_values_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field): ll.C3AConfig(**kw)


@pytest.mark.parametrize("kw,layer", [(dict(block_size=64), "model.layers.0.self_attn.v_proj"),          # v_proj is 64->32
                                      (dict(block_size=16, block_size_pattern={"q_proj": 48}), "model.layers.0.self_attn.q_proj")])
def test_layer_that_cannot_take_it_is_named_and_model_unchanged(kw, layer):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="must divide both widths") as e: ll.attach(m, ll.C3AConfig(**kw))
    assert layer in str(e.value)
    assert_unchanged(m, snap)


def test_default_attaches_to_widths_multiple_of_64(ids):
    m = tiny_qwen3(hidden=128)                                             # v_proj 128->64
    names = ll.attach(m, ll.C3AConfig())
    assert len(names) == 4 and all(l.r == 64 for l in ll.adapter_layers(m).values())


def test_decode_caches_the_kernel_fft_and_is_never_stale(ids):
    m = tiny_qwen3(); ll.attach(m, ll.C3AConfig(block_size=16)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    calls, fft = [], type(layer).kernel_fft
    layer.kernel_fft = lambda: (calls.append(1), fft(layer))[1]
    with torch.no_grad():
        layer.kernel.add_(0.0)                                             # an in-place write: the cached FFT is stale
        a, b = m(ids).logits, m(ids).logits
    assert len(calls) == 1, "the kernel's FFT was recomputed while decoding"
    c = m(ids).logits.detach()                                             # under autograd: fresh, never cached
    assert len(calls) == 2 and torch.equal(a, b) and torch.equal(a, c)
    with torch.no_grad():
        layer.kernel.add_(1.0)
        d = m(ids).logits
    assert len(calls) == 3 and (d - a).abs().max() > 1e-3
    assert torch.equal(d, m(ids).logits.detach())
