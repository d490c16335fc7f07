"SHiRA against PEFT 0.21.2 (the oracle): export, import, round trip, positions, parameter count, bad inputs, decode."
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter, snapshot, assert_unchanged, train_steps, logits

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=4, random_seed=7), dict(r=8)])
def test_to_peft_loads_in_peft(ids, tmp_path, kw):
    base = tiny_qwen3(); fresh = copy.deepcopy(base); y0 = logits(base, ids)
    ll.attach(base, ll.SHiRAConfig(**kw))
    train_steps(base, ids)
    ours = logits(base, ids)
    assert (ours - y0).abs().max() > 1e-3, "training did not move the logits: the parity test would be trivial"
    ll.to_peft(base, tmp_path / "p")
    assert json.loads((tmp_path / "p" / "adapter_config.json").read_text())["peft_type"] == "SHIRA"
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    d = (logits(pm, ids) - ours).abs().max().item()
    print(f"SHiRA {kw} to_peft -> PEFT max|diff| {d:.2e}")
    assert d <= TOL


def test_positions_travel_in_the_file(ids, tmp_path):
    "The exported indices are used by PEFT (not re-drawn from the seed): move our positions off the seed's and compare."
    base = tiny_qwen3(); fresh = copy.deepcopy(base)
    ll.attach(base, ll.SHiRAConfig(r=4, random_seed=1)); perturb_adapter(base, std=0.5)
    with torch.no_grad():
        for l in ll.adapter_layers(base).values(): l.idx.copy_(ll.variants.shira.shira_positions(l.d_in, l.d_out, l.n, 99))
    ll.to_peft(base, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(fresh, tmp_path / "p").eval()
    assert (logits(pm, ids) - logits(base, ids)).abs().max().item() <= TOL


def test_same_seed_same_positions_as_peft():
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.ShiraConfig(r=4, random_seed=42, target_modules=QV))
    ll.attach(base, ll.SHiRAConfig(r=4, random_seed=42))
    for n, l in ll.adapter_layers(base).items():
        ij = pm.get_submodule("base_model.model." + n).shira_indices["default"].long()
        assert torch.equal(ij[0] * l.d_in + ij[1], l.idx), n


@pytest.mark.parametrize("seed", [42, None])
def test_from_peft_reproduces_peft_and_round_trips(ids, tmp_path, seed):
    base = tiny_qwen3()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.ShiraConfig(r=4, random_seed=seed, target_modules=QV)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad: p.add_(0.3 * torch.randn(p.shape, generator=g))
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-3
    pm.save_pretrained(tmp_path / "peft")
    a = copy.deepcopy(base)
    cfg = ll.from_peft(a, tmp_path / "peft")
    assert isinstance(cfg, ll.SHiRAConfig) and cfg.r == 4 and cfg.random_seed == seed and cfg.dtype == torch.float32
    d = (logits(a, ids) - theirs).abs().max().item()
    print(f"SHiRA seed={seed} PEFT -> from_peft max|diff| {d:.2e}")
    assert d <= TOL
    ll.to_peft(a, tmp_path / "again")                       # round trip: from_peft(to_peft(x)) is x, exactly
    b = copy.deepcopy(base); ll.from_peft(b, tmp_path / "again")
    assert torch.equal(logits(b, ids), logits(a, ids))
    sa, sb = ({k: v for k, v in m.state_dict().items() if ".ll_adapter." in k} for m in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_load_keeps_positions_without_redrawing(ids, tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4, random_seed=5)); perturb_adapter(m, std=0.5)
    with torch.no_grad():
        for l in ll.adapter_layers(m).values(): l.idx.copy_(ll.variants.shira.shira_positions(l.d_in, l.d_out, l.n, 6))
    y = logits(m, ids); f = ll.save(m, tmp_path / "a.safetensors"); ll.detach(m)
    ll.load(m, f)
    assert torch.equal(logits(m, ids), y)
    assert all(l.idx.dtype == torch.long for l in ll.adapter_layers(m).values())


def qwen3_06b_block():
    "One block with Qwen3-0.6B's widths (q_proj 1024->2048, v_proj 1024->1024), small vocab."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1,
                                        num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                                        tie_word_embeddings=False)).eval()


def test_param_count_equals_peft():
    base = qwen3_06b_block()
    pm = peft.get_peft_model(copy.deepcopy(base), peft.ShiraConfig(r=32, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    ll.attach(base, ll.SHiRAConfig(r=32))
    ours = sum(p.numel() for p in base.parameters() if p.requires_grad)
    assert ours == theirs == 4_587_520 // 28


@pytest.mark.parametrize("bad", [dict(mask_type="magnitude"), dict(random_seed=1.0), dict(random_seed="42"),
                                 dict(init_weights=None), dict(r=0)])
def test_bad_config_names_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))): ll.SHiRAConfig(**bad)


def test_too_small_layer_refused_by_name_model_unchanged():
    "v_proj 64->32 has 2048 entries < r(d_in + d_out) = 25·96: one error naming it; q_proj (fine) is not left adapted."
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.v_proj.*use r <= 21"):
        ll.attach(m, ll.SHiRAConfig(r=25))
    assert_unchanged(m, snap)
    per_layer = ll.attach(m, ll.SHiRAConfig(r=25, rank_pattern={"v_proj": 21}))
    assert len(per_layer) == 4


def test_per_layer_ranks_refused_at_export(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4, rank_pattern={"v_proj": 2}))
    with pytest.raises(ValueError, match="one r for all layers"): ll.to_peft(m, tmp_path / "p")


@pytest.mark.parametrize("T", [1, 30])   # with autograd: 1 token gathers, 30 use the dense ΔW; without: the CSR ΔW (cached)
def test_decode_cache_is_exact_and_never_stale(T):
    m = tiny_qwen3(); ll.attach(m, ll.SHiRAConfig(r=4)); perturb_adapter(m, std=0.1)
    ids = torch.randint(0, 128, (1, T), generator=torch.Generator().manual_seed(2))
    def uncached():                                          # the inference path, its CSR ΔW built afresh
        ll.clear_cache(m)
        with torch.no_grad(): return m(ids).logits
    grad_path = lambda: m(ids).logits.detach()              # with autograd on, nothing is cached
    ref = uncached()
    with torch.no_grad():
        y1, y2 = m(ids).logits, m(ids).logits
    assert torch.equal(y1, ref) and torch.equal(y2, ref)
    torch.testing.assert_close(ref, grad_path(), atol=1e-5, rtol=0)   # CSR == gather / dense up to summation order
    with torch.no_grad():                                   # in-place edits under no_grad: the cache must notice
        for layer in ll.adapter_layers(m).values(): layer.w.mul_(3)
        y3 = m(ids).logits
    ref3 = uncached()
    assert not torch.equal(ref3, ref) and torch.equal(y3, ref3)
    torch.testing.assert_close(ref3, grad_path(), atol=1e-5, rtol=0)
