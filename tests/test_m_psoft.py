"""PEFT 0.21.2 is the oracle for PSOFT: to_peft/from_peft logits (PEFT re-runs the SVD at load), the init, training steps on
realistic-spectrum weights, sign-aligned and refused exports, counts, bad inputs, decode cache."""
import copy
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import (snapshot, assert_unchanged, train_steps, logits, perturb_adapter, trained_pair_diff, trainable, llama32_3b,
                      to_peft_matches, from_peft_matches, assert_peft_round_trip)

peft = pytest.importorskip("peft")
TOL = 1e-5
QV = ["q_proj", "v_proj"]
CONFIGS = [dict(r=8, alpha=8.0), dict(r=8, alpha=8.0, psoft_svd="lowrank", use_cayley_neumann=True),
           dict(r=8, alpha=16.0, use_cayley_neumann=True, num_cayley_neumann_terms=3, cayley_neumann_eps=0.5),
           dict(r=6, alpha=12.0, ab_svd_init="pissa_init", psoft_mag_b=False),
           dict(r=8, alpha=8.0, psoft_orth=False, psoft_mag_a=False, psoft_mag_b=False)]


def _peft_cfg(kw):
    c = ll.PsoftConfig(**kw)
    from lora_lite.variants.psoft import _FIELDS
    return peft.PsoftConfig(r=c.r, psoft_alpha=c.alpha, target_modules=QV, **{f: getattr(c, f) for f in _FIELDS})


def _realistic(seed=0, **kw):
    "A tiny Qwen3 whose linear weights have a decaying, trained-like spectrum (σ_k ∝ 1/(k+1)^0.7, the same Frobenius norm)."
    m = tiny_qwen3(seed=seed, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear) and mod.weight.shape[0] != 128:
                W = mod.weight
                U, _ = torch.linalg.qr(torch.randn(W.shape[0], W.shape[0], generator=g))
                V, _ = torch.linalg.qr(torch.randn(W.shape[1], W.shape[1], generator=g))
                k = min(W.shape)
                S = (torch.arange(k) + 1.0) ** -0.7
                Wn = U[:, :k] @ torch.diag(S) @ V[:, :k].T
                W.copy_(Wn * W.norm() / Wn.norm())
    return m


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_to_peft_reproduces_our_logits(ids, tmp_path, kw):
    base = _realistic(attention_bias=True); model = copy.deepcopy(base)
    y0 = logits(model, ids)
    ll.attach(model, ll.PsoftConfig(**kw))
    assert torch.equal(logits(model, ids), y0)                              # R = I exactly: the base model
    train_steps(model, ids)
    ours = logits(model, ids)
    assert (ours - y0).abs().max() > 1e-3, "the adapter did not move the logits"
    _, pc = to_peft_matches(model, base, ids, tmp_path / "p", f"PSOFT {kw}")   # PEFT re-runs the SVD at load
    assert pc["peft_type"] == "PSOFT" and sorted(pc["target_modules"]) == sorted(ll.adapter_layers(model))


@pytest.mark.parametrize("kw", CONFIGS, ids=str)
def test_from_peft_reproduces_peft_logits_and_round_trips(ids, tmp_path, kw):
    pm = peft.get_peft_model(_realistic(attention_bias=True), _peft_cfg(kw))
    perturb_adapter(pm, std=0.1)
    make = lambda: _realistic(attention_bias=True)
    base, cfg = from_peft_matches(pm, make, ids, tmp_path / "p", f"PSOFT {kw}", moved=1e-3)
    assert isinstance(cfg, ll.PsoftConfig) and (cfg.r, cfg.alpha, cfg.psoft_orth) == (kw["r"], kw["alpha"], kw.get("psoft_orth", True))
    assert_peft_round_trip(base, make, ids, tmp_path / "q")


@pytest.mark.parametrize("kw", CONFIGS[:2] + CONFIGS[3:4], ids=str)
def test_init_equals_peft_factors_and_training_matches(ids, kw):
    "The same frozen A, B as PEFT's (same SVD); then 5 AdamW steps each on realistic-spectrum weights: the same logits."
    ours_m, pm = _realistic(attention_bias=True), peft.get_peft_model(_realistic(attention_bias=True), _peft_cfg(kw))
    ll.attach(ours_m, ll.PsoftConfig(**kw))
    for n, l in ll.adapter_layers(ours_m).items():
        t = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.A, t._psoft_A_cache["default"]) and torch.equal(l.B, t._psoft_B_cache["default"]), n
    d = trained_pair_diff(ours_m, pm, ids, steps=5)
    print(f"PSOFT {kw} after 5 AdamW steps each (realistic spectrum), max|diff| vs PEFT: {d:.2e}")
    assert d <= TOL


