"PEFT 0.21.2 is the oracle for FourierFT: frequencies, to_peft/from_peft logits, parameter counts, bad inputs, decode freshness."
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



@pytest.mark.parametrize("kw", [dict(n_frequency=50), dict(n_frequency=300, random_loc_seed=5)], ids=str)
def test_frequencies_equal_peft(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.FourierFTConfig(target_modules=QV, **kw))
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(**kw))
    for n, l in ll.adapter_layers(m).items():
        assert torch.equal(l.idx, pm.base_model.model.get_submodule(n).indices["default"]), n


CASES = [dict(n_frequency=50), dict(n_frequency=200, scaling=300.0, random_loc_seed=5), dict(n_frequency=50, init_weights=True)]

def _ours(kw):
    "PEFT's field names -> ours (PEFT's `scaling` is our `alpha`)."
    kw = dict(kw); kw["alpha"] = kw.pop("scaling", 150.0); return kw


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    with torch.no_grad(): y0 = model(ids).logits
    ll.attach(model, ll.FourierFTConfig(**_ours(kw)))
    ours = _train(model, ids)
    assert (ours - y0).abs().max() > 1e-2, "the adapter did not move the logits"
    ll.to_peft(model, tmp_path / "p")
    pc = json.loads((tmp_path / "p" / "adapter_config.json").read_text())
    assert pc["peft_type"] == "FOURIERFT" and pc["n_frequency"] == kw["n_frequency"] and pc["scaling"] == kw.get("scaling", 150.0)
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    with torch.no_grad(): theirs = pm(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"FourierFT {kw} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def test_per_layer_counts_export_as_n_frequency_pattern(ids, tmp_path):
    base = tiny_qwen3(); model = copy.deepcopy(base)
    ll.attach(model, ll.FourierFTConfig(n_frequency=40, n_frequency_pattern={r"layers\.1\.self_attn\.v_proj": 90}))
    ours = _train(model, ids, steps=1)
    test_n = {n: l.r for n, l in ll.adapter_layers(model).items()}
    assert test_n["model.layers.1.self_attn.v_proj"] == 90 and test_n["model.layers.0.self_attn.v_proj"] == 40
    ll.to_peft(model, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    assert pm.base_model.model.model.layers[1].self_attn.v_proj.fourierft_spectrum["default"].numel() == 90
    with torch.no_grad(): assert (ours - pm(ids).logits).abs().max() <= TOL
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "p")
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


@pytest.mark.parametrize("kw", CASES, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    base = tiny_qwen3()
    pm = peft.get_peft_model(tiny_qwen3(), peft.FourierFTConfig(target_modules=QV, **kw))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pm.parameters():
            if p.requires_grad: p.add_(0.5 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(tmp_path / "p"); pm.eval()
    with torch.no_grad():
        theirs = pm(ids).logits
        with pm.disable_adapter(): plain = pm(ids).logits
    assert (theirs - plain).abs().max() > 1e-2, "the PEFT adapter is (near) identity: the test would be trivial"
    cfg = ll.from_peft(base, tmp_path / "p")
    assert isinstance(cfg, ll.FourierFTConfig) and cfg.n_frequency == kw["n_frequency"] and cfg.alpha == kw.get("scaling", 150.0)
    with torch.no_grad(): ours = base(ids).logits
    d = (ours - theirs).abs().max().item()
    print(f"FourierFT {kw} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL
    ll.to_peft(base, tmp_path / "q")                                       # from_peft(to_peft(x)) is exact
    fresh = tiny_qwen3(); ll.from_peft(fresh, tmp_path / "q")
    for (n, a), b in zip(ll.adapter_layers(base).items(), ll.adapter_layers(fresh).values()):
        for k, t in a.state_dict().items(): assert torch.equal(t, b.state_dict()[k]), (n, k)
    with torch.no_grad(): assert torch.equal(fresh(ids).logits, ours)


def _qwen06b_block(device="meta"):
    "One Qwen3 block at Qwen3-0.6B's widths (q 1024->2048, v 1024->1024), small vocab, on the meta device (no memory)."
    from transformers import Qwen3Config, Qwen3ForCausalLM
    c = Qwen3Config(vocab_size=32, hidden_size=1024, intermediate_size=3072, num_hidden_layers=1, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device(device): return Qwen3ForCausalLM(c)


def test_trainable_count_equals_peft():
    m = _qwen06b_block(); ll.attach(m, ll.FourierFTConfig(n_frequency=5000))
    ours = sum(p.numel() for p in m.parameters() if p.requires_grad)
    pm = peft.get_peft_model(_qwen06b_block(), peft.FourierFTConfig(n_frequency=5000, target_modules=QV))
    theirs = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    print(f"FourierFT n=5000 trainable params on one Qwen3-0.6B block: ours {ours:,} PEFT {theirs:,}")
    assert ours == theirs == 2 * 5000


@pytest.mark.parametrize("field,value", [("n_frequency", 0), ("n_frequency", 2.5), ("random_loc_seed", -1),
                                         ("init_weights", "no"), ("alpha", float("nan")),
                                         ("n_frequency_pattern", {"q_proj": 0}), ("alpha_pattern", {"q_proj": 2.0})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.FourierFTConfig(**{field: value})


def test_layer_too_small_is_named_and_model_unchanged():
    m = tiny_qwen3(); snap = snapshot(m)                                   # v_proj 64->32 has 2048 entries, q_proj 4096
    with pytest.raises(ValueError, match="n_frequency=3000") as e: ll.attach(m, ll.FourierFTConfig(n_frequency=3000))
    assert "model.layers.0.self_attn.v_proj" in str(e.value)
    assert_unchanged(m, snap)


def test_export_refuses_frequencies_peft_would_not_draw(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(n_frequency=50))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.q_proj"]
    with torch.no_grad(): layer.idx[1, 0] = (layer.idx[1, 0] + 1) % layer.d_in
    with pytest.raises(ValueError, match="model.layers.1.self_attn.q_proj"): ll.to_peft(m, tmp_path / "p")


def test_fft_forward_matches_peft_dense_path_on_many_tokens():
    "The two-FFT hook equals x·ΔWᵀ with PEFT's dense ΔW (ifft2) on a batch of sequences, at Qwen3-0.6B's q_proj widths."
    from lora_lite.variants.fourierft import FourierFT
    torch.manual_seed(0)
    f = FourierFT(ll.FourierFTConfig(n_frequency=5000, alpha=300.0), 1024, 2048); f.init(None)
    x = torch.randn(2, 7, 1024)
    with torch.no_grad():
        got = f(x, torch.zeros(2, 7, 2048))
        ref = x @ f.delta_weight(None).T
    assert (got - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("dense_above", [2 ** 18, 0], ids=["per-token", "cached-dense"])
def test_decode_outputs_are_fresh(ids, dense_above, monkeypatch):
    "No-grad forwards (per-token FFTs, or the cached dense ΔW for many tokens) equal the autograd (dense) form and follow edits."
    import lora_lite.variants.fourierft as ff
    monkeypatch.setattr(ff, "DENSE_ABOVE", dense_above)
    m = tiny_qwen3(); ll.attach(m, ll.FourierFTConfig(n_frequency=50)); _train(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    c = m(ids).logits.detach()
    assert torch.equal(a, b) and (a - c).abs().max() <= 1e-5 * c.abs().max()
    with torch.no_grad():
        layer.spectrum.add_(2.0)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    e = m(ids).logits.detach()
    assert (d - e).abs().max() <= 1e-5 * e.abs().max()
