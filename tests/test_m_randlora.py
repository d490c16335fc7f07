"""RandLoRA beyond the PEFT table (test_peft.py: to_peft/from_peft logits, round trips, counts, bad values): the shared
bases bit for bit, files for other widths, export of edited bases, the decode cache."""
import pytest, torch
import lora_lite as ll
from lora_lite.helpers import tiny_qwen3
from conftest import train_steps, assert_other_width_file_refused

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


def _peft_bases(pm):
    return pm.base_model.randlora_A["default"], pm.base_model.randlora_B["default"]


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=6, projection_prng_key=3), dict(r=8, sparse=True), dict(r=8, very_sparse=True)], ids=str)
def test_bases_equal_peft_bit_for_bit(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.RandLoraConfig(target_modules=QV, **kw))
    A, B = _peft_bases(pm)
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(**kw))
    assert torch.equal(m.ll_shared.A, A) and torch.equal(m.ll_shared.B, B)      # stored once, in PEFT's shapes
    for n, l in ll.adapter_layers(m).items():
        a, b = l.slices(A, B)
        assert torch.equal(l.A, a) and torch.equal(l.B, b), n
        pl = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.gamma, pl.randlora_gamma["default"]) and l.lam.shape == pl.randlora_lambda["default"].shape, n


def test_adapter_for_other_widths_is_refused_and_model_unchanged(tmp_path):
    "RandLoRA takes any layer width; what can fail is a PEFT file made for another model: one clear error, model untouched."
    assert_other_width_file_refused(peft.RandLoraConfig(r=8, target_modules=QV), tmp_path / "p")


def test_export_refuses_bases_not_from_the_seed(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.B[0, 0] += 1
    assert all(l.B.data_ptr() == m.ll_shared.B.data_ptr() for l in ll.adapter_layers(m).values())   # every layer's view of one copy
    with pytest.raises(ValueError, match="projection_prng_key=0"): ll.to_peft(m, tmp_path / "p")


def test_decode_caches_dense_delta_and_stays_fresh(ids):
    "At inference the hook applies the cached dense ΔW (smaller than U and B when rN ≈ m); it equals the factored training path."
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8)); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    assert layer.N * layer.r * (layer.d_in + layer.d_out) > layer.d_in * layer.d_out   # the dense form is the smaller one
    with torch.no_grad(): a, b = m(ids).logits, m(ids).logits
    assert "dW" in ll.cached_values(layer) and "U" not in ll.cached_values(layer)
    c = m(ids).logits.detach()                                             # under autograd: the factors, computed fresh
    assert torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=1e-5, rtol=0)                    # dense ΔW == factors up to summation order
    with torch.no_grad():
        layer.gamma.add_(0.5)
        d = m(ids).logits
    assert (d - a).abs().max() > 1e-3
    torch.testing.assert_close(d, m(ids).logits.detach(), atol=1e-5, rtol=0)
