"PEFT 0.21.2 is the oracle for RoAd: to_peft/from_peft logits (all variants, biased layers), training steps, counts, bad inputs, decode cache."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import snapshot, assert_unchanged

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CONFIGS = [dict(), dict(road_variant="road_2", group_size=32), dict(road_variant="road_4", group_size=16),
           dict(road_variant="road_1", group_size=8, bias=True), dict(road_variant="road_4", group_size=64, bias=True)]


def _split(kw):
    "(our RoadConfig, PEFT's RoadConfig, model kwargs) for a case."
    kw = dict(kw); bias = kw.pop("bias", False)
    c = ll.RoadConfig(**kw)
    return c, peft.RoadConfig(variant=c.road_variant, group_size=c.group_size, target_modules=QV), dict(hidden=128, attention_bias=bias)


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
    cfg, _, mk = _split(kw)
    base = tiny_qwen3(**mk); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, cfg)
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "ROAD" and pc["variant"] == cfg.road_variant and pc["group_size"] == cfg.group_size
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"RoAd {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    cfg, pcfg, mk = _split(kw)
    pm = peft.get_peft_model(tiny_qwen3(**mk), pcfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.2 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    base = tiny_qwen3(**mk)
    got = ll.from_peft(base, tmp_path / "p")
    assert isinstance(got, ll.RoadConfig) and (got.road_variant, got.group_size) == (cfg.road_variant, cfg.group_size)
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"RoAd {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(**mk); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for k, t in a.state_dict().items(): assert torch.equal(t, b.state_dict()[k]), (n, k)
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


@pytest.mark.parametrize("kw", [dict(road_variant="road_2", group_size=32), dict(road_variant="road_4", group_size=16, bias=True)], ids=str)
def test_training_steps_match_peft(ids, kw):
    "Same init (identity), same AdamW steps: the logits stay equal (the gradients are PEFT's too)."
    cfg, pcfg, mk = _split(kw)
    ours_m, theirs_m = tiny_qwen3(**mk), peft.get_peft_model(tiny_qwen3(**mk), pcfg)
    ll.attach(ours_m, cfg)
    ours, theirs = _train(ours_m, ids, steps=4), _train(theirs_m, ids, steps=4)
    with torch.no_grad(), theirs_m.disable_adapter(): plain = theirs_m(ids).logits
    assert (theirs - plain).abs().max() > 1e-2
    d = (ours - theirs).abs().max().item()
    print(f"RoAd {kw} after 4 AdamW steps each, max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


@pytest.mark.parametrize("v,expected", [("road_1", 3072), ("road_2", 6144), ("road_4", 12288)])
def test_trainable_count_equals_peft(v, expected):
    m = _qwen06b_block(); ll.attach(m, ll.RoadConfig(road_variant=v))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.RoadConfig(variant=v, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"RoAd {v} trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == expected


@pytest.mark.parametrize("field,value", [("road_variant", "road_3"), ("road_variant", 1), ("group_size", 3), ("group_size", 0),
                                         ("group_size", 8.0), ("group_size", True), ("rank_pattern", {"q_proj": 8}),
                                         ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.RoadConfig(**{field: value})


def test_layer_the_groups_do_not_tile_is_refused_and_model_unchanged():
    m = tiny_qwen3(hidden=128); snap = snapshot(m)                          # v_proj: 128 -> 64
    with pytest.raises(ValueError, match="group_size=128 does not divide model.layers.0.self_attn.v_proj"):
        ll.attach(m, ll.RoadConfig(group_size=128))
    assert_unchanged(m, snap)


def test_peft_adapter_for_other_widths_is_refused(tmp_path):
    pm = peft.get_peft_model(tiny_qwen3(hidden=128), peft.RoadConfig(group_size=64, target_modules=QV))
    pm.save_pretrained(tmp_path / "p")
    m = tiny_qwen3(hidden=192); snap = snapshot(m)                          # v_proj 192 -> 96: 64 doesn't divide it
    with pytest.raises(ValueError, match="group_size=64"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_decode_cache_is_used_and_fresh(ids):
    m = tiny_qwen3(hidden=128); ll.attach(m, ll.RoadConfig(road_variant="road_4", group_size=16)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): layer.theta.mul_(1.0)                             # an in-place write: the cached c is stale now
    calls = []
    layer.coefficients = lambda f=layer.coefficients: calls.append(1) or f()
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    assert len(calls) == 1, "the coefficients were rebuilt although no parameter changed"
    c = m(ids).logits.detach()                                              # autograd path: never cached
    assert torch.equal(a, b) and torch.equal(a, c) and len(calls) == 2
    with torch.no_grad():
        layer.alpha.add_(0.1)
        d = m(ids).logits
    assert len(calls) == 3 and (d - a).abs().max() > 1e-4
    assert torch.equal(d, m(ids).logits.detach())
