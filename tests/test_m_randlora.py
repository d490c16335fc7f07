"RandLoRA beyond the PEFT table (test_peft.py): PEFT's shared bases bit for bit, files for other widths, the dense inference path."
import pytest, torch
import lora_lite as ll
from lora_lite.checks import tiny_qwen3
from conftest import snapshot, assert_unchanged, train_steps, logits

peft = pytest.importorskip("peft")
QV = ["q_proj", "v_proj"]


@pytest.mark.parametrize("kw", [dict(r=8), dict(r=6, projection_prng_key=3), dict(r=8, sparse=True), dict(r=8, very_sparse=True)], ids=str)
def test_bases_equal_peft_bit_for_bit(kw):
    pm = peft.get_peft_model(tiny_qwen3(), peft.RandLoraConfig(target_modules=QV, **kw))
    A, B = pm.base_model.randlora_A["default"], pm.base_model.randlora_B["default"]
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(**kw))
    for n, l in ll.adapter_layers(m).items():
        a, b = l.slices(A, B)
        assert torch.equal(l.A, a) and torch.equal(l.B, b), n
        pl = pm.base_model.model.get_submodule(n)
        assert torch.equal(l.gamma, pl.randlora_gamma["default"]) and l.lam.shape == pl.randlora_lambda["default"].shape, n


def test_adapter_for_other_widths_is_refused_and_model_unchanged(tmp_path):
    "RandLoRA takes any layer width; what can fail is a PEFT file made for another model: one clear error, model untouched."
    peft.get_peft_model(tiny_qwen3(hidden=64), peft.RandLoraConfig(r=8, target_modules=QV)).save_pretrained(tmp_path / "p")
    m = tiny_qwen3(hidden=128); snap = snapshot(m)
    with pytest.raises(ValueError, match="shape"): ll.from_peft(m, tmp_path / "p")
    assert_unchanged(m, snap)


def test_export_refuses_bases_not_from_the_seed(tmp_path):
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8))
    layer = ll.adapter_layers(m)["model.layers.1.self_attn.v_proj"]
    with torch.no_grad(): layer.B[0, 0] += 1
    with pytest.raises(ValueError, match="model.layers.1.self_attn.v_proj"): ll.to_peft(m, tmp_path / "p")


def test_inference_dense_delta_equals_the_factors(ids):
    "At inference the hook applies a dense ΔW (smaller than U and B when rN ≈ m); it equals the factored training path."
    m = tiny_qwen3(); ll.attach(m, ll.RandLoraConfig(r=8)); train_steps(m, ids, steps=1)
    layer = ll.adapter_layers(m)["model.layers.0.self_attn.q_proj"]
    assert layer.N * layer.r * (layer.d_in + layer.d_out) > layer.d_in * layer.d_out   # the dense form is the smaller one
    torch.testing.assert_close(logits(m, ids), m(ids).logits.detach(), atol=1e-5, rtol=0)   # equal up to summation order
