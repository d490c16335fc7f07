"The AntiPaSTO family on a tiny Qwen3 (fp32): invariants, steering knob, contraction, CorDA calibration, bad input."
import tempfile
from pathlib import Path
import pytest, torch
import torch.nn.functional as F
import lora_lite as ll
from lora_lite.core import dense_weight
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, perturb_adapter, token_batches

FAMILY = ["antipasto", "antipasto_corda", "antipasto_rot", "antipasto_ablate", "antipasto_arrow"]
GAIN = ["antipasto", "antipasto_corda", "antipasto_rot", "antipasto_arrow"]   # have the ELU gain g


def cfg_of(name, **kw):
    "Small-rank config (tiny_qwen3's v_proj is 64->32, so the default r=256 doesn't fit)."
    extra = {"b": 4} if name == "antipasto_arrow" else {}
    return ll.get_config(name, **{"r": 8, **extra, **kw})


def attach(model, cfg):
    data = token_batches() if ll.variant_class(cfg.variant).needs_calibration else None
    return ll.attach(model, cfg, calibration_data=data)


def out(model, ids):
    with torch.no_grad(): return model(ids).logits


@pytest.mark.parametrize("name", FAMILY)
def test_invariants(name, qwen, ids):
    snap, y0 = snapshot(qwen), out(qwen, ids)
    names = attach(qwen, cfg_of(name))
    assert len(names) == 4                                   # q_proj, v_proj in 2 blocks
    d = (out(qwen, ids) - y0).abs().max().item()
    if name == "antipasto_ablate": assert 0 < d < 0.05 * y0.abs().max()   # off identity by design, bounded
    else: assert d == 0.0, d                                  # identity at init (exact: the delta is a product with 0)
    # only adapter params train, and the base gets no gradient
    trainable = {n: p for n, p in qwen.named_parameters() if p.requires_grad}
    assert trainable and all(".ll_adapter." in n for n in trainable)
    qwen.train(); out_ = qwen(ids).logits; out_.pow(2).mean().backward(); qwen.eval()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable.values())
    assert all(p.grad is None for p in qwen.parameters() if not p.requires_grad)
    perturb_adapter(qwen, std=0.3)
    # per-layer dense equivalence: hooked layer == F.linear(x, W + U K Vh)
    g = torch.Generator().manual_seed(0)
    for n, layer in ll.adapter_layers(qwen).items():
        m = qwen.get_submodule(n)
        x = torch.randn(5, layer.d_in, generator=g)
        with torch.no_grad():
            ref = F.linear(x, dense_weight(m) + layer.delta_weight(m), m.bias)
            torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    y1 = out(qwen, ids)
    assert not torch.equal(y1, y0)
    with tempfile.TemporaryDirectory() as td:
        f = ll.save(qwen, Path(td) / "a.safetensors")
        ll.detach(qwen)
        assert torch.equal(out(qwen, ids), y0)               # detach exact
        assert_unchanged(qwen, snap)
        ll.load(qwen, f)                                      # no calibration data needed, even for corda
    assert torch.equal(out(qwen, ids), y1)                    # save -> load exact
    ll.detach(qwen); assert_unchanged(qwen, snap)


@pytest.mark.parametrize("name", FAMILY)
def test_coeff_zero_is_off_and_negative_reverses(name, qwen, ids):
    y0 = out(qwen, ids)
    attach(qwen, cfg_of(name))
    perturb_adapter(qwen, std=0.3)
    y1 = out(qwen, ids)
    assert ll.set_knob(qwen, coeff=0.0) == {"coeff": 1.0}
    assert torch.equal(out(qwen, ids), y0)                    # coeff = 0: exactly the base
    # coeff -1 moves each layer's delta the other way (to first order: -ΔW for small steps)
    for n, layer in ll.adapter_layers(qwen).items():
        m = qwen.get_submodule(n)
        with torch.no_grad():
            ll.set_knob(qwen, coeff=1e-3); dp = layer.delta_weight(m)
            ll.set_knob(qwen, coeff=-1e-3); dm = layer.delta_weight(m)
        torch.testing.assert_close(dm, -dp, atol=5e-3 * dp.abs().max().item(), rtol=0)
    ll.set_knob(qwen, coeff=1.0); assert torch.equal(out(qwen, ids), y1)
    with pytest.raises(ValueError, match="finite"): ll.set_knob(qwen, coeff=float("nan"))
    assert torch.equal(out(qwen, ids), y1)


