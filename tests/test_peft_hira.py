"HiRA against PEFT 0.21.2 (the oracle): export, import, round trip, parameter count, bad inputs, decode caching."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, perturb_adapter, train_steps, logits

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=4), dict(r=6, init_weights="gaussian", hira_dropout=0.1)])
def test_to_peft_loads_in_peft(ids, tmp_path, kw):
    base = tiny_qwen3(); fresh = copy.deepcopy(base); y0 = logits(base, ids)
    ll.attach(base, ll.HiRAConfig(**kw))
    train_steps(base, ids)
    ours = logits(base, ids)
    assert (ours - y0).abs().max() > 1e-3, "training did not move the logits: the parity test would be trivial"
    ll.to_peft(base, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "HIRA" and pc["r"] == kw["r"]
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"HiRA {kw} to_peft -> PEFT max|diff| {d:.2e}")
    assert d <= TOL


def test_per_layer_ranks_refused_at_export(tmp_path):
    "PEFT 0.21.2's HiRA builds every layer with config.r (rank_pattern ignored), so it could not load per-layer ranks."
    m = tiny_qwen3(); ll.attach(m, ll.HiRAConfig(r=4, rank_pattern={"v_proj": 2}))
    assert {l.r for l in ll.adapter_layers(m).values()} == {2, 4}
    with pytest.raises(ValueError, match="rank_pattern"): ll.to_peft(m, tmp_path / "p")


def test_from_peft_reproduces_peft_and_round_trips(ids, tmp_path):
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.HiraConfig(r=4, target_modules=QV)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad: p.add_(0.1 * torch.randn(p.shape, generator=g))
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-3
    pm.save_pretrained(tmp_path / "peft")
    a = copy.deepcopy(base)
    cfg = ll.from_peft(a, tmp_path / "peft")
    assert isinstance(cfg, ll.HiRAConfig) and cfg.r == 4 and len(ll.adapter_layers(a)) == 4
    d = (logits(a, ids) - theirs).abs().max().item()
    print(f"HiRA PEFT -> from_peft max|diff| {d:.2e}")
    assert d <= TOL
    ll.to_peft(a, tmp_path / "again")                       # round trip: from_peft(to_peft(x)) is x, exactly
    b = copy.deepcopy(base); ll.from_peft(b, tmp_path / "again")
    assert torch.equal(logits(b, ids), logits(a, ids))
    sa, sb = ({k: v for k, v in m.state_dict().items() if ".ll_adapter." in k} for m in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def qwen3_06b_block():
    "One block with Qwen3-0.6B's widths (q_proj 1024->2048, v_proj 1024->1024), small vocab."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1,
                                        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                        tie_word_embeddings=False)).eval()


def test_param_count_equals_peft():
    base = qwen3_06b_block()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.HiraConfig(r=32, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    ll.attach(base, ll.HiRAConfig(r=32))
    ours = sum(p.numel() for p in base.parameters() if p.requires_grad)
    assert ours == theirs == 4_587_520 // 28


@pytest.mark.parametrize("bad", [dict(hira_dropout=1.0), dict(hira_dropout=-0.1), dict(hira_dropout="0.1"),
                                 dict(init_weights="xavier"), dict(init_weights=None), dict(r=0)])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): ll.HiRAConfig(**bad)


def test_unreadable_layer_fails_at_attach_and_leaves_model_unchanged(monkeypatch):
    "HiRA needs W in every forward, so init reads it once: a layer whose W can't be read (e.g. a CPU-repacked 4-bit "
    "weight) fails at attach, and the model is left as it was."
    import lora_lite.variants.hira as H
    m = tiny_qwen3(); snap = snapshot(m)
    v, real = m.model.layers[1].self_attn.v_proj, H.dense_weight
    def refuse(mod):
        if mod is v: raise RuntimeError("this weight can't be read")
        return real(mod)
    monkeypatch.setattr(H, "dense_weight", refuse)
    with pytest.raises(RuntimeError, match="can't be read"): ll.attach(m, ll.HiRAConfig(r=4))
    assert_unchanged(m, snap)


def test_decode_cache_is_exact_and_never_stale(ids):
    m = tiny_qwen3(); ll.attach(m, ll.HiRAConfig(r=4)); perturb_adapter(m, std=0.1)
    fresh = lambda: m(ids).logits.detach()                 # with autograd on, ΔW is always formed anew
    ref = fresh()
    with torch.no_grad():
        y1, y2 = m(ids).logits, m(ids).logits
    assert torch.equal(y1, ref) and torch.equal(y2, ref)
    layer = next(iter(ll.adapter_layers(m).values()))
    with torch.no_grad():
        layer.B.mul_(3)                                     # in-place edit under no_grad: the cache must notice
        y3 = m(ids).logits
    ref3 = fresh()
    assert not torch.equal(ref3, ref) and torch.equal(y3, ref3)
