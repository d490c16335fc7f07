"Shared pytest fixtures: tiny offline models and calibration batches."
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import pytest, torch

torch.set_num_threads(1)   # tiny models: one thread is fastest, and two threads on a loaded 2-core box are far slower
from lora_lite.checks import tiny_qwen3, toy_model, snapshot, assert_unchanged  # noqa: F401 (re-exported to the tests)


def token_batches(vocab=128, n=3, bs=2, T=12, seed=0):
    "Random token batches with left padding and prompt labels masked (-100), as calibration_data."
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (bs, T), generator=g)
        am = torch.ones(bs, T, dtype=torch.long); am[0, :3] = 0
        labels = ids.clone(); labels[:, :5] = -100
        out.append({"input_ids": ids, "attention_mask": am, "labels": labels})
    return out


def perturb_adapter(model, std=0.05, seed=0):
    "Move every trainable adapter tensor off its init (so parity tests can't pass trivially)."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(std * torch.randn(p.shape, generator=g).to(p.dtype))


@pytest.fixture
def qwen():
    return tiny_qwen3()


@pytest.fixture
def ids():
    return torch.randint(0, 128, (2, 10), generator=torch.Generator().manual_seed(1))


def train_steps(model, ids, steps=3, lr=1e-2):
    "A few AdamW steps on the LM loss, so no adapter tensor is at its init."
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        model(ids, labels=ids).loss.backward(); opt.step(); opt.zero_grad()
    model.eval()


def logits(m, ids):
    "Logits without autograd."
    with torch.no_grad(): return m(ids).logits


def structured_qwen3(seed=0, decay=0.6, **kw):
    """A tiny Qwen3 whose linear weights look trained rather than random: W = U·diag(σ)·Vᵀ with random orthogonal U, V
    and a power-law spectrum σ_i ∝ (i+1)^-decay (trained LLM weights have decaying spectra with small trailing σ;
    i.i.d. Gaussian weights have a flat Marchenko–Pastur one). Each W keeps its Frobenius norm. For SVD-initialised methods."""
    m = tiny_qwen3(seed=seed, **kw)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, lin in m.named_modules():
            if isinstance(lin, torch.nn.Linear) and "lm_head" not in name:
                o, i = lin.weight.shape; k = min(o, i)
                U = torch.linalg.qr(torch.randn(o, k, generator=g))[0]; V = torch.linalg.qr(torch.randn(i, k, generator=g))[0]
                S = (torch.arange(k) + 1.0) ** -decay
                W = U @ torch.diag(S) @ V.T
                lin.weight.copy_(W * lin.weight.norm() / W.norm())
    return m


def same_batches(n=6, bs=4, T=16, vocab=128, seed=0):
    "Fixed token batches for side-by-side training runs."
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (bs, T), generator=g) for _ in range(n)]
def trained_pair_diff(ours, pm, ids, steps=4):
    "Train our model and PEFT's model `pm` (same init) the same AdamW steps; max |logits diff| after (PEFT must have moved)."
    train_steps(ours, ids, steps); train_steps(pm, ids, steps)
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > 1e-3, "PEFT's training didn't move the logits"
    return (logits(ours, ids) - theirs).abs().max().item()


def trainable(m):
    "The number of trainable parameters of a model."
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def llama32_3b(n_layers=28):
    "Llama-3.2-3B's shapes (q 3072->3072, k/v 3072->1024, MLP 8192), small vocab, on the meta device (no memory); `n_layers` blocks."
    from transformers import LlamaConfig, LlamaForCausalLM
    c = LlamaConfig(vocab_size=32, hidden_size=3072, intermediate_size=8192, num_hidden_layers=n_layers, num_attention_heads=24,
                    num_key_value_heads=8, head_dim=128, tie_word_embeddings=False)
    with torch.device("meta"): return LlamaForCausalLM(c)


