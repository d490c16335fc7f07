"""PEFT 0.21.2 is the oracle for FRoD: to_peft/from_peft logits for both published configs (the SVD path, fewer stacked rows than
inputs, refused), an imported V that differs from ours (λ₀ recomputed), the same V and sparse positions as PEFT's, the same
loss curve from one init, counts (PEFT's and its published 5.46M), the adapter file (shared tensors once, no λ₀), 4/8-bit
bases, bad inputs."""
import copy, json
import pytest, torch
import lora_lite as ll
from lora_lite.variants.frod import FrodConfig, Frod
from safetensors.torch import load_file
from conftest import logits
from realistic import realistic_qwen3, peft_vs_ours_curves, quant_check

peft = pytest.importorskip("peft")
TOL = 1e-5          # PEFT's own fp32 error on these models is ~2e-7 (its init is not bit-exact identity)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# (PEFT's config, blocks): its default, the sparse0.02 experiment, every linear kind (down_proj 128→64), one block (SVD path)
CASES = [(dict(target_modules=["q_proj", "v_proj"]), 3), (dict(target_modules=["q_proj", "v_proj"], sparse_rate=0.02), 3),
         (dict(target_modules=ALL, sparse_rate=0.03, regularization_alpha=1e-2, projection_prng_key=7), 2),
         (dict(target_modules=["q_proj", "down_proj"], sparse_rate=0.05), 2)]   # down_proj: 2·64 rows = d_in 128
IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def _perturb(model, std=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad: p.add_((2.5 if "lambda_l" in n or n.endswith(".lam") else 1) * std * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("pkw,L", CASES, ids=str)
def test_from_peft_and_to_peft(tmp_path, pkw, L):
    base = realistic_qwen3(n_layers=L)
    pm = peft.get_peft_model(copy.deepcopy(base), peft.FrodConfig(progressbar=False, **pkw))
    _perturb(pm); pm.save_pretrained(tmp_path / "p"); pm.eval()
    theirs, y0 = logits(pm, IDS), logits(base, IDS)
    assert (theirs - y0).abs().max() > 1e-3, "the PEFT adapter is (near) identity: the test would be trivial"
    ours = copy.deepcopy(base); cfg = ll.from_peft(ours, tmp_path / "p")
    assert isinstance(cfg, FrodConfig) and cfg.sparse_rate == pkw.get("sparse_rate", 0.01)
    sd = load_file(tmp_path / "p" / "adapter_model.safetensors")
    for n, l in ll.adapter_layers(ours).items():                  # V and positions: PEFT's, bit for bit (our own init_all made them too)
        assert torch.equal(sd[f"base_model.frod_V.{l.category}"], l._t("V")) and torch.equal(sd[f"base_model.frod_s_indices.{l.category}"], l._t("idx"))
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == pm.get_nb_trainable_parameters()[0]
    d = (logits(ours, IDS) - theirs).abs().max().item(); print(f"FRoD {pkw} L={L} from_peft max|diff| {d:.1e}")
    assert d <= TOL
    m = copy.deepcopy(base); ll.attach(m, FrodConfig(target_names=pkw["target_modules"], **{k: v for k, v in pkw.items() if k != "target_modules"}))
    assert torch.equal(logits(m, IDS), y0)                          # exactly the base model at init (PEFT's is 2e-7 off)
    _perturb(m, seed=1); y = logits(m, IDS)
    ll.to_peft(m, tmp_path / "q")
    assert json.loads((tmp_path / "q" / "adapter_config.json").read_text())["peft_type"] == "FROD"
    d = (logits(peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "q").eval(), IDS) - y).abs().max().item()
    print(f"FRoD {pkw} L={L} to_peft max|diff| {d:.1e}")
    assert d <= TOL


def test_imported_V_other_than_ours(tmp_path):
    """PEFT rebuilds U from the V it recomputes from W, not from the file's V: a file whose V is not that one is reproduced by
    neither (PEFT mixes the two), so from_peft refuses it with a message and leaves the model as it was."""
    base = realistic_qwen3(n_layers=2)
    pm = peft.get_peft_model(copy.deepcopy(base), peft.FrodConfig(target_modules=["q_proj", "v_proj"], sparse_rate=0.05, progressbar=False))
    _perturb(pm)
    with torch.no_grad(): pm.base_model.frod_V["self_attn_v_proj"]["default"][:, 3] *= -1   # an eigenvector of the other sign
    pm.save_pretrained(tmp_path / "p"); y = logits(base, IDS)
    with pytest.raises(ValueError, match="'self_attn_v_proj' is not the one PEFT rebuilds"): ll.from_peft(base, tmp_path / "p")
    assert not ll.is_attached(base) and torch.equal(logits(base, IDS), y)


@pytest.mark.parametrize("rate,lr", [(0.01, 1e-3), (0.02, 1e-3)])
def test_training_matches_peft(rate, lr):
    "6 AdamW steps from one init (PEFT's fresh adapter imported): the same loss curve."
    theirs, ours = peft_vs_ours_curves(peft.FrodConfig(target_modules=["q_proj", "v_proj", "down_proj"], sparse_rate=rate, progressbar=False),
                                       make_model=lambda: realistic_qwen3(n_layers=3), lr=lr)
    print(f"FRoD rate={rate} losses PEFT {theirs} ours {ours}")
    assert ours[-1] < ours[0] - 1e-3 and max(abs(a - b) for a, b in zip(theirs, ours)) <= 1e-4


def test_counts():
    "PEFT's published 5.46M (frod/llama-3.2-3B-default) on Llama-3.2-3B's q_proj/v_proj shapes, from the class's shapes; ×2 rate."
    llama = {f"model.layers.{b}.self_attn.{p}": (3072, o) for b in range(28) for p, o in (("q_proj", 3072), ("v_proj", 1024))}
    def count(**kw):
        layers = {n: Frod(FrodConfig(**kw), i, o, device="meta", name=n) for n, (i, o) in llama.items()}
        return sum(p.numel() for l in layers.values() for p in l.parameters())
    assert count() == 5_456_808
    assert count(sparse_rate=0.02) == 56 * (3072 + int(3072 * 3072 * 0.02))


def test_file_and_reload(tmp_path):
    m = realistic_qwen3(n_layers=2); ll.attach(m, FrodConfig(target_names=["q_proj", "v_proj", "up_proj"], sparse_rate=0.05))
    _perturb(m); y = logits(m, IDS); ll.save(m, tmp_path / "a.safetensors")
    keys = load_file(tmp_path / "a.safetensors")
    assert sorted(k for k in keys if k.startswith("ll_shared.")) == sorted(f"ll_shared.{t}_{k}" for t in ("V", "Vinv", "idx")
                                                                          for k in ("self_attn_q_proj", "self_attn_v_proj", "mlp_up_proj"))
    assert keys["ll_shared.idx_mlp_up_proj"].dtype == torch.int64 and not any(k.endswith("lam0") for k in keys)
    fresh = realistic_qwen3(n_layers=2); ll.load(fresh, tmp_path / "a.safetensors")
    assert torch.equal(logits(fresh, IDS), y)
    ll.detach(fresh); assert torch.equal(logits(fresh, IDS), logits(realistic_qwen3(n_layers=2), IDS))


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_base(quant):
    pytest.importorskip("bitsandbytes")
    r = quant_check(FrodConfig(target_names=["q_proj", "v_proj", "down_proj"], sparse_rate=0.05), quant)
    print(f"FRoD {quant}: {r}")
    assert r["init"] == 0 and r["finite_grads"] and r["detach_exact"] and r["base_untouched"] and r["effect_rel_err"] < 1e-3


def test_svd_path_refused_on_import(tmp_path):
    "A PEFT file from a kind with fewer stacked rows than inputs (one block's down_proj): a clear refusal, the model untouched."
    base = realistic_qwen3(n_layers=1)
    pm = peft.get_peft_model(copy.deepcopy(base), peft.FrodConfig(target_modules=["down_proj"], progressbar=False))
    pm.save_pretrained(tmp_path / "p"); y = logits(base, IDS)
    with pytest.raises(ValueError, match="cannot reproduce"): ll.from_peft(base, tmp_path / "p")
    assert not ll.is_attached(base) and torch.equal(logits(base, IDS), y) and all(p.requires_grad for p in base.parameters())


def test_bad_inputs():
    m = realistic_qwen3(n_layers=2); y = logits(m, IDS)
    with pytest.raises(ValueError, match="different input widths"):     # one kind name, two widths: no single V
        Frod.shared_shapes(FrodConfig(), {"0.x": Frod(FrodConfig(), 8, 4, name="0.x"), "1.x": Frod(FrodConfig(), 6, 4, name="1.x")})
    with pytest.raises(ValueError, match=r"mlp_down_proj: its blocks stack 64 rows < d_in=128"):   # PEFT's SVD path (see the notebook)
        ll.attach(m, FrodConfig(target_names=[r"layers\.0\.mlp\.down_proj"]))
    for bad in [dict(sparse_rate=-0.1), dict(regularization_alpha=float("nan")), dict(frod_dropout=1.0), dict(alpha_pattern={"q": 2})]:
        with pytest.raises(ValueError, match=next(iter(bad))): FrodConfig(**bad)
    assert not ll.is_attached(m) and torch.equal(logits(m, IDS), y)


def test_decode_over_cache_budget(monkeypatch):
    """One-token decode keeps A while the cache budget holds it; past the budget it takes the factored route (A never formed
    per token, the route decided once per cache fill), and `decode_reads` names the form in use."""
    from lora_lite import cache
    m = realistic_qwen3(n_layers=2); ll.attach(m, FrodConfig(sparse_rate=0.05)); _perturb(m); m.eval()
    layers = list(ll.adapter_layers(m).values())
    calls = []
    for l in layers: object.__setattr__(l, "transform", (lambda l, t: lambda *a, **k: calls.append(l) or t(*a, **k))(l, l.transform))
    x = torch.randint(0, 128, (1, 1))
    with torch.no_grad(): want = m(x).logits                        # one token, every A kept (the budget holds them all)
    keep_one = layers[0].d_in ** 2 * 4
    ll.clear_cache(m); calls.clear()
    monkeypatch.setattr(cache, "MAX_BYTES", cache.cache_bytes() + keep_one)   # room for one layer's A only (other tests' entries may live on)
    with torch.no_grad(): got = [m(x).logits for _ in range(3)]
    assert len(calls) == 1                                          # the first layer's A, formed once; the others none per token
    assert all((g - want).abs().max() <= TOL for g in got)
    sums = []                                                       # past the budget a token reuses the fill's decision:
    monkeypatch.setattr(cache, "cache_bytes", (lambda f: lambda: sums.append(1) or f())(cache.cache_bytes))
    with torch.no_grad(): m(x)
    assert sums == []                                               # no sum over every cache entry per layer per token
    d = layers[0].d_in
    assert [l.decode_reads() for l in layers] == [d * d] + [2 * d * d + 2 * d + 3 * l.s.numel() for l in layers[1:]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)   # fp32: MKL's CSR products; bf16: S built dense
def test_middle_factor_gradients(dtype):
    "The middle factor as one sparse product (λ−λ₀ on S's diagonal, rows over λ₀) has the element-wise form's value and gradients."
    torch.manual_seed(0)
    m = realistic_qwen3(n_layers=2); ll.attach(m, FrodConfig(sparse_rate=0.02, dtype=dtype))
    l = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    with torch.no_grad(): l.lam.mul_(1 + 0.1 * torch.randn_like(l.lam)); l.s.normal_(std=0.05)
    z, g = torch.randn(3, 40, l.d_in, dtype=dtype, requires_grad=True), torch.randn(3, 40, l.d_in, dtype=dtype)
    S = torch.zeros(l.d_in, l.d_in, dtype=dtype).index_put(tuple(l._t("idx")), l.s)
    want = (z @ S.T + z * (l.lam - l.lam0.to(dtype))) / l.lam0.to(dtype)
    got = l._mid(z)
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    for a, b in zip(torch.autograd.grad(got, (z, l.lam, l.s), g), torch.autograd.grad(want, (z, l.lam, l.s), g)):
        torch.testing.assert_close(a, b, atol=tol * 10, rtol=tol)