@pytest.mark.parametrize("name", GAIN)
def test_gain_steers_singular_values_both_ways(name, qwen):
    attach(qwen, cfg_of(name))
    layer = next(iter(ll.adapter_layers(qwen).values()))
    with torch.no_grad(): layer.g.fill_(0.5)
    tail = slice(4, None) if name == "antipasto_arrow" else slice(None)   # arrow: the gain is on the tail
    gains = {}
    for c in (1.0, -1.0):
        layer.coeff = c
        gains[c] = 1 + layer.gain()
    assert (gains[1.0] > 1).all() and (gains[-1.0] < 1).all() and (gains[-1.0] > 0).all()
    if name in ("antipasto", "antipasto_arrow"):   # read the singular value back from W + ΔW
        m = next(qwen.get_submodule(n) for n in ll.adapter_layers(qwen))
        layer.coeff = 1.0
        with torch.no_grad(): Wn = dense_weight(m) + layer.delta_weight(m)
        s = torch.einsum("oi,or,ri->r", Wn, layer.U, layer.Vh)[tail]
        torch.testing.assert_close(s, layer.S[tail] * gains[1.0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", GAIN)
def test_suppress_only_keeps_gains_at_most_one(name, qwen, ids):
    attach(qwen, cfg_of(name, suppress_only=True))
    perturb_adapter(qwen, std=1.0)
    gain = torch.cat([1 + l.gain() for l in ll.adapter_layers(qwen).values()])
    assert (gain <= 1).all() and (gain < 1).any() and (gain > 0).all()
    # one optimizer step keeps it so (the clamp is in the forward, not the optimizer)
    opt = torch.optim.AdamW([p for p in qwen.parameters() if p.requires_grad], lr=0.5)
    qwen.train(); (-qwen(ids).logits.pow(2).mean()).backward(); opt.step(); qwen.eval()
    assert all((1 + l.gain() <= 1).all() for l in ll.adapter_layers(qwen).values())


def test_ablate_is_contractive(qwen, ids):
    attach(qwen, cfg_of("antipasto_ablate", k=2))
    g = torch.Generator().manual_seed(0)
    for n, layer in ll.adapter_layers(qwen).items():
        m = qwen.get_submodule(n)
        x = torch.randn(64, layer.d_in, generator=g)
        for trial in range(10):
            with torch.no_grad():
                layer.c.copy_(torch.randn(layer.c.shape, generator=g))
                layer.alpha.copy_(3 * torch.rand(layer.alpha.shape, generator=g) - 1)   # clamp is exercised
                layer.coeff = 1.0 if trial % 2 else 2 * torch.rand((), generator=g).item()
                y = F.linear(x, dense_weight(m), m.bias)           # the base layer's own output
                h = (x @ layer.Vh.T) * layer.S                       # S-scaled coordinates
                h_new = h + (m(x) - y) @ layer.U                     # read h' back through U (orthonormal)
            assert (h_new.norm(dim=-1) <= h.norm(dim=-1) * (1 + 1e-5) + 1e-6).all()


def test_corda_without_calibration_data(qwen):
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match="calibration_data"):
        ll.attach(qwen, cfg_of("antipasto_corda"))
    assert_unchanged(qwen, snap)


@pytest.mark.parametrize("bad", ["nan", "zero"])
def test_corda_bad_covariance(bad, qwen):
    data = token_batches()
    if bad == "nan":      # NaN activations reach the covariance
        h = qwen.model.layers[0].input_layernorm.register_forward_hook(lambda m, a, y: y * float("nan"))
    else:                 # every input exactly zero
        h = qwen.model.layers[0].input_layernorm.register_forward_hook(lambda m, a, y: y * 0)
    snap = snapshot(qwen)
    with pytest.raises(ValueError, match="NaN/inf" if bad == "nan" else "zero"):
        ll.attach(qwen, cfg_of("antipasto_corda", target_names=(r"layers\.0\.self_attn\.q_proj",)), calibration_data=data)
    assert_unchanged(qwen, snap)
    h.remove()


@pytest.mark.parametrize("name", FAMILY)
def test_rank_too_big(name, qwen):
    snap = snapshot(qwen)
    cfg = cfg_of(name, r=48)                                  # v_proj is 64 -> 32
    with pytest.raises(ValueError, match="r <= 32"):
        attach(qwen, cfg)
    assert_unchanged(qwen, snap)


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of the rotation block size 4"): ll.AntiPaSTORotConfig(r=6)
    with pytest.raises(ValueError, match="b must be"): ll.AntiPaSTOArrowConfig(r=4, b=8)
    with pytest.raises(ValueError, match="coeff"): ll.AntiPaSTOConfig(coeff=float("inf"))
    with pytest.raises(ValueError, match="k must be"): ll.AntiPaSTOAblateConfig(r=4, k=5)
    assert ll.AntiPaSTOConfig().r == 256 and ll.AntiPaSTOConfig().target_names == ("q_proj", "v_proj")


def test_corda_masked_tokens_change_the_basis():
    P = {}
    for masked in (True, False):
        model = tiny_qwen3()
        data = token_batches()
        if not masked: data = [{"input_ids": b["input_ids"]} for b in data]
        ll.attach(model, cfg_of("antipasto_corda"), calibration_data=data)
        P[masked] = {n: l.P.clone() for n, l in ll.adapter_layers(model).items()}
    for n in P[True]:
        assert not torch.allclose(P[True][n].abs(), P[False][n].abs(), atol=1e-3), n
