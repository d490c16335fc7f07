"LoKr against PEFT 0.21.2 (the oracle): export, import, round trip, parameter count, bad inputs, decode caching."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter, train_steps, logits

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


# tiny_qwen3: q 64->64 = 8·8, v 64->32 = 4·8. r=2 factors D (B, A) on q; r=4 keeps D dense; decompose_both with
# decompose_factor=16 also factors C; the patterns mix per-layer ranks and scales.
CASES = [dict(r=2, alpha=8), dict(r=4, alpha=4, rank_dropout=0.1, rank_dropout_scale=True, module_dropout=0.1),
         dict(r=2, alpha=4, decompose_both=True, decompose_factor=16, init_weights="lycoris"),
         dict(r=4, alpha=16, rank_pattern={"q_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.v_proj": 5})]


@pytest.mark.parametrize("kw", CASES)
def test_to_peft_loads_in_peft(ids, tmp_path, kw):
    base = tiny_qwen3(); fresh = copy.deepcopy(base); y0 = logits(base, ids)
    ll.attach(base, ll.LoKrConfig(**kw))
    kinds = sorted({tuple(sorted(dict(l.named_parameters()))) for l in ll.adapter_layers(base).values()})
    train_steps(base, ids)
    ours = logits(base, ids)
    assert (ours - y0).abs().max() > 1e-3, "training did not move the logits: the parity test would be trivial"
    ll.to_peft(base, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["peft_type"] == "LOKR"
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"LoKr {kw} (tensors {kinds}) to_peft -> PEFT max|diff| {d:.2e}")
    assert d <= TOL


@pytest.mark.parametrize("kw", [dict(r=2), dict(r=2, decompose_both=True, decompose_factor=16)])
def test_from_peft_reproduces_peft_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoKrConfig(alpha=4, target_modules=QV, rank_pattern={"v_proj": 4},
                                                                    **kw)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=g))
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-3
    pm.save_pretrained(tmp_path / "peft")
    a = copy.deepcopy(base)
    cfg = ll.from_peft(a, tmp_path / "peft")
    assert isinstance(cfg, ll.LoKrConfig) and cfg.r == 2
    d = (logits(a, ids) - theirs).abs().max().item()
    print(f"LoKr {kw} PEFT -> from_peft max|diff| {d:.2e}")
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


@pytest.mark.parametrize("factor,per_block", [(-1, 143_360 // 28), (4, 1_147_776 // 28)])
def test_param_count_equals_peft(factor, per_block):
    base = qwen3_06b_block()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoKrConfig(r=32, alpha=64, decompose_factor=factor, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    ll.attach(base, ll.LoKrConfig(r=32, alpha=64, decompose_factor=factor))
    ours = sum(p.numel() for p in base.parameters() if p.requires_grad)
    assert ours == theirs == per_block


def test_factorize_matches_peft():
    from peft.tuners.lokr.layer import factorization
    for d in [1, 2, 7, 12, 30, 64, 96, 127, 128, 1000, 1024, 2048, 3072, 4096, 11008]:
        for f in [-1, 1, 2, 3, 4, 8, 16, 100]:
            assert ll.variants.lokr.factorize(d, f) == factorization(d, f), (d, f)


@pytest.mark.parametrize("bad", [dict(decompose_factor=0), dict(decompose_factor=-2), dict(decompose_factor=True),
                                 dict(decompose_both=1), dict(rank_dropout=1.0), dict(module_dropout="0"),
                                 dict(rank_dropout_scale=None), dict(init_weights="gaussian"), dict(r=0)])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): ll.LoKrConfig(**bad)


def test_peft_conv_option_refused():
    with pytest.raises(ValueError, match="use_effective_conv2d"):
        ll.LoKr.peft_import({"r": 4}, {"x": (64, 64)}, {"base_model.model.x.lokr_t2": torch.zeros(1)}, torch.float32)


def test_decode_has_no_stale_state(ids):
    "LoKr keeps no cache (its parameter-only work is an l×m product): no_grad forwards repeat exactly, match the "
    "autograd forward (up to torch.matmul's grad-dependent folding order) and see in-place edits."
    m = tiny_qwen3(); ll.attach(m, ll.LoKrConfig(r=2, decompose_both=True, decompose_factor=16)); perturb_adapter(m, std=0.1)
    fresh = lambda: m(ids).logits.detach()
    ref = fresh()
    with torch.no_grad():
        y1, y2 = m(ids).logits, m(ids).logits
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1, ref, atol=1e-6, rtol=0)
    layer = next(iter(ll.adapter_layers(m).values()))
    with torch.no_grad():
        layer.C_A.mul_(3)
        y3 = m(ids).logits
    ref3 = fresh()
    assert (ref3 - ref).abs().max() > 1e-3
    torch.testing.assert_close(y3, ref3, atol=1e-6, rtol=0)