def to_peft_matches(model, base, ids, path, label, tol=1e-5):
    "Export `model` with to_peft to `path`, load it onto `base` with PEFT: the same logits to `tol`; returns (PEFT's model, adapter_config)."
    import json, peft
    import lora_lite as ll
    ours = logits(model, ids)
    ll.to_peft(model, path)
    pc = json.loads((path / "adapter_config.json").read_text())
    pm = peft.PeftModel.from_pretrained(base, path).eval()
    d = (ours - logits(pm, ids)).abs().max().item()
    print(f"{label} to_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= tol
    return pm, pc


def from_peft_matches(pm, make, ids, path, label, moved=1e-2, tol=1e-5):
    "Save PEFT's model `pm` (off the base by > `moved`) to `path`, from_peft it onto `make()`: PEFT's logits to `tol`; returns (our model, its config)."
    import lora_lite as ll
    pm.save_pretrained(path); pm.eval()
    theirs = logits(pm, ids)
    with pm.disable_adapter(): assert (theirs - logits(pm, ids)).abs().max() > moved, "PEFT's adapter is (near) identity: the test would be trivial"
    base = make()
    cfg = ll.from_peft(base, path)
    d = (logits(base, ids) - theirs).abs().max().item()
    print(f"{label} from_peft max|diff| vs PEFT: {d:.2e}")
    assert d <= tol
    return base, cfg


def assert_peft_round_trip(model, make, ids, path):
    "from_peft(to_peft(model)) onto `make()` is exact: the whole state_dict, every adapter layer's parameters and buffers, the logits."
    import lora_lite as ll
    ll.to_peft(model, path)
    fresh = make(); ll.from_peft(fresh, path)
    sa, sb = model.state_dict(), fresh.state_dict()
    assert sa.keys() == sb.keys()
    for k, t in sa.items(): assert torch.equal(t, sb[k]), k
    for (n, a), b in zip(ll.adapter_layers(model).items(), ll.adapter_layers(fresh).values()):
        ta, tb = ({**dict(x.named_parameters()), **dict(x.named_buffers())} for x in (a, b))
        assert ta.keys() == tb.keys(), n
        for k, t in ta.items(): assert torch.equal(t, tb[k]), (n, k)
    assert torch.equal(logits(fresh, ids), logits(model, ids))


def curves_match_peft(ours, theirs, ids, label, rtol=1e-5, falls=True, **kw):
    "Train `ours` and PEFT's `theirs` alike (realistic.curves, `kw`): equal losses to `rtol`, ours falling if `falls`; returns both eval logits."
    from realistic import curves
    losses = curves((ours, theirs), ids, **kw)
    print(f"{label} training losses: ours {losses[0].tolist()} PEFT {losses[1].tolist()}")
    if falls: assert losses[0][-1] < losses[0][0] - 1e-3
    torch.testing.assert_close(losses[0], losses[1], rtol=rtol, atol=0)
    return logits(ours, ids), logits(theirs, ids)


def assert_trains_like_peft(peft_cfg, label, **kw):
    "From PEFT's own init (realistic.peft_vs_ours_curves, `kw`): PEFT's loss falls and ours follows it within 1e-5."
    from realistic import peft_vs_ours_curves
    theirs, ours = peft_vs_ours_curves(peft_cfg, **kw)
    d = max(abs(a - b) for a, b in zip(theirs, ours))
    print(f"{label} losses PEFT {[round(x, 5) for x in theirs]} ours max|diff| {d:.1e}")
    assert theirs[-1] < theirs[0] - 1e-3 and d <= 1e-5


def assert_quant_ok(cfg, quant, label, **model_kw):
    "realistic.quant_check of `cfg` on a 4/8-bit base: identity at init, finite grads, exact detach, base untouched, effect within 1e-4/1e-3."
    from realistic import quant_check
    got = quant_check(cfg, quant, **model_kw)
    print(f"{label} on {quant}: {got}")
    assert got["init"] == 0 and got["finite_grads"] and got["detach_exact"] and got["base_untouched"]
    assert got["effect_rel_err"] <= (1e-4 if quant == "nf4" else 1e-3)


def assert_attach_refused(cfg, phrase, layer="model.layers.0.self_attn.q_proj", model=None):
    "attach(cfg) to `model` (default a tiny Qwen3) fails with `phrase`, naming `layer`, and leaves the model as it was."
    import lora_lite as ll
    m = tiny_qwen3() if model is None else model
    snap = snapshot(m)
    with pytest.raises(ValueError, match=phrase) as e: ll.attach(m, cfg)
    assert layer in str(e.value)
    assert_unchanged(m, snap)


def assert_decode_fresh(m, ids, *params, moved=1e-3, exact=True):
    """No-grad forwards repeat bit for bit and equal the autograd one; after each in-place edit (+0.5) of `params` they move by > `moved` and still do.
    `exact=False`: the autograd forward sums in another order (x(W + ΔW)ᵀ, not y + xΔWᵀ), so it is equal to rounding: within `moved` / 100 and 1e-5 relative."""
    same = torch.equal if exact else (lambda u, v: torch.allclose(u, v, rtol=1e-5, atol=moved / 100))
    a, b = logits(m, ids), logits(m, ids)
    assert torch.equal(a, b) and same(a, m(ids).logits.detach())
    for p in params:
        with torch.no_grad(): p.add_(0.5)
        d = logits(m, ids)
        assert (d - a).abs().max() > moved and torch.equal(d, logits(m, ids)) and same(d, m(ids).logits.detach())
        a = d


def assert_other_width_file_refused(peft_cfg, path):
    "A PEFT adapter (`peft_cfg`) saved for the 64-wide tiny Qwen3 is refused by from_peft on a 128-wide one (the error says shape), model unchanged."
    import peft
    import lora_lite as ll
    peft.get_peft_model(tiny_qwen3(hidden=64), peft_cfg).save_pretrained(path)
    m = tiny_qwen3(hidden=128); snap = snapshot(m)
    with pytest.raises(ValueError, match="shape"): ll.from_peft(m, path)
    assert_unchanged(m, snap)


def biased_qwen3(hidden=64, **kw):
    "A tiny Qwen3 whose attention projections have biases, filled with random values (transformers inits them to 0)."
    m = tiny_qwen3(hidden=hidden, attention_bias=True, **kw)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("proj.bias"): p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return m


MOVE_STD = dict(unilora=0.5, antipasto_ablate=0.5)   # a tiny shared vector / a contractive gain move the logits < 1e-3 at 0.05
