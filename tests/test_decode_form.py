"""Each method's inference form (eval mode, no gradient wanted: `cache.decoding`; scales folded, factors cached row-major,
few tensor ops a token) equals its training form: fp32, and a bf16 base with an fp32 adapter. Two checks, one table each:
per adapted layer (its hook on random inputs) and through the whole model's logits (one token and a prompt; biased
bases where the form must carry a bias), with the configs between which a method switches forms."""
import pytest, torch
import lora_lite as ll
from conftest import token_batches, perturb_adapter
from lora_lite.helpers import tiny_qwen3

LAYER = [("adalora", False), ("delora", False), ("dora", False), ("dora", True), ("eva", False), ("lora_fa", False), ("mica", False),
         ("peanut", False), ("pissa", False), ("tinylora", False), ("unilora", False), ("vblora", False)]   # (variant, biased base)
MODEL = [("adamss", {}, "decode"), ("adamss", dict(bias=True), "decode"),       # (variant, config beyond `example`, cache key)
         ("bdlora", {}, "decode"), ("bdlora", dict(target_names=("q_proj", "k_proj", "v_proj", "o_proj", "down_proj"), match_strict=False), "decode"),
         *[("deft", kw, "decode") for kw in ({}, dict(para=True), dict(decomposition_method="qr"), dict(bias=True), dict(bias=True, para=True))],
         ("gralora", {}, "PQ"), ("gralora", dict(hybrid_r=2), "PQ"), ("loha", {}, "M"),
         ("lokr", {}, "decode"), ("lokr", dict(r=2, decompose_both=True), "decode"), ("c3a", dict(init_weights="gaussian"), "decode"),
         *[("miss", kw, None) for kw in ({}, dict(init_weights=True), dict(init_weights=True, r=12), dict(init_weights="mini", mini_r=4))],
         ("pvera", {}, "PtQt"), ("waveft", {}, "csr"), ("waveft", dict(use_idwt=False), "csr")]
DTYPES = [torch.float32, torch.bfloat16]


def attached(name, dtype, bias=False, **kw):
    "The test Qwen3 in `dtype` (random biases if `bias`) with an fp32 adapter of `name` (its `example` + `kw`)."
    m = tiny_qwen3(attention_bias=bias).to(dtype)
    V = ll.variant_class(name)
    ll.attach(m, ll.get_config(name, **{**V.example, **kw, "dtype": torch.float32}),
              calibration_data=token_batches() if V.needs_calibration else None)
    return m


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,bias", LAYER, ids=[f"{n}{'-bias' if b else ''}" for n, b in LAYER])
def test_layer_decode_form_equals_training_form(name, bias, dtype):
    "Per layer, to one bf16 rounding on a bf16 base."
    model = attached(name, dtype, bias)
    perturb_adapter(model, std=0.2)
    g = torch.Generator().manual_seed(0)
    for n, l in ll.adapter_layers(model).items():
        x = torch.randn(2, 5, l.d_in, generator=g).to(dtype)
        with torch.no_grad(): y = model.get_submodule(n).forward(x)      # the base layer alone (hooks skipped)
        with torch.no_grad(): assert ll.decoding(l); dec = l(x, y)         # eval, no gradient wanted: the decode form
        train = l(x, y).detach()                                           # autograd on: the training form
        assert ll.decoding(l) is False and dec.dtype == dtype
        torch.testing.assert_close(dec, train, rtol=1e-5 if dtype == torch.float32 else 2**-8, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,kw,key", MODEL, ids=[f"{n}-{kw}" for n, kw, _ in MODEL])
def test_model_decode_form_equals_training_form(name, kw, key, dtype):
    "Through the model's logits, one token and a prompt; the decode form's cached value is where it should be."
    kw = dict(kw); bias = kw.pop("bias", False)
    m = tiny_qwen3(attention_bias=bias).to(dtype)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None: mod.bias.normal_(0, 0.5)   # a bias the form must carry
    V = ll.variant_class(name)
    ll.attach(m, ll.get_config(name, **{**V.example, **kw, "dtype": torch.float32}),
              calibration_data=[torch.randint(0, 128, (2, 16))] if V.needs_calibration else None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad: p.add_(0.2 * torch.randn(p.shape, generator=g).to(p.dtype))
    m.eval()
    for ids in (torch.randint(0, 128, (1, 1)), torch.randint(0, 128, (2, 5))):
        with torch.no_grad(): dec = m(ids).logits.float()                   # the decode form
        ref = m(ids).logits.float()                                         # gradients wanted: the training form
        tol = 1e-5 if dtype == torch.float32 else 2 ** -6
        assert (dec - ref).abs().max() <= tol * ref.abs().max(), (dec - ref).abs().max()
    if key: assert all(key in ll.cached_values(l) for l in ll.adapter_layers(m).values())
