"PEFT 0.21.2 is the oracle for OFT: to_peft/from_peft logits, training steps (COFT's projection), counts, bad inputs, decode cache."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CONFIGS = [dict(), dict(r=4), dict(oft_block_size=16, block_share=True), dict(oft_block_size=16, coft=True, eps=0.05),
           dict(oft_block_size=8, use_cayley_neumann=False), dict(r=8, num_cayley_neumann_terms=3)]


def _peft_cfg(kw):
    "PEFT's OFTConfig for our fields (PEFT wants the other of r / oft_block_size set to 0)."
    c = ll.OFTConfig(**kw)
    return peft.OFTConfig(r=c.r, oft_block_size=c.oft_block_size, coft=c.coft, eps=c.eps, block_share=c.block_share,
                          use_cayley_neumann=c.use_cayley_neumann, num_cayley_neumann_terms=c.num_cayley_neumann_terms,
                          target_modules=QV)


def _train(model, ids, steps=3, lr=1e-2):
    "A few AdamW steps; returns the logits after (no grad)."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, ll.OFTConfig(**kw))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-3, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "OFT" and sorted(pc["target_modules"]) == sorted(ll.adapter_layers(model))
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"OFT {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(tiny_qwen3(), _peft_cfg(kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-3, "the PEFT adapter is (near) identity: the test would be trivial"
    base = tiny_qwen3()
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.OFTConfig) and (cfg.r, cfg.oft_block_size, cfg.coft) == (pm.peft_config["default"].r,
                                                 pm.peft_config["default"].oft_block_size, pm.peft_config["default"].coft)
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"OFT {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for k, t in a.state_dict().items(): assert torch.equal(t, b.state_dict()[k]), (n, k)
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


@pytest.mark.parametrize("kw", [dict(oft_block_size=16), dict(oft_block_size=16, coft=True, eps=0.05)], ids=str)
def test_training_steps_match_peft(ids, kw):
    "Same init (R = I), same steps: the logits stay equal, so COFT's in-place projection acts as PEFT's does."
    ours_m, theirs_m = tiny_qwen3(), peft.get_peft_model(tiny_qwen3(), _peft_cfg(kw))
    ll.attach(ours_m, ll.OFTConfig(**kw))
    ours, theirs = _train(ours_m, ids, steps=4), _train(theirs_m, ids, steps=4)
    with torch.no_grad(), theirs_m.disable_adapter(): plain = theirs_m(ids).logits
    assert (theirs - plain).abs().max() > 1e-3
    d = (ours - theirs).abs().max().item()
    print(f"OFT {kw} after 4 AdamW steps each, max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("kw,expected", [(dict(r=32), 2 * 32 * 496), (dict(), 2 * 32 * 496),
                                         (dict(oft_block_size=64, block_share=True), 2 * 2016)], ids=str)
def test_trainable_count_equals_peft(kw, expected):
    m = _qwen06b_block(); ll.attach(m, ll.OFTConfig(**kw))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), _peft_cfg(kw))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"OFT {kw} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == expected


@pytest.mark.parametrize("field,value", [("r", -1), ("r", 2.0), ("oft_block_size", -4), ("oft_block_size", 0), ("coft", "yes"),
                                         ("eps", -1e-3), ("eps", float("nan")), ("block_share", 1), ("use_cayley_neumann", None),
                                         ("num_cayley_neumann_terms", 0), ("rank_pattern", {"q_proj": 8}),
                                         ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.OFTConfig(**{field: value})


def test_r_and_block_size_together_are_refused():
    with pytest.raises(ValueError, match="exactly one of r"): ll.OFTConfig(r=4, oft_block_size=16)


@pytest.mark.parametrize("kw,phrase", [(dict(oft_block_size=48), "oft_block_size=32"), (dict(r=5), "r=4"), (dict(r=64), "size 1")], ids=str)
def test_layer_the_blocks_do_not_tile_is_refused_and_model_unchanged(kw, phrase):
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, ll.OFTConfig(**kw))
    assert "model.layers.0.self_attn.q_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_peft_adapter_with_adjusted_block_size_is_refused(tmp_path):
    "PEFT silently changes a block size that doesn't divide d_in (48 -> 32 on 64 features); we refuse that file clearly."
    with pytest.warns(UserWarning, match="Adjusted"):
        pm = peft.get_peft_model(tiny_qwen3(), peft.OFTConfig(r=0, oft_block_size=48, target_modules=QV))
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="would silently switch"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


@pytest.mark.parametrize("kw", [dict(oft_block_size=16), dict(oft_block_size=16, coft=True, eps=0.05)], ids=str)
def test_decode_cache_is_used_and_fresh(ids, kw):
    m = tiny_qwen3(); ll.attach(m, ll.OFTConfig(**kw)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): layer.q.mul_(1.0)                                # an in-place write: the cached R is stale now
    calls = []
    layer.rotation = lambda f=layer.rotation: calls.append(1) or f()      # count the parameter-only work
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    assert len(calls) == 1, "R was rebuilt although no parameter changed"
    c = m(ids).logits.detach()                                             # autograd path: never cached
    assert torch.equal(a, b) and torch.equal(a, c) and len(calls) == 2
    with torch.no_grad():
        layer.q.add_(0.05)
        d = m(ids).logits
    assert len(calls) == 3 and (d - a).abs().max() > 1e-4
    assert torch.equal(d, m(ids).logits.detach())
