"""Decode caches (lora_lite.cache) are never stale: for every registered variant, cached == uncached after each event that
changes an adapter or its base layer; generation gives the same tokens with caching disabled; autograd never sees a
cached value; inference tensors, deepcopy and pickle work; train() / .to() / detach drop the cache; it is bounded."""
import copy, pickle, sys, tempfile
from pathlib import Path
import pytest, torch
import lora_lite as ll
from lora_lite import cache
from lora_lite.checks import tiny_qwen3
from conftest import perturb_adapter, token_batches

NAMES = sorted(ll.VARIANTS)   # every registered variant, new ones included


def attached(name, **kw):
    "A tiny Qwen3 with variant `name` attached with its declared small config (`example`), moved off its init."
    model, V = tiny_qwen3(), ll.variant_class(name)
    ll.attach(model, ll.get_config(name, **{**V.example, **kw}), calibration_data=token_batches() if V.needs_calibration else None)
    perturb_adapter(model, std=0.2)          # off init, so a stale cache would show
    return model


def clear(model): ll.clear_cache(model)


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
    def off(layer, key, fn, reads=None): return fn()
    mods = [m for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("lora_lite") and getattr(m, "cached", None) is cache.cached]
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
    "cache.cached itself: reused while nothing changed, recomputed after a no_grad edit, bypassed under autograd."
    layer = ll.variant_class("lora")(ll.LoRAConfig(r=2), 4, 3)
    calls = []
    fn = lambda: calls.append(1) or layer.A.sum()
    with torch.no_grad():
        cache.cached(layer, "k", fn); cache.cached(layer, "k", fn)
        assert len(calls) == 1
        layer.A.add_(1.0); cache.cached(layer, "k", fn)
        assert len(calls) == 2
    cache.cached(layer, "k", fn); cache.cached(layer, "k", fn)         # grad enabled, A requires grad: always fresh
    assert len(calls) == 4


def cached_anything(model): return any(ll.cached_values(l) for l in ll.adapter_layers(model).values())


@pytest.mark.parametrize("name", NAMES)
def test_base_weight_edit_is_seen(name, ids):
    "An in-place edit of the base weights after an eval forward (load_state_dict, W.add_) never leaves a stale output."
    model = attached(name)
    y0 = assert_fresh(model, ids)                                   # fills the caches
    sd = {k: v + 0.05 if k.endswith(".weight") and "ll_adapter" not in k else v for k, v in model.state_dict().items()}
    model.load_state_dict(sd)                                       # copy_ into the same tensors: versions bump
    y1 = assert_fresh(model, ids)
    assert not torch.equal(y1, y0)
    logits(model, ids)
    with torch.no_grad():
        for n in ll.adapter_layers(model): model.get_submodule(n).weight.mul_(1.1)
    assert_fresh(model, ids)


@pytest.mark.parametrize("name", NAMES)
def test_inference_mode_to_and_forward(name, ids):
    "Inside torch.inference_mode a model.to() makes inference tensors (no version counter): the forward works, uncached."
    model = attached(name)
    logits(model, ids)
    with torch.inference_mode():
        model.to(torch.float64)
        a, b = model(ids).logits, model(ids).logits
        clear(model); c = model(ids).logits
        for l in [*ll.adapter_layers(model).values(), *([model.ll_shared] if hasattr(model, "ll_shared") else [])]:
            for p in l.parameters(): p.mul_(1.5)                   # an in-place edit (layers' or shared tensors) inside inference
                                                                   # mode bumps no version counter: it must be seen all the same
        d = model(ids).logits; clear(model)
        assert torch.equal(d, model(ids).logits)
    assert a.dtype == torch.float64 and torch.equal(a, b) and torch.equal(a, c) and not torch.equal(a, d)
    ref = attached(name).to(torch.float64)                         # the same adapter converted outside inference mode
    assert torch.equal(a, logits(ref, ids))


