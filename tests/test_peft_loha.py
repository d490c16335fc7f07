"LoHa against PEFT 0.21.2 (the oracle): export, import, round trip, parameter count, bad inputs, decode caching."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter, train_steps, logits

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


# tiny_qwen3: q 64->64, v 64->32. r=4 takes the Khatri-Rao form on both, r=8 the dense form; the patterns mix them.
CASES = [dict(r=4, alpha=8), dict(r=8, alpha=4, rank_dropout=0.1, module_dropout=0.1),
         dict(r=8, alpha=16, rank_pattern={"v_proj": 3}, alpha_pattern={r"layers\.1\.self_attn\.q_proj": 5})]


@pytest.mark.parametrize("kw", CASES)
def test_to_peft_loads_in_peft(ids, tmp_path, kw):
    base = tiny_qwen3(); fresh = copy.deepcopy(base); y0 = logits(base, ids)
    ll.attach(base, ll.LoHaConfig(**kw))
    forms = {l.khatri_rao() for l in ll.adapter_layers(base).values()}
    train_steps(base, ids)
    ours = logits(base, ids)
    assert (ours - y0).abs().max() > 1e-3, "training did not move the logits: the parity test would be trivial"
    ll.to_peft(base, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["peft_type"] == "LOHA"
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"LoHa {kw} (Khatri-Rao form used: {sorted(forms)}) to_peft -> PEFT max|diff| {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("r", [4, 8])
def test_from_peft_reproduces_peft_and_round_trips(ids, tmp_path, r):
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoHaConfig(r=r, alpha=2 * r, target_modules=QV,
                                                                    rank_pattern={"v_proj": 2})).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=g))
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-3
    pm.save_pretrained(tmp_path / "peft")
    a = copy.deepcopy(base)
    cfg = ll.from_peft(a, tmp_path / "peft")
    assert isinstance(cfg, ll.LoHaConfig) and cfg.r == r
    assert sorted(l.r for l in ll.adapter_layers(a).values()) == [2, 2, r, r]
    d = (logits(a, ids) - theirs).abs().max().item()
    print(f"LoHa r={r} PEFT -> from_peft max|diff| {d:.2e}")
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
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoHaConfig(r=32, alpha=64, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    ll.attach(base, ll.LoHaConfig(r=32, alpha=64))
    ours = sum(p.numel() for p in base.parameters() if p.requires_grad)
    assert ours == theirs == 9_175_040 // 28


def test_init_matches_peft_bounds():
    "Same init as PEFT: A₁, B₁, B₂ Kaiming-uniform with PEFT's fan-ins, A₂ = 0."
    m = tiny_qwen3(); ll.attach(m, ll.LoHaConfig(r=4))
    for l in ll.adapter_layers(m).values():
        assert torch.equal(l.A2, torch.zeros_like(l.A2))
        for t, fan_in in ((l.A1, l.d_in), (l.B1, l.r), (l.B2, l.r)):
            assert t.abs().max() <= 1 / fan_in ** 0.5 and t.abs().max() > 0.5 / fan_in ** 0.5


@pytest.mark.parametrize("bad", [dict(rank_dropout=1.0), dict(rank_dropout="0"), dict(module_dropout=-0.5),
                                 dict(init_weights="lycoris"), dict(r=0), dict(alpha=None)])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): ll.LoHaConfig(**bad)


def test_peft_conv_option_refused(tmp_path):
    "A PEFT LoHa made for convolutions (use_effective_conv2d, hada_t1/t2 tensors) is refused with a clear error."
    with pytest.raises(ValueError, match="use_effective_conv2d"):
        ll.LoHa.peft_import({"r": 4, "use_effective_conv2d": True}, {"x": (64, 64)},
                            {"base_model.model.x.hada_t1": torch.zeros(1)}, torch.float32)


@pytest.mark.parametrize("r", [4, 8])
def test_decode_cache_is_exact_and_never_stale(ids, r):
    m = tiny_qwen3(); ll.attach(m, ll.LoHaConfig(r=r)); perturb_adapter(m, std=0.1)
    fresh = lambda: m(ids).logits.detach()                 # with autograd on, nothing is cached
    ref = fresh()
    with torch.no_grad():
        y1, y2 = m(ids).logits, m(ids).logits
    assert torch.equal(y1, ref) and torch.equal(y2, ref)
    layer = next(iter(ll.adapter_layers(m).values()))
    with torch.no_grad():
        layer.A2.mul_(3)                                    # in-place edit under no_grad: the cache must notice
        y3 = m(ids).logits
    ref3 = fresh()
    assert not torch.equal(ref3, ref) and torch.equal(y3, ref3)
