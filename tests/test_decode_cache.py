"""Decode caches (core.cached) are never stale: for every registered variant, cached == uncached after each event that
changes an adapter; generation gives the same tokens with caching disabled; autograd never sees a cached value."""
import sys, tempfile
from pathlib import Path
import pytest, torch
import lora_lite as ll
from lora_lite import core
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter, token_batches

NAMES = sorted(ll.VARIANTS)   # every registered variant, new ones included


def attached(name, **kw):
    "A tiny Qwen3 with variant `name` attached with its declared small config (`example`), moved off its init."
    model, V = tiny_qwen3(), ll.variant_class(name)
    ll.attach(model, ll.get_config(name, **{**V.example, **kw}), calibration_data=token_batches() if V.needs_calibration else None)
    perturb_adapter(model, std=0.2)          # off init, so a stale cache would show
    return model


def clear(model):
    for l in ll.adapter_layers(model).values(): l.__dict__.pop("_ll_cache", None)


def logits(model, ids):
    with torch.no_grad(): return model(ids).logits


def assert_fresh(model, ids):
    "The output with whatever is cached equals the output recomputed from scratch."
    cached = logits(model, ids)
    clear(model)
    fresh = logits(model, ids)
    assert torch.equal(cached, fresh), (cached - fresh).abs().max()
    return fresh


def disable_cache(monkeypatch):
    "Turn caching off for the rest of this test: every lora_lite module's `cached` (imported by name) calls fn()."
    def off(layer, key, fn): return fn()
    mods = [m for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("lora_lite") and getattr(m, "cached", None) is core.cached]
    assert any(m.__name__.startswith("lora_lite.variants.") for m in mods)
    for m in mods: monkeypatch.setattr(m, "cached", off)


def trainables(model): return [p for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("name", NAMES)
def test_events_never_leave_a_stale_cache(name, ids):
    model = attached(name)
    y0 = assert_fresh(model, ids)                                 # fills the caches
    # 1. an optimizer step (in place, under autograd)
    opt = torch.optim.SGD(trainables(model), lr=0.5)
    model(ids).logits.pow(2).mean().backward(); opt.step(); opt.zero_grad()
    y1 = assert_fresh(model, ids)
    assert not torch.equal(y1, y0)
    # 2. ll.load of another adapter's weights
    with tempfile.TemporaryDirectory() as td:
        other = attached(name); f = ll.save(other, Path(td) / "a.safetensors")
        y_other = logits(other, ids)
        ll.detach(model); ll.load(model, f)
    y2 = assert_fresh(model, ids)
    assert torch.equal(y2, y_other)
    # 3. model.to(float64) and back
    model.to(torch.float64)
    y64 = assert_fresh(model, ids); assert y64.dtype == torch.float64
    model.to(torch.float32)
    y3 = assert_fresh(model, ids)
    torch.testing.assert_close(y3, y2)                             # fp32 -> fp64 -> fp32 round-trips exactly per tensor
    # 4. a runtime knob (AntiPaSTO's coeff)
    for k in ll.variant_class(name).knobs:
        ll.set_knob(model, **{k: -0.5})
        assert not torch.equal(assert_fresh(model, ids), y3)
        ll.set_knob(model, **{k: 1.0})
        assert torch.equal(assert_fresh(model, ids), y3)
    # 5. an in-place edit under torch.no_grad()
    with torch.no_grad():
        for p in trainables(model): p.mul_(1.5)
    assert not torch.equal(assert_fresh(model, ids), y3)


@pytest.mark.parametrize("name", NAMES)
def test_generation_same_tokens_without_cache(name, ids, monkeypatch):
    model = attached(name)
    gen = lambda: model.generate(ids[:1, :4], max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad(): a = gen()
    with torch.inference_mode(): b = gen()
    disable_cache(monkeypatch)
    clear(model)
    with torch.no_grad(): c = gen()
    assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("name", NAMES)
def test_autograd_never_uses_the_cache(name, ids, monkeypatch):
    model = attached(name)
    logits(model, ids)                                            # a no-grad forward fills the caches
    model(ids).logits.pow(2).mean().backward()
    g_cached = [p.grad.clone() for p in trainables(model)]
    model.zero_grad(set_to_none=True)
    disable_cache(monkeypatch)
    model(ids).logits.pow(2).mean().backward()
    g_fresh = [p.grad for p in trainables(model)]
    assert all(torch.equal(a, b) for a, b in zip(g_cached, g_fresh))
    assert any(g.abs().sum() > 0 for g in g_fresh)


def test_cached_reuses_and_invalidates():
    "core.cached itself: reused while nothing changed, recomputed after a no_grad edit, bypassed under autograd."
    layer = ll.variant_class("lora")(ll.LoRAConfig(r=2), 4, 3)
    calls = []
    fn = lambda: calls.append(1) or layer.A.sum()
    with torch.no_grad():
        core.cached(layer, "k", fn); core.cached(layer, "k", fn)
        assert len(calls) == 1
        layer.A.add_(1.0); core.cached(layer, "k", fn)
        assert len(calls) == 2
    core.cached(layer, "k", fn); core.cached(layer, "k", fn)         # grad enabled, A requires grad: always fresh
    assert len(calls) == 4
