"Decode caches are used: a no-grad forward rebuilds a layer's parameter-only work once, not per call (freshness: test_decode_cache)."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import train_steps, logits

# (variant, config, tiny_qwen3 kwargs, the layer's parameter-only method, the tensor an edit changes)
CASES = [("boft", dict(boft_block_size=8, boft_n_butterfly_factor=2), {}, "rotation", "K"),
         ("oft", dict(oft_block_size=16), {}, "rotation", "q"), ("oft", dict(oft_block_size=16, coft=True, eps=0.05), {}, "rotation", "q"),
         ("road", dict(road_variant="road_4", group_size=16), dict(hidden=128), "coefficients", "theta"),
         ("c3a", dict(block_size=16), {}, "kernel_fft", "kernel")]


def same(decoded, trained):
    "The decode form against the autograd one: the same numbers to rounding (BOFT with m > 1 decodes through M's blocks)."
    torch.testing.assert_close(decoded, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kw,mk,fn,edit", CASES, ids=lambda v: str(v) if isinstance(v, (str, dict)) else None)
def test_decode_cache_is_used_and_fresh(ids, name, kw, mk, fn, edit):
    m = tiny_qwen3(**mk); ll.attach(m, ll.get_config(name, **kw)); train_steps(m, ids, steps=1, lr=0.3 if name == "c3a" else 1e-2)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    t = getattr(layer, edit)
    with torch.no_grad(): t.mul_(1.0)                                       # an in-place write: what is cached is stale now
    calls, f = [], getattr(layer, fn)
    setattr(layer, fn, lambda: calls.append(1) or f())                     # count the parameter-only work
    a, b = logits(m, ids), logits(m, ids)
    assert len(calls) == 1, f"{fn} was rebuilt although no tensor changed"
    c = m(ids).logits.detach()                                              # autograd path: never cached
    assert torch.equal(a, b) and len(calls) == 2
    same(a, c)
    with torch.no_grad(): t.add_(0.05 * torch.randn(t.shape, generator=torch.Generator().manual_seed(0)))   # not a constant: OFT/BOFT use K - Kᵀ
    d = logits(m, ids)
    assert len(calls) == 3 and (d - a).abs().max() > 1e-4
    same(d, m(ids).logits.detach())