def test_export_aligns_flipped_signs(ids, tmp_path):
    "Factors from another SVD backend may differ by signs: to_peft turns R into DRD, and PEFT's model is still ours."
    base = _realistic(); m = copy.deepcopy(base)
    ll.attach(m, ll.PsoftConfig(r=8, alpha=8.0)); train_steps(m, ids)
    ours = logits(m, ids)
    d = torch.tensor([1., -1., -1., 1., 1., -1., 1., -1.])
    i, j = torch.triu_indices(8, 8, 1)
    with torch.no_grad():
        for l in ll.adapter_layers(m).values(): l.A.mul_(d[:, None]); l.B.mul_(d); l.q.mul_(d[i] * d[j])
    assert (logits(m, ids) - ours).abs().max() <= 1e-6                      # the same model, other factors
    ll.to_peft(m, tmp_path / "p")
    pm = peft.PeftModel.from_pretrained(base, tmp_path / "p").eval()
    assert (logits(pm, ids) - ours).abs().max() <= TOL


def test_export_refuses_factors_peft_would_not_rebuild(ids, tmp_path):
    "An adapter loaded onto other base weights keeps its own A, B; PEFT would rebuild others from this W: refused, nothing written."
    a = _realistic(seed=0); ll.attach(a, ll.PsoftConfig(r=8, alpha=8.0)); train_steps(a, ids); ll.save(a, tmp_path / "a.safetensors")
    b = _realistic(seed=1); ll.load(b, tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="not the SVD factors PEFT will rebuild"): ll.to_peft(b, tmp_path / "p")
    assert not (tmp_path / "p" / "adapter_config.json").exists()


def test_export_refuses_conv1d():
    from transformers import GPT2Config, GPT2LMHeadModel
    m = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=64, n_layer=1, n_head=4, n_positions=32))
    ll.attach(m, ll.PsoftConfig(r=4, alpha=4.0, target_names=("c_attn",)))
    with pytest.raises(ValueError, match="only float nn.Linear"): ll.to_peft(m, "/nonexistent/never-written")


@pytest.mark.parametrize("kw", [dict(r=256, alpha=256.0),                                                  # psoft/llama-3.2-3B-default
                                dict(r=256, alpha=256.0, psoft_svd="lowrank", use_cayley_neumann=True)], ids=str)   # …-fast
def test_trainable_count_equals_peft_published(kw):
    from lora_lite.variants.psoft import Psoft
    ours = 28 * sum(p.numel() for d_in, d_out in [(3072, 3072), (3072, 1024)] for p in Psoft(ll.PsoftConfig(**kw), d_in, d_out, device="meta").parameters())
    theirs = trainable(peft.get_peft_model(llama32_3b(), _peft_cfg(kw)))
    print(f"PSOFT {kw} trainable on Llama-3.2-3B: ours {ours:,} PEFT {theirs:,} published 1,856,512")
    assert ours == theirs == 1_856_512
    for small in CONFIGS:                                                   # and PEFT's count for each tested config
        m = tiny_qwen3(); ll.attach(m, ll.PsoftConfig(**small))
        assert trainable(m) == trainable(peft.get_peft_model(tiny_qwen3(), _peft_cfg(small)))


@pytest.mark.parametrize("field,value", [("ab_svd_init", "olora"), ("psoft_svd", "randomized"), ("psoft_svd_lowrank_niter", -1),
                                         ("psoft_orth", "yes"), ("psoft_mag_a", 1), ("use_cayley_neumann", None),
                                         ("num_cayley_neumann_terms", 0), ("cayley_neumann_eps", 1.0), ("psoft_dropout", 1.0),
                                         ("random_seed", 1.5), ("rank_pattern", {"q_proj": 8}), ("alpha_pattern", {"q_proj": 8})])
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field): ll.PsoftConfig(**{field: value})


def test_rank_too_large_leaves_model_unchanged():
    m = tiny_qwen3(); snap = snapshot(m)
    with pytest.raises(ValueError, match="use r <= 32"): ll.attach(m, ll.PsoftConfig(r=48))   # v_proj is 64 -> 32
    assert_unchanged(m, snap)


def test_decode_cache_is_used_and_fresh(ids):
    m = tiny_qwen3(); ll.attach(m, ll.PsoftConfig(r=8, alpha=8.0)); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    calls = []
    layer.kernel = lambda f=layer.kernel: calls.append(1) or f()          # count the parameter-only work (the solve, s(R − I))
    a, b = logits(m, ids), logits(m, ids)
    assert len(calls) == 1 and torch.equal(a, b), "M was rebuilt although no parameter changed"
    with torch.no_grad(): layer.q.add_(0.05)
    c = logits(m, ids)
    assert len(calls) == 2 and (c - a).abs().max() > 1e-4
    torch.testing.assert_close(m(ids).logits.detach(), c)                 # autograd path: (xAᵀKᵀ)Bᵀ, the same to rounding
    assert len(calls) == 3                                                # and never cached