@pytest.mark.parametrize("name", NAMES)
def test_copy_pickle_and_state_dict_never_see_the_cache(name, ids):
    model = attached(name)
    keys = list(model.state_dict())
    y = logits(model, ids)                                          # fills the caches
    assert list(model.state_dict()) == keys
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not cached_anything(twin)                            # a copy starts with an empty cache
        assert torch.equal(logits(twin, ids), y)
        with torch.no_grad():                                       # and runs its own adapter, not the original's
            for p in twin.parameters():
                if p.requires_grad: p.mul_(0.5)
        assert_fresh(twin, ids); assert torch.equal(logits(model, ids), y)


@pytest.mark.parametrize("name", NAMES)
def test_train_to_and_detach_drop_the_cache(name, ids):
    model = attached(name)
    logits(model, ids)
    if not cached_anything(model): pytest.skip(f"{name} caches nothing on this model")
    model.train(); assert not cached_anything(model)
    logits(model, ids)                                   # train mode without grad: some methods cache here, LoRA's only in eval
    model.eval(); assert not cached_anything(model)
    logits(model, ids); assert cached_anything(model)
    model.to(torch.float64); assert not cached_anything(model)
    logits(model, ids)
    layers = list(ll.adapter_layers(model).values())
    ll.detach(model)
    assert not any(ll.cached_values(l) for l in layers)


@pytest.mark.parametrize("name", NAMES)
def test_cache_is_bounded(name, ids, monkeypatch):
    "No more than cache.MAX_BYTES is ever held; what doesn't fit is recomputed, with the same outputs."
    model = attached(name)
    y = logits(model, ids)
    held = sum(cache._nbytes(list(ll.cached_values(l).values())) for l in ll.adapter_layers(model).values())
    ll.clear_cache(model)
    monkeypatch.setattr(cache, "MAX_BYTES", cache.cache_bytes() + held // 2)
    assert torch.equal(logits(model, ids), y) and torch.equal(logits(model, ids), y)
    assert cache.cache_bytes() <= cache.MAX_BYTES
    before = cache.cache_bytes()
    assert before - ll.clear_cache(model) == cache.cache_bytes()


@pytest.mark.parametrize("quant", ["nf4", "int8"])
@pytest.mark.parametrize("name", ["dora", "hira"])   # the methods whose cached work reads the base weight
def test_quantized_base_edit_is_seen(name, quant, ids):
    "On a bitsandbytes base the stamp covers the quantization state too: scaling it in place after an eval forward is seen."
    pytest.importorskip("bitsandbytes")
    import warnings
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    q = dict(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32) if quant == "nf4" else dict(load_in_8bit=True)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_qwen3(hidden=128).save_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d, quantization_config=BitsAndBytesConfig(**q), device_map="cpu")
    ll.attach(model, ll.get_config(name, r=8)); perturb_adapter(model, std=0.2)
    y0 = assert_fresh(model, ids)
    with torch.no_grad():
        for n in ll.adapter_layers(model):
            m = model.get_submodule(n)
            scales = m.weight.quant_state.absmax if quant == "nf4" else next(t for t in (getattr(m.weight, "SCB", None), getattr(m.state, "SCB", None)) if t is not None)
            scales.mul_(1.5)                                        # the dequantized W changes; its packed data doesn't
    assert not torch.equal(assert_fresh(model, ids), y0)


def test_store_entries_go_with_the_layer():
    "The cache keys layers by id: a collected layer's entries are dropped (its finalizer), clear_cache empties them in place."
    import gc
    from torch import nn
    from lora_lite import cache
    class Sq(nn.Module):
        def __init__(self): super().__init__(); self.w = nn.Parameter(torch.ones(4))
        def forward(self, x): return x * cache.cached(self, "w2", lambda: self.w * self.w)
    layers = [Sq() for _ in range(3)]
    with torch.no_grad():
        for l in layers: l(torch.ones(4))
    keys = [id(l) for l in layers]
    assert all(k in cache._STORE for k in keys)
    assert cache.clear_cache(layers[0]) == 16 and cache._STORE[keys[0]] == {}   # emptied, still registered
    with torch.no_grad(): layers[0](torch.ones(4))
    assert list(cache.cached_values(layers[0])) == ["w2"]
    del layers, l; gc.collect()
    assert not any(k in cache._STORE for k in keys)
